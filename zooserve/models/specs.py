"""The data types the registry is made of. Plain dataclasses: no torch import at module level."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TASKS = ("classify", "classify-text", "caption")
FORMATS = ("aoti", "torchscript", "tensorrt")
EVALUATIONS = ("center", "dense", "tencrop")


@dataclass(frozen=True)
class InputSpec:
    """How a decoded image becomes the network's input (torchvision's resize -> crop -> normalize)."""

    size: int  # square side the network sees
    resize: int | None = None  # shorter side before the centre crop; None: stretch to size x size
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # LeNet's digits are bright ink on dark paper; photos of dark ink on white get inverted.
    invert_light_background: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InputSpec:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


@dataclass(frozen=True)
class BatchConfig:
    """TorchServe batching and worker settings written into model-config.yaml."""

    batch_size: int = 8
    max_batch_delay_ms: int = 5
    workers: int = 1
    threads: int = 2  # torch intra-op threads per worker; workers x threads <= cores
    response_timeout_s: int = 120


@dataclass(frozen=True)
class ExportTarget:
    """One module to export, with example inputs and which dimensions are dynamic."""

    module: torch.nn.Module
    example_inputs: tuple[Any, ...]
    # torch.export dynamic_shapes: per input a {dim: (name, min, max)} map
    dynamic: tuple[dict[int, tuple[str, int, int]], ...]


@dataclass
class Prepared:
    """A model ready to export: its modules, where its weights came from, files for the archive."""

    targets: dict[str, ExportTarget]
    weights: str  # "user" | "trained-demo" | "random"
    labels: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)  # goes into zooserve.json
    extra_files: dict[str, Path] = field(default_factory=dict)  # archive name -> local file


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: everything build, archive, handler, tests and benchmarks need."""

    name: str
    task: str
    family: str
    description: str
    # prepare(spec, weights_path, options) -> Prepared; options are build flags (dense, word_map...)
    prepare: Callable[..., Prepared]
    input: InputSpec | None = None
    num_classes: int = 1000
    label_source: str = "imagenet"  # imagenet | digits | generic | checkpoint
    formats: tuple[str, ...] = FORMATS
    dense: bool = False  # FC-to-conv conversion applies
    default_weights: str = "random"  # what a build without --weights gives
    batch: BatchConfig = BatchConfig()
    tiny: bool = False  # small variant for tests
    # free-form per-family options (torchvision constructor name, tiny widths, decoder sizes...)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.task in TASKS, self.task
        assert set(self.formats) <= set(FORMATS), self.formats
