"""Export parity over the registry: eager vs TorchScript vs AOTInductor, dynamic batch 1/3/8.

TorchScript runs for every tiny classifier; AOTInductor (~10-30 s a compile here) for one
representative per family, as the registry's families share their export code path.
"""

from __future__ import annotations

import pytest
import torch

from zooserve.models import registry
from zooserve.runtime.bundle import load_bundle

TINY = [s.name for s in registry.list_models(task="classify", tiny=True)] + ["lenet5"]
AOTI_REPRESENTATIVES = ["lenet5", "tiny_vgg", "tiny_resnet", "tiny_densenet", "tiny_googlenet"]


def _eager(name: str) -> torch.nn.Module:
    from zooserve.models.vision import build_module

    spec = registry.get(name)
    torch.manual_seed(0)
    return build_module(spec).eval()


def _check_parity(result, batches=(1, 3, 8)) -> None:
    spec = registry.get(result.manifest.model)
    bundle = load_bundle(result.bundle_dir)
    model = bundle.modules["model"]
    eager = _eager(spec.name) if result.manifest.weights == "random" else None
    for n in batches:
        x = torch.randn(n, spec.input.channels, spec.input.size, spec.input.size)
        out = model(x)
        assert out.shape == (n, spec.num_classes)
        if eager is not None:
            with torch.no_grad():
                ref = eager(x)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("name", [n for n in TINY if n != "lenet5"])
def test_torchscript_matches_eager(build_cache, name: str) -> None:
    _check_parity(build_cache(name, format="torchscript"))


@pytest.mark.parametrize("name", AOTI_REPRESENTATIVES)
def test_aoti_dynamic_batch(build_cache, name: str) -> None:
    _check_parity(build_cache(name, format="aoti"))


def test_trained_lenet_agrees_across_formats(build_cache) -> None:
    """LeNet's demo weights come from training: compare its two artifacts with each other."""
    a = load_bundle(build_cache("lenet5", format="aoti").bundle_dir).modules["model"]
    t = load_bundle(build_cache("lenet5", format="torchscript").bundle_dir).modules["model"]
    x = torch.randn(5, 1, 32, 32)
    torch.testing.assert_close(a(x), t(x), rtol=1e-4, atol=1e-4)


def test_archive_holds_everything_the_handler_needs(build_cache) -> None:
    import json
    import zipfile

    import yaml

    res = build_cache("tiny_resnet", format="torchscript")
    with zipfile.ZipFile(res.archive) as z:
        names = set(z.namelist())
        meta = json.loads(z.read("zooserve.json"))
        config = yaml.safe_load(z.read("model-config.yaml"))
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
    assert {"zooserve_handler.py", "zooserve.json", "model-config.yaml", "model.pt"} <= names
    assert manifest["model"]["handler"] == "zooserve_handler.py"
    assert meta["weights"] == "random" and len(meta["labels"]) == 10 and meta["input"]["size"] == 64
    assert config["batchSize"] >= 1 and config["minWorkers"] == config["maxWorkers"] >= 1
    assert config["zooserve"]["evaluation"] == "center" and config["zooserve"]["threads"] >= 1
