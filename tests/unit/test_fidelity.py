"""The fast-decode fidelity gate (issue 16): on large photos, fast mode (libjpeg-turbo's DCT scaling
at FAST_MARGIN x the model's side) answers as exact mode does, top-1 >= 99 % and every class
probability within 0.02, with models whose outputs are sharp (the trained lenet5; a ResNet under a
calibrated scene head); small photos give bit-identical model inputs. Small sets here (the full
figures: ``zooserve bench fidelity``, docs/precision.md)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from zooserve.bench import fidelity
from zooserve.bench.samples import photo_jpegs


@pytest.fixture(scope="module")
def lenet(build_cache):
    return build_cache("lenet5", format="aoti").bundle_dir


@pytest.fixture(scope="module")
def resnet18(build_cache):
    return build_cache("resnet18", format="torchscript").bundle_dir


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        return im.size


def test_large_photos_and_digits_are_camera_sized_seeded_jpegs() -> None:
    photos = fidelity.large_photos(3, seed=4, megapixels=(3.0, 4.0))
    assert photos == fidelity.large_photos(3, seed=4, megapixels=(3.0, 4.0))
    assert all(2.9e6 <= w * h <= 4.1e6 for w, h in map(_size, photos))
    digits = fidelity.large_digits(3, seed=4, megapixels=(3.0, 4.0))
    assert all(0 <= y <= 9 for _, y in digits) and all(
        2.9e6 <= w * h <= 4.1e6 for w, h in (_size(d) for d, _ in digits)
    )
    views = fidelity.scene_views(2, seed=0)
    assert [s for _, s in views] == [s for s in range(len(fidelity.SCENES)) for _ in range(2)]


def test_lenet_reads_large_digits_the_same_fast_or_exact(lenet) -> None:
    digits = fidelity.large_digits(12, seed=1, megapixels=(3.0, 6.0))
    r = fidelity.compare(lenet, [d for d, _ in digits], [y for _, y in digits])
    assert r.scaled == 12  # every one took the DCT-scaled path
    assert r.median_top1 > 0.8  # sharp: the gate means something
    assert r.agreement >= fidelity.MIN_AGREEMENT and r.max_prob_diff <= fidelity.MAX_PROB_DIFF, r
    assert r.accuracy_fast == r.accuracy_exact


def test_a_sharpened_resnet_answers_large_photos_the_same_fast_or_exact(resnet18) -> None:
    net = fidelity.sharpened("resnet18", resnet18, views=6)
    photos = fidelity.large_photos(10, seed=1, megapixels=(8.0, 12.0))
    r = fidelity.compare(resnet18, photos, model=net)
    assert r.scaled == 10 and r.distinct_top1 >= 5  # scaled, and the head tells the photos apart
    assert r.median_top1 > 0.8
    assert r.agreement >= fidelity.MIN_AGREEMENT and r.max_prob_diff <= fidelity.MAX_PROB_DIFF, r


def test_small_photos_give_the_model_bit_identical_inputs(resnet18, lenet) -> None:
    assert fidelity.small_photos_identical(resnet18, [photo_jpegs()[s] for s in fidelity.SOURCES])
    small_digits = [d for d, _ in fidelity.large_digits(3, seed=5, megapixels=(0.05, 0.2))]
    assert fidelity.small_photos_identical(lenet, small_digits)


def test_the_gate_refuses_what_it_should() -> None:
    ok = fidelity.Fidelity("m", 10, 10, 1.0, 0.01, 0.9, 5)
    assert ok.passed
    assert not fidelity.Fidelity("m", 10, 10, 0.98, 0.01, 0.9, 5).passed
    assert not fidelity.Fidelity("m", 10, 10, 1.0, 0.03, 0.9, 5).passed
    assert "| m | 10 | 10 | 100.0 % | 0.0100 |" in fidelity.table([ok])


def test_the_head_is_calibrated_to_its_median_top1() -> None:
    logits = torch.randn(41, 10, generator=torch.Generator().manual_seed(0))
    t = fidelity.calibrate(logits, fidelity.SHARP_TOP1)
    assert fidelity.median_top1(logits, t) == pytest.approx(fidelity.SHARP_TOP1, abs=1e-3)
    assert fidelity.median_top1(logits, t / 2) < fidelity.SHARP_TOP1 < fidelity.median_top1(logits, 2 * t)
