"""BERT sequence classification: Hugging Face checkpoint directories loaded unchanged with
``transformers``, a tiny random test model, and a build-time demo (WordPiece vocabulary trained by
``tokenizers`` + a small BERT fine-tuned on generated topic sentences).

Every path ends in an HF directory read by ``load_hf_dir``, so user checkpoints, the demo and the
tiny model share one loading and export path.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zooserve.errors import WeightsError
from zooserve.models.specs import ExportTarget, ModelSpec, Prepared

PAD_MULTIPLE = 8  # runtime pads each batch to its longest sequence rounded up to this
MAX_BATCH = 256
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


# ---- loading an HF directory ---------------------------------------------------------------------
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
    from transformers import AutoTokenizer, BertForSequenceClassification

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
    from tokenizers import Tokenizer

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


# ---- prepare -------------------------------------------------------------------------------------
def prepare_bert(spec: ModelSpec, weights: Path | None = None, **_: Any) -> Prepared:
    from zooserve.models import bert_demo

    facts: dict[str, Any] = {}
    if weights is not None:
        model_dir, status = Path(weights), "user"
    elif spec.tiny:
        model_dir, status = bert_demo.tiny_dir(), "random"
    else:
        model_dir, status = bert_demo.demo_dir(), "trained-demo"
        facts = json.loads((model_dir / "demo.json").read_text("utf-8"))
        print(
            f"bert demo: held-out accuracy {facts['heldout_accuracy']:.4f} on {facts['heldout_size']} sentences"
        )
    model, tokenizer = load_hf_dir(model_dir)
    config = model.config
    max_len = int(min(config.max_position_embeddings, tokenizer.model_max_length))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(config.pad_token_id or 0)
    seq_dim = ("seq", min(PAD_MULTIPLE, max_len), max_len)
    dyn = {0: ("batch", 1, MAX_BATCH), 1: seq_dim}
    target = ExportTarget(
        LogitsOnly(model).eval(), example_inputs(config.vocab_size, min(16, max_len), pad_id), (dyn,) * 3
    )
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    metadata = {
        "max_length": max_len,
        "pad_multiple": PAD_MULTIPLE,
        "pad_token_id": pad_id,
        "pad_token": tokenizer.pad_token or "[PAD]",
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        **facts,
    }
    tok_file = export_tokenizer(tokenizer, Path(tempfile.mkdtemp(prefix="zooserve-bert-")))
    return Prepared({"model": target}, status, labels, metadata, {"tokenizer.json": tok_file})
