"""The vocabulary every layer shares: tasks, formats, precisions, and the dataclasses the registry,
the build and the runtime are made of. Plain data; ``torch`` only for type hints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Task(StrEnum):
    """What a model does; ``zooserve.runtime.tasks`` maps each to its pipeline."""

    CLASSIFY = "classify"
    CLASSIFY_TEXT = "classify-text"
    CAPTION = "caption"

    @property
    def takes_text(self) -> bool:
        return self is Task.CLASSIFY_TEXT


class Format(StrEnum):
    """Artifact formats; ``zooserve.export.formats`` maps each to its compiler and loader."""

    AOTI = "aoti"
    TORCHSCRIPT = "torchscript"
    TENSORRT = "tensorrt"


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"
    FP16 = "fp16"  # TensorRT only


class Evaluation(StrEnum):
    """How an image classifier looks at an image (the VGG paper's test-time modes)."""

    CENTER = "center"
    DENSE = "dense"  # FC-to-conv model over several scales and flips
    TENCROP = "tencrop"


class Decode(StrEnum):
    """How JPEGs are decoded: at the scale the model needs (DCT-domain), or at full size."""

    FAST = "fast"
    EXACT = "exact"  # torchvision's full-size decode: the pixels torchvision's transforms see


class Weights(StrEnum):
    """Where a build's weights came from; every response says it."""

    USER = "user"
    TRAINED_DEMO = "trained-demo"
    RANDOM = "random"


@dataclass(frozen=True)
class InputSpec:
    """How a decoded image becomes the network's input (torchvision's resize -> crop -> normalize)."""

    size: int  # square side the network sees
    resize: int | None = None  # shorter side before the centre crop; None: stretch to size x size
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # digit recognisers' framing instead of resize/crop: find the ink (either polarity), crop to it
    # and scale its longer side to this many pixels of the frame, centred by its centre of mass
    # (zooserve.models.digits); images with no readable digit are refused per request
    ink_box: int | None = None

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
    weights: Weights
    labels: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)  # family facts recorded in the manifest
    extra_files: dict[str, Path] = field(default_factory=dict)  # archive name -> local file


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: everything build, archive, handler, tests and benchmarks need."""

    name: str
    task: Task
    family: str
    description: str
    # prepare(spec, weights=..., word_map=..., trust_pickle=...) -> Prepared
    prepare: Callable[..., Prepared]
    input: InputSpec | None = None
    num_classes: int = 1000
    label_source: str = "imagenet"  # imagenet | digits | generic | checkpoint
    formats: tuple[Format, ...] = tuple(Format)
    dense: bool = False  # FC-to-conv conversion applies
    default_weights: Weights = Weights.RANDOM  # what a build without --weights gives
    batch: BatchConfig = BatchConfig()
    tiny: bool = False  # small variant for tests
    # per-family options (torchvision constructor name, keys to ignore in user weights...)
    options: dict[str, Any] = field(default_factory=dict)
