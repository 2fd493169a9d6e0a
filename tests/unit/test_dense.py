"""FC-to-conv: equal to the original at the native size, a score map above it, for every family."""

from __future__ import annotations

import pytest
import torch

from zooserve.export.dense import scores_from_map, to_fully_convolutional
from zooserve.models import registry
from zooserve.models.vision import build_module

FAMILIES = [
    "lenet5",
    "tiny_alexnet",
    "tiny_vgg",
    "tiny_googlenet",
    "tiny_resnet",
    "tiny_resnext",
    "tiny_densenet",
]
# full-size checks for the families whose head conversion depends on real layer sizes
FULL = ["alexnet", "vgg11", "resnet18", "googlenet", "densenet121"]


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module, int, int]:
    spec = registry.get(name)
    torch.manual_seed(0)
    model = build_module(spec).eval()
    return model, to_fully_convolutional(model, spec.family).eval(), spec.input.size, spec.input.channels


@pytest.mark.parametrize("name", FAMILIES + FULL)
def test_equal_at_native_size(name: str) -> None:
    model, dense, side, ch = _pair(name)
    x = torch.randn(2, ch, side, side)
    with torch.no_grad():
        ref, out = model(x), dense(x)
    torch.testing.assert_close(scores_from_map(out), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("name", FAMILIES)
def test_score_map_above_native_size(name: str) -> None:
    model, dense, side, ch = _pair(name)
    with torch.no_grad():
        out = dense(torch.randn(1, ch, 2 * side, 2 * side))
    assert out.ndim == 4 and out.shape[:2] == (1, registry.get(name).num_classes)
    assert out.shape[2] > 1 and out.shape[3] > 1


def test_dense_aoti_accepts_other_sizes(build_cache) -> None:
    from zooserve.runtime.bundle import load_bundle

    res = build_cache("tiny_vgg", format="aoti", dense=True)
    bundle = load_bundle(res.bundle_dir)
    assert res.manifest.metadata["dense_min_side"] == 96  # the first size with a 2x2 score map
    assert bundle.modules["model"](torch.randn(3, 3, 64, 64)).shape == (3, 10)  # native size: plain model
    dense = bundle.modules["dense"]
    assert dense(torch.randn(1, 3, 96, 128)).shape == (1, 10, 2, 3)
    assert dense(torch.randn(4, 3, 200, 160)).shape == (4, 10, 5, 4)
    assert res.manifest.serving.scales == (96, 144, 192)
