"""Reduced-precision builds: the accuracy gate, the archive round trip, bf16/int8 parity.

Stated tolerances (on LeNet-5's held-out digits, against the fp32 model):
  bf16: max |logit diff| <= 3 % of the fp32 logit range, top-1 agreement >= 99 %
  int8: max |logit diff| <= 8 % of the fp32 logit range, top-1 agreement >= 98 %
  both: digits accuracy within 0.5 points of fp32 (the build gate).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from zooserve.errors import UnsupportedFormat, UserError
from zooserve.export import precision
from zooserve.export.build import BuildOptions, build
from zooserve.export.precision import AccuracyGateFailed, check_gate, run_gate
from zooserve.models import registry
from zooserve.runtime.bundle import load_bundle
from zooserve.specs import Format, Precision, Prepared

TOLERANCE = {"bf16": (0.03, 0.99), "int8": (0.08, 0.98)}  # (logit diff / range, top-1 agreement)


def _logits(n: int = 200, classes: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)) * 4


# ---- the gate on its own (no compile) ------------------------------------------------------------
def test_gate_passes_and_reports_numbers() -> None:
    ref = _logits()
    gate = check_gate(ref, ref + 1e-3 * torch.randn_like(ref))
    assert gate["passed"] and gate["metric"] == "top1_agreement"
    assert gate["top1_agreement"] == 1.0 and gate["images"] == 200 and gate["decided_images"] >= 150


def test_gate_fails_a_permuted_model_with_the_numbers() -> None:
    ref = _logits()
    with pytest.raises(AccuracyGateFailed, match=r"top-1 agreement with fp32 \d+\.\d+% .*needs 99%"):
        check_gate(ref, ref[:, torch.randperm(10, generator=torch.Generator().manual_seed(1))])
    assert issubclass(AccuracyGateFailed, UserError)


def test_gate_counts_accuracy_drop_for_labelled_sets() -> None:
    ref = _logits()
    labels = ref.argmax(1)  # fp32 is 100 % right
    out = ref.clone()
    out[:2] = out[:2].flip(1)  # two wrong answers: 1 point drop > 0.5 allowed
    with pytest.raises(AccuracyGateFailed, match=r"accuracy 99\.00% vs fp32 100\.00%"):
        check_gate(ref, out, labels)
    out = ref.clone()
    out[:1] = out[:1].flip(1)  # one of 200: 0.5 point, allowed
    assert check_gate(ref, out, labels)["accuracy_drop"] == pytest.approx(0.005)


def test_gate_ignores_flips_of_fp32_ties_but_not_decided_images() -> None:
    ref = _logits()
    ref[:10, 1] = ref[:10, 0] = ref[:10].max(1).values + 1.0  # ten exact ties
    out = ref.clone()
    out[:10, 1] += 1e-3  # flip the ties: noise, not an accuracy loss
    gate = check_gate(ref, out)
    assert gate["top1_agreement"] == 1.0 and gate["top1_agreement_all"] < 1.0


class Permuted(torch.nn.Module):
    """A deliberately broken "quantized" model: right logits, wrong order."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).roll(1, dims=1)


def test_broken_model_fails_the_build_gate() -> None:
    from zooserve.models.vision import build_module

    spec = registry.get("lenet5")
    torch.manual_seed(0)
    model = build_module(spec).eval()
    prepared = Prepared(targets={}, weights="random", labels=[str(i) for i in range(10)])
    assert run_gate(spec, prepared, model, model)["passed"]
    with pytest.raises(AccuracyGateFailed, match="agreement"):
        run_gate(spec, prepared, model, Permuted(model))


def test_unsupported_precisions_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    lenet = registry.get("lenet5")
    prepared = Prepared(targets={}, weights="random", labels=[])
    with pytest.raises(UnsupportedFormat, match="TensorRT"):
        precision.apply_precision(lenet, prepared, Precision.FP16, Format.AOTI)
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)
    with pytest.raises(UnsupportedFormat, match="avx512_bf16"):
        precision.apply_precision(lenet, prepared, Precision.BF16, Format.AOTI)


def test_calibration_folder_errors(tmp_path: Path) -> None:
    from zooserve.errors import ConfigError
    from zooserve.export.calibration import calibration_images

    spec = registry.get("tiny_resnet")
    with pytest.raises(ConfigError, match="does not exist"):
        calibration_images(spec, tmp_path / "missing")
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError, match="readable images"):
        calibration_images(spec, tmp_path)


# ---- real builds: LeNet-5 (trained demo) in bf16 and int8, AOTInductor ---------------------------
@pytest.fixture(scope="module")
def trained_lenet() -> tuple[torch.nn.Module, dict]:
    """A shorter run of the build's seeded training (parity needs a trained net, not the best one)."""
    from zooserve.models.lenet import train_on_digits
    from zooserve.models.vision import build_module

    torch.manual_seed(0)
    model = build_module(registry.get("lenet5"))
    facts = train_on_digits(model, epochs=3, gate=False)
    assert facts["digits_accuracy"] >= 0.95
    return model.eval(), facts


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, trained_lenet) -> Iterator[dict[str, object]]:
    """Both builds reuse one training run (the seeded training is the same each time anyway).
    bf16 is built on every CPU: without native bf16 the product refuses it (slower than fp32), but
    the kernels still run emulated, so the export, the archive and the parity are tested anyway."""
    import zooserve.models.vision as vision

    trained, facts = trained_lenet

    def reuse(model: torch.nn.Module, **_: object) -> dict:
        model.load_state_dict(trained.state_dict())
        return dict(facts)

    root = tmp_path_factory.mktemp("precision")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision, "train_on_digits", reuse)  # where the build looks it up
        mp.setattr(precision, "bf16_supported", lambda: True)
        for prec in ("bf16", "int8"):
            opts = BuildOptions(format="aoti", precision=prec, archive_name=f"lenet5_{prec}")
            out[prec] = build("lenet5", opts, out=root / "store", work=root / "work")
    yield out


@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_precision_round_trip_through_archive(builds, prec: str) -> None:
    res = builds[prec]
    assert res.manifest.precision == prec
    gate = res.manifest.metadata["precision_gate"]
    assert gate["passed"] and gate["metric"] == "accuracy_drop" and gate["accuracy_drop"] <= 0.005
    with zipfile.ZipFile(res.archive) as z:
        meta = json.loads(z.read("zooserve.json"))
        config = yaml.safe_load(z.read("model-config.yaml"))
    assert meta["precision"] == prec and meta["metadata"]["precision"]["dtype"] == prec
    assert config["batchSize"] >= 1 and "threads" in config["zooserve"]


@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_parity_with_fp32(builds, trained_lenet, digits, prec: str) -> None:
    x, y = digits
    from zooserve.models.lenet import normalize_digits

    fp32 = trained_lenet[0]  # eager fp32 (the fp32 AOTI artifact matches it to 1e-4, test_exports)
    low = load_bundle(builds[prec].bundle_dir).modules["model"]
    with torch.no_grad():
        for batch in (1, 7, len(x)):  # dynamic batch still works in reduced precision
            ref, out = fp32(normalize_digits(x[:batch])), low(normalize_digits(x[:batch]))
            assert out.dtype == torch.float32 and out.shape == ref.shape
    diff_tol, agree_tol = TOLERANCE[prec]
    rel = float((ref - out).abs().max() / (ref.max() - ref.min()))
    agree = float((ref.argmax(1) == out.argmax(1)).float().mean())
    assert rel <= diff_tol and agree >= agree_tol, (rel, agree)
    acc_ref = float((ref.argmax(1) == y).float().mean())
    acc = float((out.argmax(1) == y).float().mean())
    assert acc >= acc_ref - 0.005, (acc, acc_ref)


def test_int8_artifact_runs_onednn_int8_kernels(tmp_path: Path) -> None:
    """Guard against fake quantization: compiled with autograd off (Inductor's freezing passes
    only run then), the int8 graph must call oneDNN's quantized conv, not fp32 convolutions
    between quantize/dequantize kernels; the build's gate checks the compiled numbers."""
    import re

    opts = BuildOptions(format="aoti", precision="int8", archive_name="tiny_resnet_int8")
    with torch.no_grad():
        res = build("tiny_resnet", opts, out=None, work=tmp_path)
    assert res.manifest.metadata["precision_gate"]["checked"] == "compiled artifact"
    with zipfile.ZipFile(res.bundle_dir / "model.pt2") as z:
        code = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".cpp"))
    ops = set(re.findall(r"aoti_torch_cpu_(\w+)\(", code))
    assert any("qconv" in op for op in ops) and "convolution" not in ops, sorted(ops)


# ---- torch 2.14: conv with one input channel + freezing + dynamic batch ---------------------------
@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_single_channel_conv_compiles_right_with_freezing(tmp_path: Path, prec: str) -> None:
    """Inductor plans an NCHW output for a conv reading ONE channel while oneDNN writes NHWC (a
    channels_last bf16 weight, or any int8 qconv): LeNet-5 compiled to chance-level numbers.
    precision.py keeps those convs NCHW / fp32; the compiled graph must match its eager module,
    also at batch sizes other than the example's."""
    from zooserve.export.aoti import compile_aoti
    from zooserve.export.calibration import calibration_images
    from zooserve.models.lenet import LeNet5
    from zooserve.specs import ExportTarget

    if prec == "bf16" and not precision.bf16_supported():
        pytest.skip("this CPU has no native bf16")
    spec = registry.get("lenet5")
    torch.manual_seed(0)
    target = ExportTarget(LeNet5().eval(), (torch.randn(2, 1, 32, 32),), ({0: ("batch", 1, 64)},))
    if prec == "bf16":
        low = precision.bf16_target(target, channels_last=True)
    else:
        low = precision.int8_target(spec, target, calibration_images(spec)[:32], channels_last=False)
    assert precision.single_channel_convs(target.module) == ["features.0"]
    compiled = torch._inductor.aoti_load_package(str(compile_aoti(low, tmp_path / "m.pt2")))
    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = low.module(x), compiled(x)
    assert float((ref - out).abs().max() / ref.std()) < 0.05
