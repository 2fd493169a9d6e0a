"""Show, Attend and Tell captioning: the registry's entry for the family.

The architecture lives in ``sat_modules``, checkpoint formats (ours and the reference tutorial's)
in ``sat_checkpoint``, the generated captioned-shapes demo in ``shapes_captions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zooserve.models import sat_checkpoint as ckpt_io
from zooserve.models.sat_modules import (
    SatConfig,
    build_captioner,
    caption_metadata,
    export_targets,
    tiny_config,
)
from zooserve.models.shapes_captions import train_demo, vocabulary
from zooserve.specs import ModelSpec, Prepared, Weights


def prepare_captioner(
    spec: ModelSpec,
    weights: Path | None = None,
    word_map: Path | None = None,
    trust_pickle: bool = False,
    **opts: Any,
) -> Prepared:
    """Weights: user checkpoint (ours or the reference's), else the trained demo, else random."""
    assert spec.input is not None
    torch.manual_seed(0)  # random weights are reproducible
    facts: dict[str, Any] = {}
    if weights is not None:
        ckpt = ckpt_io.import_checkpoint(Path(weights), word_map, trust_pickle=trust_pickle)
        status, facts = Weights.USER, {"source_format": ckpt.source_format}
    elif spec.tiny or spec.default_weights != Weights.TRAINED_DEMO:
        vocab = vocabulary()
        cfg = tiny_config(len(vocab)) if spec.tiny else SatConfig(vocab_size=len(vocab))
        enc, dec = build_captioner(cfg)
        ckpt, status = ckpt_io.SatCheckpoint(cfg, enc.state_dict(), dec.state_dict(), vocab), Weights.RANDOM
    else:
        ckpt, facts = train_demo(side=spec.input.size, **opts)
        status = Weights.TRAINED_DEMO
    encoder, decoder = ckpt.build()
    return Prepared(
        targets=export_targets(encoder, decoder, spec.input.size),
        weights=status,
        labels=list(ckpt.vocab),
        metadata=caption_metadata(ckpt.config, ckpt.vocab, **facts),
        extra_files={"word_map.json": ckpt_io.write_word_map(ckpt.vocab)},
    )
