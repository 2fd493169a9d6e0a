"""Digits as people send them: the normaliser digit recognisers use, and the data LeNet-5 learns from.

``frame_digits`` is the input normalisation of the ``lenet5`` spec (``InputSpec.ink_box``), shared by
the build (training and its accuracy gate), the runtime, tests and benchmarks. It runs on a batch:

1. each image becomes grey and is resized, aspect kept, onto a square working canvas (one resize per
   distinct input shape); the margin is filled with the image's own border level;
2. polarity: the background is the median level (most of a digit image is paper), so dark ink on
   light paper is inverted to the training polarity (bright ink on black);
3. contrast is stretched between background and ink; images with no ink (no contrast), ink over
   or scattered across the frame (photos, textures, noise), or only a speck get a per-item status
   instead of a guess;
4. ink far from the rest (beyond 3 radii of gyration) is dropped as dirt; the ink's box (mass
   quantiles) is padded to a square,
   scaled so its longer side is ``box`` pixels of the ``size`` frame (as MNIST puts 20x20 digits in
   28x28 and LeNet-5 in 32x32) and centred by the ink's centre of mass. Crop, pad, scale and shift
   are a per-image scale + offset, so the resampling is separable: two batched matmuls with
   per-image antialiasing (triangle) filters, no per-image Python.

The rest of the module makes the demo's training data (scikit-learn's handwritten digits plus
digits rendered from fonts matplotlib bundles, augmented) and the held-out "digits as sent" set.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from zooserve.errors import ConfigError, NoDigitFound

if TYPE_CHECKING:
    from PIL import ImageFont

    from zooserve.specs import InputSpec

CANVAS = 128  # working canvas side: a digit at 5 % of a photo's longer side is still 6 px here
MIN_CONTRAST = 0.2  # ink vs paper (of the full 0..255 range) below which an image is blank
MAX_INK = 0.45  # share of the canvas that may be ink (digits: at most ~0.37, tightly cropped and bold)
MIN_INK_SIDE = 5  # canvas pixels: a smaller ink box is a speck, not a digit
INK_FLOOR = 0.15  # contrast-stretched level under which a pixel is paper (noise, JPEG haze)
MASS_QUANTILE = 0.002  # the ink box spans the ink mass from this quantile to 1 - it, per axis
MAX_EDGES = 0.1  # ink/paper changes per pair of neighbouring pixels (digits: at most ~0.025)

# per-item status of frame_digits
OK, BLANK, INK_EVERYWHERE, TOO_SMALL = 0, 1, 2, 3


# ---- the normaliser -------------------------------------------------------------------------------
def to_canvas(images: Sequence[torch.Tensor] | torch.Tensor, side: int = CANVAS) -> torch.Tensor:
    """float (N, 1, side, side) grey in [0, 1] from uint8 (C, H, W) images of any sizes: each is
    resized with its aspect kept so that its longer side is ``side`` and centred; the margin takes
    the image's border level. Same-shaped images are resized in one call."""
    device = images[0].device
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[tuple(img.shape)].append(i)
    parts = []
    for (c, h, w), idx in groups.items():
        stack = torch.stack([images[i] for i in idx]) if len(idx) > 1 else images[idx[0]].unsqueeze(0)
        x = stack.float().div_(255.0)
        if c >= 3:
            grey = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)
            x = (x[:, :3] * grey).sum(1, keepdim=True)
        nh, nw = max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w)))
        if (nh, nw) != (h, w):  # antialias only matters (and costs) when shrinking
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=nh < h, align_corners=False)
        if (nh, nw) != (side, side):  # not square: the margin takes the border's (median) level
            border = torch.cat([x[:, 0, 0], x[:, 0, -1], x[:, 0, :, 0], x[:, 0, :, -1]], dim=1)
            level = border.median(dim=1).values.view(-1, 1, 1, 1)
            top, left = (side - nh) // 2, (side - nw) // 2
            x = F.pad(x - level, (left, side - nw - left, top, side - nh - top)) + level
        parts.append((idx, x))
    if len(parts) == 1:
        return parts[0][1]
    out = torch.empty(len(images), 1, side, side, device=device)
    for idx, x in parts:
        out[torch.tensor(idx, device=device)] = x
    return out


def frame_canvas(x: torch.Tensor, size: int, box: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames float (N, 1, size, size) in [0, 1], bright ink on black; status (N,) int64) from a
    canvas batch. Items whose status is not OK get an empty frame."""
    n, _, s, _ = x.shape
    # levels from pooled copies: 2x2 smoothing, so that one hot pixel is not "the ink"; the paper
    # (the median) from 4x4 blocks, a quarter of the work and paper is a large area anyway
    pooled = F.avg_pool2d(x, 2)
    lo, hi = pooled.flatten(1).aminmax(dim=1)
    paper = F.avg_pool2d(pooled, 2).flatten(1).median(dim=1).values
    light = (paper - lo) > (hi - paper)  # paper nearer the bright end: dark ink, so invert
    contrast = torch.where(light, paper - lo, hi - paper)
    # w = the ink in [0, 1], paper at 0: polarity, contrast stretch and INK_FLOOR in one affine map
    sign = torch.where(light, -1.0, 1.0)
    gain = sign / (contrast.clamp_min(1e-3) * (1 - INK_FLOOR))
    shift = -paper * gain - INK_FLOOR / (1 - INK_FLOOR)
    w = torch.addcmul(shift.view(-1, 1, 1, 1), x, gain.view(-1, 1, 1, 1)).clamp_(0, 1)[:, 0]

    ink_share, edges = _spread(w)
    # ink far from the rest (beyond 3 radii of gyration: a speck of dirt, a smudge at the edge) is
    # not part of the digit; a digit's own strokes lie within ~2.2 of its radii
    pos = torch.arange(s, device=x.device, dtype=x.dtype) + 0.5
    *_, cy, cx, var = _moments(w, pos)
    d2 = (pos.view(1, -1, 1) - cy.view(-1, 1, 1)) ** 2 + (pos.view(1, 1, -1) - cx.view(-1, 1, 1)) ** 2
    w = w * (d2 <= 9 * var.view(-1, 1, 1))
    rows, cols, total, cy, cx, _ = _moments(w, pos)
    y0, y1 = _extent(rows, total)
    x0, x1 = _extent(cols, total)
    side = torch.maximum(x1 - x0, y1 - y0)
    status = torch.full((n,), OK, dtype=torch.long, device=x.device)
    status = torch.where(side < MIN_INK_SIDE, TOO_SMALL, status)
    status = torch.where((ink_share > MAX_INK) | (edges > MAX_EDGES), INK_EVERYWHERE, status)
    status = torch.where(contrast < MIN_CONTRAST, BLANK, status)
    ok = status == OK

    # canvas pixels per frame pixel; the centre of mass goes to the frame's centre, moved only as
    # far as keeps the whole box inside the frame
    scale = torch.where(ok, side / box, torch.ones_like(side))
    half = size / 2 * scale
    cx = torch.minimum(torch.maximum(cx, x1 - half), x0 + half)
    cy = torch.minimum(torch.maximum(cy, y1 - half), y0 + half)
    frames = _resample(w, _weights(cy, scale, size, s), _weights(cx, scale, size, s))
    return (frames * ok.view(-1, 1, 1)).unsqueeze(1), status


def _weights(centre: torch.Tensor, scale: torch.Tensor, size: int, s: int) -> torch.Tensor:
    """(N, size, s): output pixel i samples source position centre + (i + 0.5 - size/2) * scale
    through a triangle filter as wide as the scale (antialiased like Pillow's bilinear). Outside
    the canvas is paper (0), so the weights are not renormalised at the edges."""
    out = torch.arange(size, device=scale.device, dtype=scale.dtype) + 0.5 - size / 2
    src = torch.arange(s, device=scale.device, dtype=scale.dtype) + 0.5
    pos = centre.unsqueeze(1) + out.unsqueeze(0) * scale.unsqueeze(1)  # (N, size)
    width = scale.clamp_min(1.0).view(-1, 1, 1)
    return (1 - (src.view(1, 1, -1) - pos.unsqueeze(2)).abs() / width).clamp_min_(0) / width


def _resample(w: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """Separable per-image resampling: two batched matmuls, (N,size,s) @ (N,s,s) @ (N,s,size)."""
    return torch.bmm(torch.bmm(wy, w), wx.transpose(1, 2))


def _spread(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of the canvas that is ink, and of neighbouring pixel pairs that change between ink
    and paper: a digit's few strokes give a handful of changes per row; noise and textures many."""
    ink = w > 0.5
    across = (ink[:, :, 1:] ^ ink[:, :, :-1]).flatten(1).float().mean(1)
    down = (ink[:, 1:] ^ ink[:, :-1]).flatten(1).float().mean(1)
    return ink.flatten(1).float().mean(1), (across + down) / 2


def _moments(w: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Row and column profiles, ink mass, centre of mass (row, column) and squared radius of
    gyration of (N, s, s) ink weights."""
    rows, cols = w.sum(dim=2), w.sum(dim=1)
    total = rows.sum(dim=1).clamp_min(1e-6)
    cy, cx = (rows * pos).sum(1) / total, (cols * pos).sum(1) / total
    var = (rows * pos**2).sum(1) / total - cy**2 + (cols * pos**2).sum(1) / total - cx**2
    return rows, cols, total, cy, cx, var.clamp_min(1.0)


def _extent(profile: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[start, end) in pixels holding the ink mass between the quantiles q and 1 - q."""
    c = profile.cumsum(dim=1) / total.unsqueeze(1)
    start = (c < MASS_QUANTILE).sum(dim=1).to(profile.dtype)
    end = (c < 1 - MASS_QUANTILE).sum(dim=1).to(profile.dtype) + 1
    return start, end


def frame_digits(
    images: Sequence[torch.Tensor] | torch.Tensor, size: int = 32, box: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (C, H, W) images of any sizes and polarity -> (frames float (N, 1, size, size) in
    [0, 1], status (N,)): see the module's docstring. ``digit_errors(status)`` names the failures."""
    return frame_canvas(to_canvas(images), size, box)


def digit_errors(status: torch.Tensor) -> list[NoDigitFound | None]:
    """One error (or None) per item of a ``frame_digits`` status."""
    blank = f"no two levels differ by {MIN_CONTRAST:.0%} of the range"
    speck = f"under {MIN_INK_SIDE / CANVAS:.0%} of the image's longer side"
    messages = {
        BLANK: f"no digit found: the image is blank ({blank}); send a digit, dark on light or light on dark",
        INK_EVERYWHERE: "no digit found: ink covers or is scattered over the whole image (a photo, a "
        "texture, noise?); send one digit on plain paper",
        TOO_SMALL: f"no digit found: the only ink is a speck ({speck}); crop closer to the digit",
    }
    return [NoDigitFound(messages[int(s)]) if int(s) != OK else None for s in status.tolist()]


def digit_batch(
    images: Sequence[torch.Tensor] | torch.Tensor, spec: InputSpec, side: int | None = None
) -> tuple[torch.Tensor, list[NoDigitFound | None]]:
    """The network's input under a spec with ``ink_box``: framed (at ``side``, the ink box scaled
    with it; default the spec's size), normalised with the spec's mean/std; and per item its error
    or None (a refused item's input is blank paper)."""
    assert spec.ink_box is not None
    size = side or spec.size
    frames, status = frame_digits(images, size=size, box=round(spec.ink_box * size / spec.size))
    return (frames - spec.mean[0]) / spec.std[0], digit_errors(status)


# ---- fonts ----------------------------------------------------------------------------------------
# matplotlib's bundled TrueType fonts (always there when matplotlib is; nothing is downloaded).
# Families and styles are split: the "as sent" set is rendered only from fonts training never saw,
# among them DejaVu Sans, the font of the first-time-user check (issue 20).
TRAIN_FONTS = (
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "cmr10", "cmb10", "cmtt10",
)  # fmt: skip
HELDOUT_FONTS = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "STIXGeneralBolIta", "cmss10", "cmti10", "pillow-default",
)  # fmt: skip
PILLOW_DEFAULT = "pillow-default"  # Pillow's own embedded font (Aileron), ImageFont.load_default


def font(name: str, px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A TrueType font by name: matplotlib's bundled file, or Pillow's embedded default font."""
    from PIL import ImageFont

    if name == PILLOW_DEFAULT:
        return ImageFont.load_default(px)
    return ImageFont.truetype(str(_font_dir() / f"{name}.ttf"), px)


@cache
def _font_dir() -> Path:
    try:
        import matplotlib
    except ImportError as e:
        raise ConfigError(f"training the digits demo renders digits from matplotlib's fonts: {e}") from None
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def render_glyph(digit: int, font_name: str, px: int = 96) -> torch.Tensor:
    """uint8 (1, H, W): the digit in white on black, cropped to its ink."""
    from PIL import Image, ImageDraw

    f = font(font_name, px)
    img = Image.new("L", (2 * px, 2 * px), 0)
    ImageDraw.Draw(img).text((px, px), str(digit), fill=255, font=f, anchor="mm")
    img = img.crop(img.getbbox())
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(1, img.height, img.width)


BASELESS_ONE_WEIGHT = 3


def strip_base(glyph: torch.Tensor) -> torch.Tensor:
    """A serifed "1" without its foot (the Helvetica/Arial "1"), cropped to its ink again."""
    ink = glyph[0] > 127
    width = ink.sum(1)
    stem = width[len(width) // 3 : 2 * len(width) // 3].float().median()
    keep = len(width)
    while keep > 3 * len(width) // 4 and width[keep - 1] > 1.6 * stem:
        keep -= 1
    cut = glyph[:, :keep]
    cols = (cut[0] > 0).any(0).nonzero().flatten()
    return cut[:, :, int(cols[0]) : int(cols[-1]) + 1].contiguous()


def training_glyphs() -> tuple[list[torch.Tensor], list[int]]:
    """Every digit in every training font, plus each upright font's "1" without its foot."""
    glyphs, labels = [], []
    for name in TRAIN_FONTS:
        for d in range(10):
            glyphs.append(render_glyph(d, name))
            labels.append(d)
        if not any(s in name for s in ("Oblique", "Italic")):
            # sans-serif "1"s (no foot) are common, and look like the handwritten set's 7s: 3x weight
            glyphs += [strip_base(glyphs[-9])] * BASELESS_ONE_WEIGHT
            labels += [1] * BASELESS_ONE_WEIGHT
    return glyphs, labels


# ---- augmentation (training) ----------------------------------------------------------------------
SOURCE_SIDE, SOURCE_BOX = 64, 48  # augmentation sources: the glyph's longer side 48 px of 64
TRAIN_SIDES = (28, 36, 48, 64, 96, 128)  # the image sizes people send, small to large


def sources(images: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """float (N, 1, 64, 64) augmentation sources: the normaliser's own framing, at a larger size."""
    frames, status = frame_digits(images, size=SOURCE_SIDE, box=SOURCE_BOX)
    assert bool((status == OK).all()), "a training source has no readable digit"
    return frames


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k mean of each image, as one depthwise convolution (the batch as channels: fast on CPU)."""
    n, _, h, w = x.shape
    kernel = torch.full((n, 1, k, k), 1.0 / (k * k), dtype=x.dtype)
    return F.conv2d(x.view(1, n, h, w), kernel, padding=k // 2, groups=n).view(n, 1, h, w)


def _affine_grid(theta: torch.Tensor, side: int) -> torch.Tensor:
    """``F.affine_grid`` for (N, 6) thetas and a square output, elementwise (its bmm is slow here)."""
    t = (torch.arange(side, dtype=theta.dtype) * 2 + 1) / side - 1
    xs, ys = t.view(1, 1, -1), t.view(1, -1, 1)
    a, b, c, d, e, f = (theta[:, i].view(-1, 1, 1) for i in range(6))
    return torch.stack([a * xs + b * ys + c, d * xs + e * ys + f], dim=-1)


def augment(src: torch.Tensor, side: int, g: torch.Generator) -> torch.Tensor:
    """uint8 (N, 1, side, side) images as people send them, from sources (bright ink on black):
    stroke width; affine (scale 35-90 % of the frame, anywhere inside it, rotation, shear,
    aspect); blur; paper and ink levels, light gradient, either polarity; noise; JPEG artefacts."""
    n = len(src)
    # stroke width from box-blurred copies: thinner, as is, ~1 px or ~2 px bolder (at 48 px glyphs)
    stroke = torch.randint(0, 4, (n,), generator=g).view(-1, 1, 1, 1)
    b3, b5 = _box_blur(src, 3), _box_blur(src, 5)
    out = torch.where(stroke == 0, (2 * b3 - 0.8).clamp(0, 1), src)
    out = torch.where(stroke == 2, (2 * b3).clamp(0, 1), out)
    out = torch.where(stroke == 3, (2.5 * b5).clamp(0, 1), out)

    # affine: output (normalised) -> source (normalised); the glyph's longer side is `frac` of the frame
    frac = _u(g, n, 0.35, 0.9)
    rot = _u(g, n, -15, 15) * math.pi / 180
    shear, aspect = _u(g, n, -0.25, 0.25), torch.exp(_u(g, n, -0.2, 0.2))
    reach = (1 - frac * 1.05).clamp_min(0)  # the glyph's centre may go this far: it stays inside
    tx, ty = _u(g, n, -1, 1) * reach, _u(g, n, -1, 1) * reach
    k = SOURCE_BOX / SOURCE_SIDE / frac
    cos, sin = torch.cos(rot), torch.sin(rot)
    a, b = k * cos * aspect, k * (sin + shear * cos) * aspect  # rotation, then shear and aspect
    c, d = -k * sin / aspect, k * (cos - shear * sin) / aspect
    theta = torch.stack([a, b, -(a * tx + b * ty), c, d, -(c * tx + d * ty)], 1)
    if side < 48:  # small outputs sample a half-size source: no aliasing, no supersampling
        out = F.avg_pool2d(out, 2)
    ink = F.grid_sample(out, _affine_grid(theta, side), mode="bilinear", align_corners=False)

    # blur: a per-image Gaussian (sigma 0..1.2 px) as one grouped convolution
    sigma = _u(g, n, 0.0, 1.2).clamp_min(0.05)
    taps = torch.arange(-3, 4, dtype=torch.float32)
    k1 = torch.exp(-(taps.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    kernel = (k1.unsqueeze(2) * k1.unsqueeze(1)).unsqueeze(1)  # (n, 1, 7, 7)
    ink = F.conv2d(F.pad(ink.view(1, n, side, side), (3, 3, 3, 3)), kernel, groups=n).view(n, 1, side, side)

    # levels, lighting and polarity
    paper, pen = _u(g, n, 0.0, 0.3), _u(g, n, 0.65, 1.0)
    img = paper.view(-1, 1, 1, 1) + (pen - paper).view(-1, 1, 1, 1) * ink.clamp(0, 1)
    ramp = torch.linspace(-1, 1, side)
    angle = _u(g, n, 0, 2 * math.pi)
    light = _u(g, n, -0.12, 0.12) * (torch.rand(n, generator=g) < 0.3)
    img = img + light.view(-1, 1, 1, 1) * (
        torch.cos(angle).view(-1, 1, 1, 1) * ramp.view(1, 1, 1, -1)
        + torch.sin(angle).view(-1, 1, 1, 1) * ramp.view(1, 1, -1, 1)
    )
    dark_ink = (torch.rand(n, generator=g) < 0.5).view(-1, 1, 1, 1)
    img = torch.where(dark_ink, 1 - img, img)
    noise = _u(g, n, 0.0, 0.06) * (torch.rand(n, generator=g) < 0.5)
    img = img + noise.view(-1, 1, 1, 1) * torch.randn(img.shape, generator=g)
    img = img.clamp(0, 1).mul(255).round().to(torch.uint8)

    # JPEG artefacts on half of them (quality 25..95)
    from torchvision.io import decode_jpeg, encode_jpeg

    jpeg = (torch.rand(n, generator=g) < 0.5).nonzero().flatten().tolist()
    quality = torch.randint(25, 96, (n,), generator=g).tolist()
    for i in jpeg:
        img[i] = decode_jpeg(encode_jpeg(img[i], quality=quality[i]))
    return img


def training_frames(
    images: torch.Tensor, labels: torch.Tensor, g: torch.Generator, handwritten_copies: int = 8,
    font_copies: int = 40, size: int = 32, box: int = 20, chunk: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Framed training images (float (N, 1, size, size)) and labels: the handwritten ``images``
    as they are, ``handwritten_copies`` augmented copies of each, and ``font_copies`` augmented
    copies of every training-font glyph; all through ``frame_digits``, as served."""
    glyphs, glyph_labels = training_glyphs()
    src = torch.cat([sources(images), sources(glyphs)])
    src_labels = torch.cat([labels, torch.tensor(glyph_labels)])
    pick = torch.cat([
        torch.arange(len(images)).repeat(handwritten_copies),
        len(images) + torch.arange(len(glyphs)).repeat(font_copies),
    ])  # fmt: skip
    pick = pick[torch.randperm(len(pick), generator=g)]
    frames, status = frame_digits(images, size, box)
    out, out_labels = [frames[status == OK]], [labels[status == OK]]
    for k, start in enumerate(range(0, len(pick), chunk)):
        b = pick[start : start + chunk]
        frames, status = frame_digits(augment(src[b], TRAIN_SIDES[k % len(TRAIN_SIDES)], g), size, box)
        out.append(frames[status == OK])  # a copy augmented beyond reading (rare) is dropped
        out_labels.append(src_labels[b][status == OK])
    return torch.cat(out), torch.cat(out_labels)


# ---- "digits as sent": the held-out evaluation set ------------------------------------------------
@dataclass(frozen=True)
class Sent:
    """One image as a user might send it, and its true digit."""

    data: bytes
    label: int
    font: str
    size: tuple[int, int]  # width, height
    fmt: str  # PNG | JPEG


def render_sent(
    digit: int, font_name: str, size: tuple[int, int], frac: float, angle: float = 0.0,
    centre: tuple[float, float] = (0.5, 0.5), ink: int = 0, paper: int = 255, fmt: str = "PNG",
    quality: int = 90,
) -> bytes:  # fmt: skip
    """An encoded grey image: the digit's ink ``frac`` of the frame's shorter side tall, rotated by
    ``angle`` degrees, its box centred at ``centre`` (fractions of the frame). Pillow only, so the
    evaluation does not share code with the training augmentation."""
    from PIL import Image

    w, h = size
    glyph = render_glyph(digit, font_name, px=192)
    mask = Image.frombytes("L", (glyph.shape[2], glyph.shape[1]), bytes(glyph.flatten().tolist()))
    scale = frac * min(w, h) / mask.height
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    mask = mask.resize(
        (max(1, round(mask.width * scale)), max(1, round(mask.height * scale))), Image.Resampling.LANCZOS
    )
    img = Image.new("L", (w, h), paper)
    left = round(centre[0] * w - mask.width / 2)
    top = round(centre[1] * h - mask.height / 2)
    img.paste(Image.new("L", mask.size, ink), (left, top), mask)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def as_sent_set(count: int = 500, seed: int = 20, fonts: Sequence[str] = HELDOUT_FONTS) -> list[Sent]:
    """Digits as people send them: from fonts held out of training, anywhere in the frame with
    margins, 40-80 % of its shorter side tall, rotated up to 10 degrees, either polarity, PNG or
    JPEG, frames of 28 to 256 px (a third of them not square). Seeded: the same set every time."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        r = torch.rand(10, generator=g).tolist()
        digit, font_name = i % 10, fonts[(i // 10) % len(fonts)]
        side = round(math.exp(math.log(28) + r[0] * (math.log(256) - math.log(28))))
        other = side if r[1] < 2 / 3 else max(28, min(256, round(side * (0.67 + 0.83 * r[2]))))
        size = (side, other) if r[3] < 0.5 else (other, side)
        frac = 0.4 + 0.4 * r[4]
        # the glyph's box (roughly frac tall, at most as wide) stays inside, with a 4 % margin
        half_w = min(0.5, 0.04 + frac * min(size) / size[0] / 2)
        half_h = min(0.5, 0.04 + frac * min(size) / size[1] / 2)
        centre = (half_w + (1 - 2 * half_w) * r[5], half_h + (1 - 2 * half_h) * r[6])
        dark, fmt = r[7] < 0.5, "PNG" if r[8] < 0.5 else "JPEG"
        ink, paper = (0, 255) if dark else (255, 0)
        data = render_sent(digit, font_name, size, frac, angle=-10 + 20 * r[9], centre=centre, ink=ink,
                           paper=paper, fmt=fmt, quality=60 + (i * 7) % 36)  # fmt: skip
        out.append(Sent(data, digit, font_name, size, fmt))
    return out


def decode_grey(data: bytes) -> torch.Tensor:
    """uint8 (1, H, W) from encoded bytes (Pillow; the server decodes with zooserve.runtime.images)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L")
        return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(1, im.height, im.width)


ISSUE_FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique")


def issue_set() -> list[Sent]:
    """Issue 20's first-time-user check: 96x96 PNG, the digit 60 % of the frame and centred, DejaVu
    Sans (regular, bold, oblique), black on white and white on black: 60 images."""
    out = []
    for font_name in ISSUE_FONTS:
        for ink, paper in ((0, 255), (255, 0)):
            for d in range(10):
                data = render_sent(d, font_name, (96, 96), 0.6, ink=ink, paper=paper)
                out.append(Sent(data, d, font_name, (96, 96), "PNG"))
    return out
