"""BERT sequence classification: the registry's entry for the family.

Every path ends in a Hugging Face directory read by ``bert_hf.load_hf_dir``: a user checkpoint
(``--weights``), the build-time demo (``bert_demo``: a WordPiece vocabulary trained by
``tokenizers`` and a small BERT fine-tuned on generated topic sentences) or the tiny random test
model, so all three share one loading and export path.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from zooserve.models import bert_demo
from zooserve.models.bert_hf import PAD_MULTIPLE, LogitsOnly, example_inputs, export_tokenizer, load_hf_dir
from zooserve.specs import ExportTarget, ModelSpec, Prepared, Weights

MAX_BATCH = 256


def prepare_bert(spec: ModelSpec, weights: Path | None = None, **_: Any) -> Prepared:
    facts: dict[str, Any] = {}
    if weights is not None:
        model_dir, status = Path(weights), Weights.USER
    elif spec.tiny:
        model_dir, status = bert_demo.tiny_dir(), Weights.RANDOM
    else:
        model_dir, status = bert_demo.demo_dir(), Weights.TRAINED_DEMO
        facts = json.loads((model_dir / "demo.json").read_text("utf-8"))
        accuracy, size = facts["heldout_accuracy"], facts["heldout_size"]
        print(f"bert demo: held-out accuracy {accuracy:.4f} on {size} sentences")
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
