"""Captioner checkpoints: our format (tensors + plain data, read with ``weights_only=True``) and the
tutorial's format (a ``torch.save``d dict of whole pickled modules + a word-map JSON).

Reading the tutorial's format runs pickle, so it needs an explicit opt-in and even then goes through
an unpickler that resolves only an allow-list of globals: the tutorial's three classes (mapped onto
ours), torch/torchvision ``nn.Module`` classes and what torch needs to rebuild tensors. The modules
are then converted to state_dicts and never used as loaded.
"""

from __future__ import annotations

import functools
import importlib
import json
import pickle
import tempfile
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zooserve.errors import WeightsError, client_text
from zooserve.models.sat_modules import (
    END,
    START,
    Attention,
    DecoderWithAttention,
    Encoder,
    SatConfig,
    build_captioner,
    resnet_layout,
)

FORMAT = "zooserve-sat"
VERSION = 1


@dataclass
class SatCheckpoint:
    config: SatConfig
    encoder: dict[str, torch.Tensor]
    decoder: dict[str, torch.Tensor]
    vocab: list[str]  # index -> word
    source_format: str = field(default="zooserve")

    def build(self) -> tuple[Encoder, DecoderWithAttention]:
        """Eval-mode modules with these weights (strict: every key and shape must match)."""
        encoder, decoder = build_captioner(self.config)
        for module, state, what in ((encoder, self.encoder, "encoder"), (decoder, self.decoder, "decoder")):
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as e:
                first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
                raise WeightsError(
                    f"captioner {what} weights do not match its architecture: {first[:300]}"
                ) from None
        return encoder.eval(), decoder.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config.to_json(),
            "encoder": self.encoder,
            "decoder": self.decoder,
            "vocab": list(self.vocab),
        }


def save_checkpoint(ckpt: SatCheckpoint, path: Path) -> Path:
    torch.save(ckpt.to_dict(), path)
    return path


def import_checkpoint(path: Path, word_map: Path | None = None, trust_pickle: bool = False) -> SatCheckpoint:
    """Our format, or (with ``trust_pickle``) the tutorial's, converted to ours."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # pickled Python objects: the tutorial's format (or worse)
        if not trust_pickle:
            raise WeightsError(
                f"{path} holds pickled Python objects (the tutorial's checkpoint format); loading it runs "
                "code from the file, so pass --trust-pickle if you trust its origin"
            ) from None
        return _from_reference(load_restricted(path), _vocab_for_reference(path, word_map))
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise WeightsError(f"{path} is not a readable torch checkpoint: {client_text(e)}") from None
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise WeightsError(f"{path} is neither a zooserve captioner checkpoint nor the tutorial's format")
    vocab = read_word_map(word_map) if word_map else list(obj["vocab"])
    return SatCheckpoint(SatConfig.from_json(obj["config"]), obj["encoder"], obj["decoder"], vocab)


# ---- word maps -----------------------------------------------------------------------------------
def read_word_map(path: Path) -> list[str]:
    """The tutorial's ``{word: index}`` JSON -> index -> word, checked to be dense and complete."""
    try:
        mapping = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read word map {path}: {client_text(e)}") from None
    if not isinstance(mapping, dict) or not all(isinstance(i, int) for i in mapping.values()):
        raise WeightsError(f"word map {path} must be a JSON object of word -> integer index")
    vocab = [""] * len(mapping)
    for word, i in mapping.items():
        if not 0 <= i < len(vocab) or vocab[i]:
            raise WeightsError(
                f"word map {path}: indices must be 0..{len(vocab) - 1}, each once ({word!r}: {i})"
            )
        vocab[i] = word
    missing = [t for t in (START, END) if t not in mapping]
    if missing:
        raise WeightsError(f"word map {path} lacks the special tokens {missing}")
    return vocab


def write_word_map(vocab: list[str], path: Path | None = None) -> Path:
    path = path or Path(tempfile.mkdtemp(prefix="zooserve-sat-")) / "word_map.json"
    path.write_text(json.dumps({w: i for i, w in enumerate(vocab)}, ensure_ascii=False), "utf-8")
    return path


def _vocab_for_reference(path: Path, word_map: Path | None) -> list[str]:
    if word_map is None:
        raise WeightsError(
            f"{path} is a tutorial checkpoint: pass its word map too (--word-map WORDMAP_....json)"
        )
    return read_word_map(word_map)


# ---- the restricted unpickler ----------------------------------------------------------------------
class _Discarded:
    """Stands in for pickled objects a captioner does not need (optimizers); keeps no state."""

    def __setstate__(self, state: Any) -> None:
        pass


def _no_backend(*_: Any) -> None:
    """torch<=1.0 pickled modules' ``_backend`` as a call to a function that no longer exists."""


_MAPPED: dict[tuple[str, str], Any] = {
    ("models", "Encoder"): Encoder,
    ("models", "DecoderWithAttention"): DecoderWithAttention,
    ("models", "Attention"): Attention,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
}
_EXACT = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    # containers that protocol 2 rebuilds by a call (their contents come from the pickle itself);
    # not bytes/bytearray, whose call with a number allocates that many bytes
    *(("builtins", n) for n in ("dict", "set", "frozenset", "list", "tuple", "int", "float", "bool", "str")),
    *(
        ("torch._utils", n)
        for n in (
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        )
    ),
    ("torch", "Size"),
    ("torch", "device"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}
_MODULE_PREFIXES = ("torch.nn.modules.", "torchvision.models.")


@functools.cache
def _uninitialised(cls: type) -> type:
    """A stand-in for ``cls`` through which a pickle can only make a bare instance, whatever
    arguments it passes (``cls(*args)`` or ``cls.__new__(cls, *args)``): the constructor never
    runs, so ``Linear(10**6, 10**6)`` cannot allocate 4 TB; the instance's state comes from the
    pickle's BUILD step, as for any pickled object."""

    def new(_proxy: type, *_args: Any, **_kwargs: Any) -> Any:
        return cls.__new__(cls)

    return type(f"Uninitialised{cls.__name__}", (), {"__new__": new})


def _allowed(module: str, name: str) -> Any:
    """The object a pickle may reference, or None."""
    module = "builtins" if module == "__builtin__" else module
    if (module, name) in _MAPPED:
        obj = _MAPPED[(module, name)]
        return _uninitialised(obj) if isinstance(obj, type) else obj
    if "." in name or name.startswith("__"):
        return None
    if (module, name) in _EXACT:
        return getattr(importlib.import_module(module), name)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module.startswith(_MODULE_PREFIXES) or module.startswith("torch.optim."):
        obj = getattr(importlib.import_module(module), name, None)
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer):
            return _Discarded
        if isinstance(obj, type) and issubclass(obj, nn.Module) and module.startswith(_MODULE_PREFIXES):
            return _uninitialised(obj)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-list above; any other global (os.system, builtins.eval...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            obj = _allowed(module, name)
        except ImportError:
            obj = None
        if obj is None:
            raise WeightsError(
                f"refusing to load {module}.{name} from a pickled checkpoint: only the tutorial's captioner "
                "classes, torch/torchvision modules and tensors are allowed"
            )
        return obj


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) wants a module-like object with Unpickler and load
restricted_pickle = types.SimpleNamespace(
    __name__="zooserve_restricted_pickle", Unpickler=RestrictedUnpickler, load=_restricted_load
)


def load_restricted(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - anything a hostile or broken pickle throws
        raise WeightsError(f"cannot load tutorial checkpoint {path}: {client_text(e)}") from None


# ---- conversion ----------------------------------------------------------------------------------
def _from_reference(obj: Any, vocab: list[str]) -> SatCheckpoint:
    enc, dec = (obj.get("encoder"), obj.get("decoder")) if isinstance(obj, dict) else (None, None)
    if not isinstance(enc, Encoder) or not isinstance(dec, DecoderWithAttention):
        raise WeightsError(
            "tutorial checkpoint must hold 'encoder' and 'decoder' modules (models.Encoder, ...)"
        )
    enc_sd = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    dec_sd = {k: v.detach().clone() for k, v in dec.state_dict().items()}
    cfg = _infer_config(enc, enc_sd, dec_sd, vocab)
    for k in [k for k in build_captioner(cfg)[0].state_dict() if k.endswith("num_batches_tracked")]:
        enc_sd.setdefault(k, torch.tensor(0))  # torch<0.4.1 BatchNorm had no counter
    return SatCheckpoint(cfg, enc_sd, dec_sd, vocab, source_format="reference")


def _infer_config(
    enc: nn.Module, enc_sd: dict[str, torch.Tensor], dec_sd: dict[str, Any], vocab: list[str]
) -> SatConfig:
    try:
        v, e = dec_sd["embedding.weight"].shape
        a, d = dec_sd["attention.encoder_att.weight"].shape
        hd = dec_sd["decode_step.weight_hh"].shape[1]
    except KeyError as k:
        raise WeightsError(f"tutorial decoder lacks parameter {k}") from None
    if v != len(vocab):
        raise WeightsError(f"the word map has {len(vocab)} words but the decoder's vocabulary is {v}")
    pool = getattr(enc, "adaptive_pool", None)
    size = pool.output_size if isinstance(pool, nn.AdaptiveAvgPool2d) else getattr(enc, "enc_image_size", 14)
    size = size[0] if isinstance(size, tuple) else size
    cfg = SatConfig(
        vocab_size=v,
        backbone=_infer_backbone(enc_sd),
        encoded_size=int(size),
        attention_dim=a,
        embed_dim=e,
        decoder_dim=hd,
    )
    if cfg.encoder_dim != d:
        raise WeightsError(f"encoder gives {cfg.encoder_dim} features but the decoder expects {d}")
    return cfg


def _infer_backbone(enc_sd: dict[str, torch.Tensor]) -> str:
    """The ResNet layout from the trunk's keys: blocks per stage and block type."""
    counts = [len({k.split(".")[2] for k in enc_sd if k.startswith(f"resnet.{i}.")}) for i in range(4, 8)]
    if not all(counts):
        raise WeightsError("tutorial encoder is not a ResNet trunk (no resnet.4 ... resnet.7 stages)")
    block = "bottleneck" if "resnet.4.0.conv3.weight" in enc_sd else "basic"
    name = f"resnet-{block}-" + "-".join(map(str, counts))
    known = {resnet_layout(n): n for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")}
    return known.get((block, tuple(counts)), name)
