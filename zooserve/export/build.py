"""``zooserve build``: registry entry -> prepared model -> exported artifacts -> archive.

The build directory (``.zooserve/builds/NAME``) holds exactly what goes into the archive, so the
in-process runtime (tests, benchmarks) and the served model load the same files. It is written
under a temporary name and moved into place when complete.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import zooserve
from zooserve.errors import ConfigError, UnsupportedFormat
from zooserve.export.archive import model_config, pack, write_model_config
from zooserve.export.dense import dense_scales, dense_target
from zooserve.export.formats import FORMATS, artifact_name
from zooserve.export.precision import apply_precision
from zooserve.manifest import CONFIG_FILE, BuildInfo, Manifest, ServingOptions
from zooserve.models import registry
from zooserve.specs import Evaluation, Format, ModelSpec, Precision, Prepared, Task

DEFAULT_WORK = Path(".zooserve/builds")
# served names become file and URL path components: letters, digits, '_', '-', '.', no leading dot
SERVED_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


@dataclass
class BuildOptions:
    format: Format = Format.AOTI
    weights: Path | None = None
    dense: bool = False
    precision: Precision = Precision.FP32
    word_map: Path | None = None
    trust_pickle: bool = False
    evaluation: Evaluation | None = None  # default: dense with --dense, else center
    calibration: Path | None = None  # int8: folder of calibration images
    archive_name: str | None = None  # served name when one model is served in several variants
    serving: dict[str, Any] = field(default_factory=dict)  # ServingOptions overrides


@dataclass
class BuildResult:
    name: str
    archive: Path | None
    bundle_dir: Path
    manifest: Manifest
    seconds: float


def check_options(spec: ModelSpec, opts: BuildOptions) -> None:
    if opts.format not in spec.formats:
        choices = ", ".join(spec.formats)
        raise UnsupportedFormat(f"{spec.name} cannot be exported as {opts.format!r}; choose from {choices}")
    if FORMATS[opts.format].needs_cuda and not torch.cuda.is_available():
        raise UnsupportedFormat(
            f"--format {opts.format} needs a CUDA GPU and none is visible on this machine"
        )
    if opts.dense and not spec.dense:
        raise UnsupportedFormat(f"{spec.name} has no FC-to-conv (dense) form")
    if opts.evaluation == Evaluation.DENSE and not opts.dense:
        raise UnsupportedFormat("evaluation 'dense' needs the FC-to-conv model: add --dense")
    if opts.archive_name is not None and not _valid_name(opts.archive_name):
        raise ConfigError(f"--name {opts.archive_name!r}: use letters, digits, '_', '-' and '.' (max 64)")


def _valid_name(name: str) -> bool:
    return re.fullmatch(SERVED_NAME, name) is not None


def serving_options(spec: ModelSpec, opts: BuildOptions, prepared: Prepared) -> ServingOptions:
    base = ServingOptions(threads=spec.batch.threads)
    if spec.task == Task.CLASSIFY:
        evaluation = opts.evaluation or (Evaluation.DENSE if opts.dense else Evaluation.CENTER)
        base = replace(base, evaluation=evaluation)
        if opts.dense:
            base = replace(base, scales=dense_scales(spec, prepared.metadata["dense_min_side"]))
    if spec.task == Task.CAPTION:
        meta = prepared.metadata
        base = replace(base, beam_size=meta["beam_size"], max_length=meta["max_length"])
    return base.merged(opts.serving)


def make_manifest(
    spec: ModelSpec, prepared: Prepared, opts: BuildOptions, artifacts: dict[str, str]
) -> Manifest:
    return Manifest(
        name=opts.archive_name or spec.name,
        model=spec.name,
        task=spec.task,
        family=spec.family,
        format=opts.format,
        precision=opts.precision,
        weights=prepared.weights,
        labels=tuple(prepared.labels),
        input=spec.input,
        artifacts=artifacts,
        serving=serving_options(spec, opts, prepared),
        metadata=prepared.metadata,
        built=BuildInfo(zooserve.__version__, torch.__version__, time.strftime("%Y-%m-%dT%H:%M:%S")),
    )


def write_bundle(spec: ModelSpec, prepared: Prepared, opts: BuildOptions, bundle_dir: Path) -> Manifest:
    """Export every target and write the manifest and model-config.yaml into ``bundle_dir``,
    replacing it only once everything is written."""
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=bundle_dir.parent, prefix=f".{bundle_dir.name}-"))
    try:
        artifacts = {}
        for role, target in prepared.targets.items():
            artifacts[role] = artifact_name(role, opts.format)
            FORMATS[opts.format].compile(target, staging / artifacts[role], opts.precision)
        for arc_name, src in prepared.extra_files.items():
            shutil.copyfile(src, staging / arc_name)
        manifest = make_manifest(spec, prepared, opts, artifacts)
        manifest.write(staging)
        write_model_config(staging / CONFIG_FILE, model_config(spec.batch, manifest.serving))
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        os.replace(staging, bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def prepare(spec: ModelSpec, opts: BuildOptions) -> Prepared:
    """The registry's prepare, then the FC-to-conv target and the precision pass the options ask for."""
    prepared = spec.prepare(
        spec, weights=opts.weights, word_map=opts.word_map, trust_pickle=opts.trust_pickle
    )
    if opts.dense:
        target, sizes = dense_target(prepared.targets["model"], spec)
        prepared = replace(
            prepared, targets={**prepared.targets, "dense": target}, metadata={**prepared.metadata, **sizes}
        )
    if opts.precision != Precision.FP32:
        prepared = apply_precision(spec, prepared, opts.precision, opts.format, opts.calibration)
    return prepared


def build(
    name: str, opts: BuildOptions, out: Path | None = Path("model_store"), work: Path = DEFAULT_WORK
) -> BuildResult:
    """Build one model. ``out=None`` skips the archive (in-process use)."""
    t0 = time.perf_counter()
    spec = registry.get(name)
    check_options(spec, opts)
    prepared = prepare(spec, opts)  # raises if a precision's accuracy gate fails
    served = opts.archive_name or name
    bundle_dir = work / served
    manifest = write_bundle(spec, prepared, opts, bundle_dir)
    archive = pack(served, bundle_dir, next(iter(manifest.artifacts.values())), out) if out else None
    return BuildResult(served, archive, bundle_dir, manifest, time.perf_counter() - t0)
