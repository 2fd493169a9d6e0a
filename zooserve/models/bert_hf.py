"""Hugging Face BERT directories: checks, loading (``transformers``, no network), the export
wrapper that returns plain logits, and the fast tokenizer as one ``tokenizer.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from zooserve.errors import WeightsError

PAD_MULTIPLE = 8  # runtime pads each batch to its longest sequence rounded up to this
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


class LogitsOnly(nn.Module):
    """The HF model returning a plain logits tensor (what torch.export / jit.trace want)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


def check_hf_dir(path: Path) -> None:
    """Clear one-line errors for the usual mistakes before transformers gets to raise its own."""
    hint = "--weights for bert takes a Hugging Face BertForSequenceClassification directory"
    if not path.is_dir():
        raise WeightsError(f"{hint}; {path} is not a directory")
    if not (path / "config.json").is_file():
        raise WeightsError(f"{hint}; {path} has no config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise WeightsError(f"{hint}; {path} has no model.safetensors or pytorch_model.bin")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise WeightsError(f"{hint}; {path} has neither tokenizer.json nor vocab.txt")
    try:
        model_type = json.loads((path / "config.json").read_text("utf-8")).get("model_type")
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path / 'config.json'} is not valid JSON: {e}") from None
    if model_type != "bert":
        raise WeightsError(f"{path} holds a {model_type!r} model; only BERT (model_type 'bert') is supported")


def load_hf_dir(path: Path) -> tuple[nn.Module, Any]:
    """(eval-mode BertForSequenceClassification in fp32, its fast tokenizer) without any network."""
    from transformers import AutoTokenizer, BertForSequenceClassification  # heavy: only when BERT is built

    check_hf_dir(path)
    try:
        model, info = BertForSequenceClassification.from_pretrained(
            path, local_files_only=True, output_loading_info=True, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/safetensors errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot load {path} with transformers: {first}") from None
    missing = [k for k in info["missing_keys"] if "position_ids" not in k]
    if missing:  # e.g. a BertForMaskedLM checkpoint: the classifier would be random
        raise WeightsError(f"{path} is not a BertForSequenceClassification checkpoint: missing {missing[:3]}")
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise WeightsError(f"{path}: the tokenizer has no `tokenizers` fast backend")
    return model.eval(), tokenizer


def export_tokenizer(tokenizer: Any, out_dir: Path) -> Path:
    """The fast tokenizer as one tokenizer.json, padding/truncation off (the runtime sets them)."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    path = out_dir / "tokenizer.json"
    backend.save(str(path))
    return path


def example_inputs(vocab_size: int, seq: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch 2 with padding in the second row, so traced graphs keep the attention-mask path."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (2, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, seq // 2 :] = 0
    ids[1, seq // 2 :] = pad_id
    return ids, mask, torch.zeros_like(ids)
