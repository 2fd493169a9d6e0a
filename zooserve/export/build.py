"""``zooserve build``: registry entry -> prepared model -> exported artifacts -> archive.

The build directory (``.zooserve/builds/NAME``) holds exactly what goes into the archive, so the
in-process runtime (tests, benchmarks) and the served model load the same files.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import zooserve
from zooserve.errors import UnsupportedFormat
from zooserve.export.archive import CONFIG_FILE, model_config, pack, write_model_config
from zooserve.models import registry
from zooserve.models.specs import ExportTarget, ModelSpec, Prepared
from zooserve.runtime.bundle import ARTIFACT_SUFFIX, META_FILE

DEFAULT_WORK = Path(".zooserve/builds")


@dataclass
class BuildOptions:
    format: str = "aoti"
    weights: Path | None = None
    dense: bool = False
    precision: str = "fp32"
    word_map: Path | None = None
    trust_pickle: bool = False
    evaluation: str | None = None  # center | dense | tencrop (default: dense when --dense)
    archive_name: str | None = None  # served name when one model is served in several variants
    serving: dict[str, Any] = field(default_factory=dict)  # extra model-config.yaml `zooserve:` keys


@dataclass
class BuildResult:
    name: str
    archive: Path | None
    bundle_dir: Path
    meta: dict[str, Any]
    seconds: float


def check_options(spec: ModelSpec, opts: BuildOptions) -> None:
    if opts.format not in spec.formats:
        raise UnsupportedFormat(
            f"{spec.name} cannot be exported as {opts.format!r}; choose from {', '.join(spec.formats)}"
        )
    if opts.format == "tensorrt" and not torch.cuda.is_available():
        raise UnsupportedFormat("--format tensorrt needs a CUDA GPU and none is visible on this machine")
    if opts.dense and not spec.dense:
        raise UnsupportedFormat(f"{spec.name} has no FC-to-conv (dense) form")
    if opts.evaluation == "dense" and not opts.dense:
        raise UnsupportedFormat("evaluation 'dense' needs the FC-to-conv model: add --dense")


def export_target(target: ExportTarget, fmt: str, path: Path, precision: str = "fp32") -> Path:
    if fmt == "aoti":
        from zooserve.export.aoti import compile_aoti

        return compile_aoti(target, path, grad_off=precision == "fp32")
    if fmt == "torchscript":
        from zooserve.export.torchscript import compile_torchscript

        return compile_torchscript(target, path)
    if fmt == "tensorrt":
        from zooserve.export.tensorrt import compile_tensorrt

        return compile_tensorrt(target, path, precision)
    raise UnsupportedFormat(f"unknown format {fmt!r}")


def serving_options(spec: ModelSpec, opts: BuildOptions, prepared: Prepared) -> dict[str, Any]:
    base: dict[str, Any] = {"topk": 5}
    if spec.task == "classify":
        base |= {"evaluation": opts.evaluation or ("dense" if opts.dense else "center")}
        if opts.dense:
            base |= {"scales": dense_scales(spec, prepared.metadata["dense_min_side"]), "flip": True}
    return base | opts.serving


def dense_scales(spec: ModelSpec, min_side: int) -> list[int]:
    """Shorter-side scales for dense evaluation: 256/384/512 for ImageNet models, as the VGG paper."""
    assert spec.input is not None
    q = max(spec.input.resize or spec.input.size, min_side)
    return [q, round(q * 1.5), q * 2]


def write_bundle(spec: ModelSpec, prepared: Prepared, opts: BuildOptions, bundle_dir: Path) -> dict[str, Any]:
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    artifacts = {}
    for key, target in prepared.targets.items():
        fname = f"{key}{ARTIFACT_SUFFIX[opts.format]}"
        export_target(target, opts.format, bundle_dir / fname, opts.precision)
        artifacts[key] = fname
    for arc_name, src in prepared.extra_files.items():
        shutil.copyfile(src, bundle_dir / arc_name)
    meta = {
        "name": opts.archive_name or spec.name,
        "model": spec.name,
        "task": spec.task,
        "family": spec.family,
        "format": opts.format,
        "precision": opts.precision,
        "weights": prepared.weights,
        "labels": prepared.labels,
        "input": spec.input.to_json() if spec.input else None,
        "artifacts": artifacts,
        "metadata": prepared.metadata,
        "serving": serving_options(spec, opts, prepared),
        "built": {
            "zooserve": zooserve.__version__,
            "torch": torch.__version__,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }
    (bundle_dir / META_FILE).write_text(json.dumps(meta, indent=1), "utf-8")
    write_model_config(bundle_dir / CONFIG_FILE, model_config(spec.batch, meta["serving"]))
    return meta


def build(
    name: str, opts: BuildOptions, out: Path | None = Path("model_store"), work: Path = DEFAULT_WORK
) -> BuildResult:
    """Build one model. ``out=None`` skips the archive (in-process use)."""
    t0 = time.perf_counter()
    spec = registry.get(name)
    check_options(spec, opts)
    prepared = spec.prepare(
        spec, weights=opts.weights, dense=opts.dense, word_map=opts.word_map,
        trust_pickle=opts.trust_pickle, precision=opts.precision,
    )  # fmt: skip
    if opts.precision != "fp32":
        from zooserve.export.precision import apply_precision

        prepared = apply_precision(spec, prepared, opts)  # raises if the accuracy gate fails
    served = opts.archive_name or name
    bundle_dir = work / served
    meta = write_bundle(spec, prepared, opts, bundle_dir)
    archive = pack(served, bundle_dir, meta["artifacts"][next(iter(meta["artifacts"]))], out) if out else None
    return BuildResult(served, archive, bundle_dir, meta, time.perf_counter() - t0)
