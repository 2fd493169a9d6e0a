"""User weights: torchvision state_dicts load unchanged; every bad file is one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from zooserve.errors import WeightsError
from zooserve.models import registry
from zooserve.models.vision import prepare_classifier


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(123)
    ref = torchvision.models.resnet18().eval()
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    return path, ref


def test_torchvision_state_dict_gives_torchvision_logits(resnet18_weights, build_cache) -> None:
    path, ref = resnet18_weights
    prepared = prepare_classifier(registry.get("resnet18"), weights=path)
    assert prepared.weights == "user"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(prepared.targets["model"].module(x), ref(x))


def test_torchvision_googlenet_state_dict_with_aux_heads_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = torchvision.models.googlenet(init_weights=False)  # aux heads included, as torchvision saves it
    path = tmp_path / "g.pth"
    torch.save(ref.state_dict(), path)
    prepared = prepare_classifier(registry.get("googlenet"), weights=path)
    ref.transform_input, ref.aux_logits = True, False
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(prepared.targets["model"].module(x), ref.eval()(x))


def _bad_files(tmp: Path) -> dict[str, Path]:
    wrong = tmp / "wrong_keys.pth"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    text = tmp / "notes.pth"
    text.write_text("these are not weights")
    good = tmp / "good.pth"
    torch.save(torchvision.models.resnet18().state_dict(), good)
    truncated = tmp / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"wrong_keys": wrong, "not_tensors": text, "truncated": truncated}


@pytest.mark.parametrize("kind", ["wrong_keys", "not_tensors", "truncated"])
def test_bad_weights_are_clear_errors(tmp_path: Path, kind: str) -> None:
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(WeightsError) as exc:
        prepare_classifier(registry.get("resnet18"), weights=path)
    assert str(path) in str(exc.value)
    if kind == "wrong_keys":
        assert "unexpected keys" in str(exc.value) and "layer1.2" in str(exc.value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zooserve.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["build", "resnet9000"], "UnknownModel"),
        (["build", "resnet18", "--weights", "/nonexistent.pth"], "WeightsError"),
        (["build", "resnet18", "--format", "tensorrt"], "UnsupportedFormat"),
        (["build", "bert", "--dense"], "UnsupportedFormat"),
    ],
)
def test_cli_user_mistakes_exit_2_with_one_line(args: list[str], expected: str) -> None:
    if "tensorrt" in args and torch.cuda.is_available():
        pytest.skip("CUDA present: tensorrt is a valid format here")
    r = _cli(*args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_cli_truncated_weights_one_line(tmp_path: Path) -> None:
    r = _cli("build", "resnet18", "--weights", str(_bad_files(tmp_path)["truncated"]), "--out", str(tmp_path))
    assert r.returncode == 2 and "WeightsError" in r.stderr and "Traceback" not in r.stderr
