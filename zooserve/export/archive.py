"""TorchServe archives: a build directory -> ``model_store/NAME.mar`` via torch-model-archiver.

The archive's handler is a one-line shim into the installed package (``zooserve.serving.handler``):
the serving logic is not copied into every archive, and the shim is written here rather than read
from a checkout, so an installed wheel builds archives on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from zooserve.errors import ConfigError
from zooserve.manifest import CONFIG_FILE, MANIFEST_FILE, ServingOptions
from zooserve.specs import BatchConfig

HANDLER_FILE = "zooserve_handler.py"
HANDLER_ENTRY = (
    '"""TorchServe entry point of a zooserve archive; the handler ships in the zooserve package."""\n\n'
    "from zooserve.serving.handler import handle  # noqa: F401\n"
)


def model_config(batch: BatchConfig, serving: ServingOptions) -> dict[str, Any]:
    """TorchServe's keys (workers and batching set explicitly, never TorchServe's defaults) plus
    our own section read by the handler."""
    return {
        "minWorkers": batch.workers,
        "maxWorkers": batch.workers,
        "batchSize": batch.batch_size,
        "maxBatchDelay": batch.max_batch_delay_ms,
        "responseTimeout": batch.response_timeout_s,
        "zooserve": serving.to_json(),
    }


def write_model_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return path


def pack(name: str, bundle_dir: Path, main_file: str, out: Path, version: str = "1.0") -> Path:
    """Pack every file of ``bundle_dir`` into ``out/NAME.mar`` (nothing is downloaded at load time).

    The archive is written under a temporary name and moved into place, so a failed or interrupted
    pack never leaves a truncated archive where the previous good one was."""
    out.mkdir(parents=True, exist_ok=True)
    extras = sorted(
        str(p) for p in bundle_dir.iterdir() if p.is_file() and p.name not in (main_file, CONFIG_FILE)
    )
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}-") as tmp:
        handler = Path(tmp) / HANDLER_FILE
        handler.write_text(HANDLER_ENTRY, "utf-8")
        cmd = [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", name, "--version", version,
            "--serialized-file", str(bundle_dir / main_file),
            "--handler", str(handler),
            "--config-file", str(bundle_dir / CONFIG_FILE),
            "--export-path", tmp, "--force",
        ]  # fmt: skip
        if extras:
            cmd += ["--extra-files", ",".join(extras)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise ConfigError(f"torch-model-archiver failed: {result.stderr.strip().splitlines()[-1:]}")
        return _move_into_place(Path(tmp) / f"{name}.mar", out / f"{name}.mar")


def rewrite_config(src: Path, dst: Path, update: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    """A copy of archive ``src`` at ``dst`` whose model-config.yaml is ``update(config)``: how
    benchmarks and ``zooserve tune`` serve one build with other batch/worker settings."""
    tmp = Path(tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}-")[1])
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info)
                if info.filename == CONFIG_FILE:
                    data = yaml.safe_dump(update(yaml.safe_load(data)), sort_keys=False).encode()
                zout.writestr(info, data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _move_into_place(tmp, dst)


def read_member(archive: Path, member: str = MANIFEST_FILE) -> bytes:
    with zipfile.ZipFile(archive) as z:
        return z.read(member)


def _move_into_place(tmp: Path, dst: Path) -> Path:
    os.replace(tmp, dst)
    return dst
