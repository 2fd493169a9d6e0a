"""The build -> serve contract: ``zooserve.json`` in every build directory and archive.

One typed, versioned ``Manifest`` is written by ``zooserve.export.build`` and read by
``zooserve.runtime.bundle``; an archive written by another manifest version is refused with a
clear error instead of failing somewhere in a handler. ``ServingOptions`` are the per-model
serving settings: recorded by the build, overridable in ``model-config.yaml``'s ``zooserve:``
section (unknown keys and wrong types are refused).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from zooserve.errors import ConfigError
from zooserve.specs import Decode, Evaluation, Format, InputSpec, Precision, Task, Weights

MANIFEST_FILE = "zooserve.json"
CONFIG_FILE = "model-config.yaml"  # TorchServe's per-model config, with our `zooserve:` section
MANIFEST_VERSION = 3  # 3: InputSpec.ink_box replaces invert_light_background (digit framing)


@dataclass(frozen=True)
class ServingOptions:
    threads: int = 1  # torch intra-op threads per worker
    deadline_ms: int = 10_000  # a request's default deadline (queue time included) behind the gateway
    topk: int = 5
    evaluation: Evaluation = Evaluation.CENTER
    scales: tuple[int, ...] = ()  # dense evaluation: shorter-side scales
    flip: bool = True  # dense evaluation: add horizontal flips
    max_pixels: int = 40_000_000  # what one image may declare: 8K photos pass, a 30000x30000 bomb does not
    # what may be decoded at full size (PNG, GIF, WebP, BMP, TIFF): their decode costs ~20-40 ms per
    # megapixel here, so 8 MP keeps any of them within ~1.5x the latency of a 12 MP camera JPEG
    max_decoded_pixels: int = 8_000_000
    decode: Decode = Decode.FAST  # JPEGs at the DCT scale that covers the model's input size
    # requests of one batch decoded at once (threads): a JPEG decodes on one core, so one at a time
    # leaves the model's other cores idle through the decode stage (a batch of camera photos)
    decode_workers: int = 2
    max_batch_pixels: int = 400_000_000  # decoded pixels one batch may hold (~1.2 GB as uint8 RGB)
    max_text_bytes: int = 65536
    beam_size: int = 3
    max_length: int = 50  # caption words before <end>
    length_norm: float = 0.0

    def merged(self, overrides: Mapping[str, Any]) -> ServingOptions:
        """These options with ``overrides`` applied, each checked against its field's type."""
        known = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(f"unknown serving option(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: _coerce(k, v, known[k]) for k, v in overrides.items()})

    def to_json(self) -> dict[str, Any]:
        """Plain JSON/YAML types (YAML's safe dumper knows no enums or tuples)."""
        return {k: _plain(v) for k, v in asdict(self).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _coerce(key: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, StrEnum):
            return type(default)(value)
        if isinstance(default, tuple):
            return tuple(int(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError
        number = type(default)(value)
        if isinstance(number, int) and number < 1:  # counts, sizes and times are all positive
            raise ValueError
        return number
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"serving option {key!r}: {value!r} is not a valid {type(default).__name__}"
        ) from None


@dataclass(frozen=True)
class BuildInfo:
    zooserve: str
    torch: str
    at: str


@dataclass(frozen=True)
class Manifest:
    name: str  # served name (the archive's)
    model: str  # registry name
    task: Task
    family: str
    format: Format
    precision: Precision
    weights: Weights
    labels: tuple[str, ...]
    input: InputSpec | None
    artifacts: dict[str, str]  # role ("model", "dense", "encoder", ...) -> file in the archive
    serving: ServingOptions
    built: BuildInfo
    metadata: dict[str, Any] = field(default_factory=dict)  # family facts (tokens, dense sizes...)
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> dict[str, Any]:
        out = {k: _plain(v) for k, v in asdict(self).items()}
        out |= {
            "labels": list(self.labels),
            "input": self.input.to_json() if self.input else None,
            "serving": self.serving.to_json(),
        }
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "manifest") -> Manifest:
        version = data.get("manifest_version", 1)
        if version != MANIFEST_VERSION:
            built = data.get("built", {}).get("zooserve", "an unknown version")
            raise ConfigError(
                f"{source} was built by zooserve {built} (manifest version {version}); this zooserve reads "
                f"version {MANIFEST_VERSION}: rebuild it with `zooserve build {data.get('model', 'MODEL')}`"
            )
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names - set(data) if n != "metadata")
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise ConfigError(f"{source} is not a valid manifest: missing {missing}, unknown {unknown}")
        try:
            return cls(
                **{
                    **data,
                    "task": Task(data["task"]),
                    "format": Format(data["format"]),
                    "precision": Precision(data["precision"]),
                    "weights": Weights(data["weights"]),
                    "labels": tuple(data["labels"]),
                    "input": InputSpec.from_json(data["input"]) if data["input"] else None,
                    "serving": ServingOptions().merged(data["serving"]),
                    "built": BuildInfo(**data["built"]),
                }
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source} is not a valid manifest: {e}") from None

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        path.write_text(json.dumps(self.to_json(), indent=1), "utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{directory} holds no {MANIFEST_FILE}: not a zooserve build") from None
        except ValueError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_json(data, source=str(path))
