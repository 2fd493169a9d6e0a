"""TorchServe archives: a build directory -> ``model_store/NAME.mar`` via torch-model-archiver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from zooserve.errors import ConfigError
from zooserve.models.specs import BatchConfig

HANDLER = Path(__file__).resolve().parents[2] / "handlers" / "zooserve_handler.py"
CONFIG_FILE = "model-config.yaml"


def model_config(batch: BatchConfig, serving: dict[str, Any]) -> dict[str, Any]:
    """TorchServe's keys (workers and batching set explicitly, never TorchServe's defaults) plus
    our own section read by the handler."""
    return {
        "minWorkers": batch.workers,
        "maxWorkers": batch.workers,
        "batchSize": batch.batch_size,
        "maxBatchDelay": batch.max_batch_delay_ms,
        "responseTimeout": batch.response_timeout_s,
        "zooserve": {"threads": batch.threads, **serving},
    }


def write_model_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return path


def handler_path() -> Path:
    if not HANDLER.is_file():
        raise ConfigError(f"handler not found at {HANDLER} (run from a source checkout: pip install -e .)")
    return HANDLER


def pack(name: str, bundle_dir: Path, main_file: str, out: Path, version: str = "1.0") -> Path:
    """Pack every file of ``bundle_dir`` into ``out/NAME.mar`` (nothing is downloaded at load time)."""
    out.mkdir(parents=True, exist_ok=True)
    extras = sorted(
        str(p) for p in bundle_dir.iterdir() if p.is_file() and p.name not in (main_file, CONFIG_FILE)
    )
    cmd = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", name, "--version", version,
        "--serialized-file", str(bundle_dir / main_file),
        "--handler", str(handler_path()),
        "--config-file", str(bundle_dir / CONFIG_FILE),
        "--export-path", str(out), "--force",
    ]  # fmt: skip
    if extras:
        cmd += ["--extra-files", ",".join(extras)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"torch-model-archiver failed: {result.stderr.strip().splitlines()[-1:]}")
    return out / f"{name}.mar"
