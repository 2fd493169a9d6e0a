"""The digits normaliser (lenet5's input framing): polarity, position, size, aspect, refusals, batching."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageDraw

from zooserve import errors
from zooserve.models import digits as D
from zooserve.models.digits import BLANK, INK_EVERYWHERE, OK, TOO_SMALL, frame_digits


def _digit(
    d: int = 4, size: tuple[int, int] = (96, 96), frac: float = 0.6, centre=(0.5, 0.5), dark: bool = True
) -> torch.Tensor:
    ink, paper = (0, 255) if dark else (255, 0)
    data = D.render_sent(d, "DejaVuSans", size, frac, centre=centre, ink=ink, paper=paper)
    return D.decode_grey(data)


def _ink_box(frame: torch.Tensor) -> tuple[float, float, float, float]:
    """(height, width, centre-of-mass row, column) of a frame's ink, in frame pixels."""
    ink = frame[0]
    rows, cols = ink.sum(1), ink.sum(0)
    on_r, on_c = (rows > 0.05 * rows.max()).nonzero(), (cols > 0.05 * cols.max()).nonzero()
    pos = torch.arange(len(rows)) + 0.5
    return (
        float(on_r[-1] - on_r[0] + 1),
        float(on_c[-1] - on_c[0] + 1),
        float((rows * pos).sum() / rows.sum()),
        float((cols * pos).sum() / cols.sum()),
    )


def test_both_polarities_frame_alike() -> None:
    frames, status = frame_digits([_digit(dark=True), _digit(dark=False)])
    assert status.tolist() == [OK, OK]
    assert frames[0].max() > 0.9 and frames[0][0, 0, 0] == 0  # bright ink on black, as trained
    torch.testing.assert_close(frames[0], frames[1], atol=0.02, rtol=0)


def test_framing_takes_out_position_scale_and_frame_size() -> None:
    ref = frame_digits([_digit()])[0][0]
    for size, frac, centre in (
        ((256, 256), 0.4, (0.3, 0.7)),
        ((40, 40), 0.8, (0.5, 0.5)),
        ((200, 120), 0.5, (0.8, 0.4)),
    ):
        frame = frame_digits([_digit(size=size, frac=frac, centre=centre)])[0][0]
        assert float((frame - ref).abs().mean()) < 0.03, (size, frac, centre)


@pytest.mark.parametrize("digit", [1, 4, 7])
def test_margin_and_centre_of_mass_as_mnist(digit: int) -> None:
    """The ink box's longer side is the spec's 20 px of 32, kept in proportion; centre of mass at
    the centre (within a pixel, as far as the box allows)."""
    frame = frame_digits([_digit(digit, size=(160, 90), centre=(0.3, 0.6))], size=32, box=20)[0][0]
    h, w, cy, cx = _ink_box(frame)
    assert 19 <= max(h, w) <= 21 and w < h  # digits are taller than wide: aspect kept, not stretched
    assert abs(cy - 16) < 1.5 and abs(cx - 16) < 1.5


def test_refusals_are_per_item() -> None:
    flat = torch.full((1, 64, 64), 200, dtype=torch.uint8)
    noise = (torch.rand(1, 80, 80, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    checker = ((torch.arange(64).view(-1, 1) // 8 + torch.arange(64) // 8) % 2 * 255).to(torch.uint8)[None]
    speck = torch.full((1, 200, 200), 255, dtype=torch.uint8)
    speck[:, 100:102, 50:52] = 0
    frames, status = frame_digits([_digit(), flat, noise, checker, speck, _digit(7, dark=False)])
    assert status.tolist() == [OK, BLANK, INK_EVERYWHERE, INK_EVERYWHERE, TOO_SMALL, OK]
    assert frames[1:5].abs().sum() == 0
    errs = D.digit_errors(status)
    assert errs[0] is None and errs[-1] is None
    for e in errs[1:5]:
        assert isinstance(e, errors.NoDigitFound) and 400 <= e.status < 500 and "no digit found" in str(e)
    assert errors.NoDigitFound("x").to_json()["type"] == "NoDigitFound"


def test_batched_equals_one_by_one() -> None:
    images = [
        _digit(3),
        _digit(8, size=(40, 40), dark=False),
        _digit(3, size=(96, 96), frac=0.5, centre=(0.4, 0.4)),  # same shape as the first: one resize
        _digit(5, size=(30, 120), frac=0.8),
        torch.full((1, 50, 50), 30, dtype=torch.uint8),
        torch.stack([_digit(9)[0]] * 3),  # RGB
    ]
    frames, status = frame_digits(images)
    for img, frame, st in zip(images, frames, status, strict=True):
        one, one_status = frame_digits([img])
        assert int(one_status[0]) == int(st)
        torch.testing.assert_close(one[0], frame, atol=1e-5, rtol=1e-5)


def test_a_speck_of_dirt_does_not_move_the_frame() -> None:
    clean = _digit(2, size=(128, 128), frac=0.5)
    dirty = clean.clone()
    dirty[:, 5:7, 120:122] = 0  # a 2x2 speck in the corner
    a, b = frame_digits([clean, dirty])[0]
    assert float((a - b).abs().mean()) < 0.01


def test_transparent_drawings_keep_their_strokes() -> None:
    """A canvas drawing saved as PNG: black strokes on transparent black must not vanish."""
    from zooserve.runtime.images import DecodeLimits, decode_image_bytes

    for stroke, clear in (((0, 0, 0, 255), (0, 0, 0, 0)), ((255, 255, 255, 255), (255, 255, 255, 0))):
        im = Image.new("RGBA", (64, 64), clear)
        ImageDraw.Draw(im).line([(20, 10), (44, 10), (28, 54)], fill=stroke, width=5)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        img = decode_image_bytes(buf.getvalue(), DecodeLimits(1, 1_000_000, 1_000_000)).image
        assert int(img[0, 0, 0]) != int(img[0, 10, 30])  # paper and stroke differ
        assert frame_digits([img])[1].tolist() == [OK]


def test_as_sent_set_is_reproducible_and_as_described() -> None:
    a, b = D.as_sent_set(40), D.as_sent_set(40)
    assert [s.data for s in a] == [s.data for s in b]
    assert {s.fmt for s in a} == {"PNG", "JPEG"} and set(D.HELDOUT_FONTS) >= {s.font for s in a}
    assert not set(D.HELDOUT_FONTS) & set(D.TRAIN_FONTS)
    assert all(min(s.size) >= 28 and max(s.size) <= 256 for s in a)
    assert len(D.issue_set()) == 60
