"""The paper's figure: the image, then one panel per word with its attention map overlaid."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

PANEL = 224  # pixels per panel side
COLUMNS = 5


def render_attention(
    image_bytes: bytes,
    tokens: Sequence[str],
    attention: Sequence[Sequence[Sequence[float]]],
    out_path: Path | str,
) -> Path:
    """Write a PNG grid: the image, then each token's (S x S) attention upsampled over the image."""
    if len(tokens) != len(attention):
        raise ValueError(f"{len(tokens)} tokens but {len(attention)} attention maps")
    with Image.open(io.BytesIO(image_bytes)) as im:
        image = np.asarray(im.convert("RGB").resize((PANEL, PANEL), Image.Resampling.LANCZOS))
    panels = len(tokens) + 1
    rows = math.ceil(panels / COLUMNS)
    fig = Figure(figsize=(COLUMNS * 2.4, rows * 2.5))  # no pyplot: no global state, no display
    axes = fig.subplots(rows, COLUMNS, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=10)
    for ax, word, alpha in zip(axes.flat[1:], tokens, attention, strict=False):
        ax.imshow(image)
        ax.imshow(
            _upsample(np.asarray(alpha, dtype=np.float32)),
            cmap="Greys_r",
            alpha=0.7,
            extent=(0, PANEL, PANEL, 0),
        )
        ax.set_title(word, fontsize=11)
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=100)
    return out


def _upsample(alpha: np.ndarray) -> np.ndarray:
    """Smooth (bilinear) S x S -> PANEL x PANEL map scaled to [0, 1], like the tutorial's pyramid_expand."""
    img = Image.fromarray((alpha / max(float(alpha.max()), 1e-12) * 255).astype(np.uint8))
    return np.asarray(img.resize((PANEL, PANEL), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
