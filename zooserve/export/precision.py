"""Reduced-precision builds (``--precision bf16|int8``) with a build-time accuracy gate.

Both precisions keep the artifact's contract: float32 NCHW in, float32 logits out, so the runtime
and handlers do not change.

- bf16: the module runs in bfloat16 behind casts (needs native bf16: avx512_bf16 / AMX).
- int8: PyTorch 2 export quantization (torchao's PT2E ``X86InductorQuantizer``: per-channel
  weights, static activation ranges calibrated on images), lowered by AOTInductor to oneDNN int8.

The gate compares the reduced model with the fp32 one on a fixed evaluation set and fails the
build (``AccuracyGateFailed``, with the numbers) rather than shipping a degraded model.
"""

from __future__ import annotations

import copy
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zooserve.errors import AccuracyGateFailed, UnsupportedFormat
from zooserve.export.aoti import compile_aoti, dynamic_shapes, load_aoti
from zooserve.export.calibration import calibration_images, evaluation_set, to_batch
from zooserve.specs import ExportTarget, Format, ModelSpec, Precision, Prepared, Task, Weights

MIN_AGREEMENT = 0.99  # top-1 agreement with fp32 (ImageNet-class models)
MAX_DIGITS_DROP = 0.005  # trained LeNet-5 demo: accuracy drop on its held-out sets (0.5 points)
MIN_MARGIN = 0.05  # fp32 top1 - top2, in logit std, for an image's top-1 to count as decided
MIN_DECIDED = 50  # of the 200 evaluation images
# measured on ResNet-50 AOTI (docs/precision.md): channels_last is how oneDNN runs bf16/int8 convs
CHANNELS_LAST = {Precision.BF16: True, Precision.INT8: False}


def apply_precision(
    spec: ModelSpec, prepared: Prepared, precision: Precision, fmt: Format, calibration: Path | None = None
) -> Prepared:
    """``prepared`` with its targets in ``precision`` (float32 in and out), or a gate failure."""
    if fmt == Format.TENSORRT:
        return prepared  # TensorRT applies its own precision at compile time
    if precision == Precision.FP16:
        raise UnsupportedFormat("--precision fp16 is for TensorRT on a GPU; on CPU use bf16 or int8")
    if spec.task != Task.CLASSIFY:
        raise UnsupportedFormat(f"--precision {precision} applies to image classifiers, not {spec.task}")
    channels_last = CHANNELS_LAST[precision]
    info: dict[str, Any] = {"dtype": precision, "channels_last": channels_last}
    if precision == Precision.BF16:
        check_bf16()
        targets = {k: bf16_target(t, channels_last) for k, t in prepared.targets.items()}
    else:
        images = calibration_images(spec, calibration)
        info |= {
            "quantizer": "torchao X86InductorQuantizer (PT2E, per-channel weights, static)",
            "calibration": str(calibration) if calibration else "default",
            "calibration_images": len(images),
        }
        targets = {k: int8_target(spec, t, images, channels_last) for k, t in prepared.targets.items()}
    reference = prepared.targets["model"].module
    gate = run_gate(spec, prepared, reference, targets["model"].module)
    if fmt == Format.AOTI:  # what ships is the compiled graph: gate that too
        gate = artifact_gate(spec, prepared, reference, targets["model"], precision) | {"eager": gate}
    metadata = {**prepared.metadata, "precision": info, "precision_gate": gate}
    return replace(prepared, targets=targets, metadata=metadata)


# ---- bf16 ---------------------------------------------------------------------------------------
def bf16_supported() -> bool:
    """Native bf16 (avx512_bf16 or AMX): without it oneDNN emulates bf16 and is slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
            # mkldnn reports avx512-core emulation as "supported" too: require the native instruction
            return not flags or any(f in flags for f in ("avx512_bf16", "amx_bf16"))
    except (AttributeError, RuntimeError):
        pass
    return False


def check_bf16() -> None:
    if not bf16_supported():
        raise UnsupportedFormat(
            "--precision bf16 needs a CPU with native bfloat16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo); "
            "this one has none: use fp32 or int8"
        )


class CastWrapper(nn.Module):
    """float32 in/out around a module that runs in ``dtype`` (the runtime keeps feeding fp32)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(dtype=dtype, memory_format=fmt).eval()
        if channels_last:
            contiguous_single_channel_convs(self.module)
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x).float()


def bf16_target(target: ExportTarget, channels_last: bool) -> ExportTarget:
    module = CastWrapper(copy.deepcopy(target.module), torch.bfloat16, channels_last)
    return replace(target, module=module)


# ---- torch 2.14 workaround: convolutions with one input channel --------------------------------
# With freezing and a dynamic batch, Inductor (torch/_inductor/mkldnn_ir.py,
# _prepare_convolution_fusion_create) plans an NCHW output for a conv whose input looks
# contiguous, and an (N, 1, H, W) input always does (it ignores the stride of a size-1 dim).
# ATen's kernels decide otherwise: the fp32/bf16 oneDNN conv writes NHWC when its *weight* is
# channels_last, oneDNN's int8 qconv always writes NHWC. The next kernel then reads the buffer with
# the wrong strides (LeNet-5: 4 % digits accuracy). Reproducer: docs/repro_freezing.py.
def single_channel_convs(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 1]


def contiguous_single_channel_convs(module: nn.Module) -> list[str]:
    """Plain NCHW weights for the convs that read one channel (ATen then writes NCHW, as Inductor
    expects). ``.contiguous()`` is a no-op on a C=1 channels_last weight, hence the clone."""
    names = single_channel_convs(module)
    for name in names:
        conv = module.get_submodule(name)
        conv.weight.data = conv.weight.data.clone(memory_format=torch.contiguous_format)
    return names


# ---- int8 ---------------------------------------------------------------------------------------
def _pt2e() -> tuple[Callable[..., Any], Callable[..., Any], Any]:
    try:  # optional dependency, only for int8 builds
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:  # torch 2.14 moved PT2E quantization out of torch.ao into torchao
        raise UnsupportedFormat(f"--precision int8 needs torchao (pip install torchao==0.18): {e}") from None
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    return prepare_pt2e, convert_pt2e, quantizer


def split_reused_modules(gm: torch.fx.GraphModule) -> int:
    """torchvision reuses one ``nn.ReLU`` per block (ResNet's Bottleneck calls ``self.relu`` 3x).
    Non-strict export leaves ``source_fn_stack`` empty, so the quantizer groups nodes by module
    name and gets one partition with several outputs ("Input partition has more than one output
    node"). Renaming each call of such a single-op module makes every call its own partition."""
    groups: dict[str, list[torch.fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            groups[list(stack.values())[-1][0]].append(node)
    split = 0
    for nodes in groups.values():
        if len(nodes) > 1 and len({n.target for n in nodes}) == 1:
            for i, node in enumerate(nodes):
                stack = dict(node.meta["nn_module_stack"])
                key = list(stack)[-1]
                fqn, cls = stack[key]
                stack[key] = (f"{fqn}@{i}", cls)
                node.meta["nn_module_stack"] = stack
            split += 1
    return split


@torch.no_grad()
def int8_target(
    spec: ModelSpec, target: ExportTarget, images: list[torch.Tensor], channels_last: bool
) -> ExportTarget:
    prepare_pt2e, convert_pt2e, quantizer = _pt2e()
    for name in single_channel_convs(target.module):  # qconv on 1 channel: see above; stays fp32
        quantizer.set_module_name_qconfig(name, None)

    example = target.example_inputs[0]
    # export with the target's dynamic dims so no batch/size gets baked into the quantized graph
    gm = torch.export.export(
        target.module.eval(), target.example_inputs, dynamic_shapes=dynamic_shapes(target), strict=False
    ).module()
    split_reused_modules(gm)
    prepared = prepare_pt2e(gm, quantizer)
    side = (example.shape[-2], example.shape[-1])
    for start in range(0, len(images), 16):
        batch = to_batch(spec, images[start : start + 16], side)
        prepared(batch.contiguous(memory_format=torch.channels_last) if channels_last else batch)
    converted = lowerable(convert_pt2e(prepared), target)
    # compile_aoti calls .eval(), which PT2E graphs refuse; the graph was exported in eval mode
    converted.eval = converted.train = lambda *_: converted  # type: ignore[method-assign]
    return replace(target, module=converted)


def lowerable(gm: torch.fx.GraphModule, target: ExportTarget) -> torch.fx.GraphModule:
    """The converted graph in the form Inductor's int8 patterns match (what torchao's
    ``lower_pt2e_quantized_to_x86`` does, but keeping the dynamic dims): CompositeImplicit ops
    decomposed (conv2d -> convolution) and ``aten.t`` as ``permute``. Compiled as it comes out of
    ``convert_pt2e``, AOTInductor ran fp32 convolutions between quantize/dequantize kernels
    (slower than fp32); in this form its freezing pass fuses dequant-conv-quant into oneDNN qconv."""
    table = torch.export.default_decompositions()
    for op in list(table):
        if not torch._export.utils._is_cia_op(op):
            del table[op]
    ep = torch.export.export(gm, target.example_inputs, dynamic_shapes=dynamic_shapes(target), strict=False)
    out = ep.run_decompositions(table).module()
    for node in list(out.graph.nodes):
        if node.target == torch.ops.aten.t.default:
            with out.graph.inserting_before(node):
                perm = out.graph.call_function(torch.ops.aten.permute.default, (node.args[0], [1, 0]))
            node.replace_all_uses_with(perm)
            out.graph.erase_node(node)
    out.recompile()
    return out


# ---- the gate -----------------------------------------------------------------------------------
@torch.no_grad()
def _logits(model: Callable[..., torch.Tensor], x: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    return torch.cat([model(x[i : i + chunk]).float().flatten(1) for i in range(0, len(x), chunk)])


def run_gate(
    spec: ModelSpec, prepared: Prepared, reference: Callable[..., Any], candidate: Callable[..., Any]
) -> dict[str, Any]:
    x, labels = evaluation_set(spec)
    drop = prepared.weights == Weights.TRAINED_DEMO and labels is not None
    return check_gate(_logits(reference, x), _logits(candidate, x), labels if drop else None)


def artifact_gate(
    spec: ModelSpec,
    prepared: Prepared,
    reference: Callable[..., Any],
    target: ExportTarget,
    precision: Precision,
) -> dict[str, Any]:
    """The gate on the AOTInductor artifact, compiled exactly as the build will compile it.
    Needed: with Inductor's freezing active, LeNet-5's bf16 and int8 graphs once compiled to wrong
    numbers (8 % agreement) while their eager modules passed (the single-channel conv bug above)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_aoti(target, Path(tmp) / "gate.pt2", precision)
        compiled = load_aoti(path, torch.device("cpu"))
        return run_gate(spec, prepared, reference, compiled) | {"checked": "compiled artifact"}


def check_gate(ref: torch.Tensor, out: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Top-1 agreement (>= 99 %) or, given true labels, accuracy drop (<= 0.5 points).

    Agreement counts the images where fp32's own top-1 is decided: top1 - top2 >= 0.05 logit std.
    Random-weight ImageNet nets give near-tied logits (ResNet-50: median margin 0.12 std, bf16
    error ~0.02 std), so a flip of a tie is noise, not an accuracy loss. The bar is fixed and
    independent of the candidate, so a noisier model cannot exclude more images."""
    ref_top, out_top = ref.argmax(1), out.argmax(1)
    two = ref.topk(2, dim=1).values
    margin = (two[:, 0] - two[:, 1]) / ref.std(dim=1).clamp_min(1e-12)
    decided = margin >= MIN_MARGIN
    agree = ref_top == out_top
    gate: dict[str, Any] = {
        "images": len(ref),
        "top1_agreement_all": round(float(agree.float().mean()), 4),
        "decided_images": int(decided.sum()),
        "fp32_margin_median_std": round(float(margin.median()), 3),  # (top1 - top2) / logit std
        "max_abs_logit_diff": round(float((ref - out).abs().max()), 5),
    }
    if labels is not None:
        acc_ref = float((ref_top == labels).float().mean())
        acc_out = float((out_top == labels).float().mean())
        gate |= {
            "metric": "accuracy_drop",
            "threshold": MAX_DIGITS_DROP,
            "fp32_accuracy": round(acc_ref, 4),
            "accuracy": round(acc_out, 4),
            "accuracy_drop": round(acc_ref - acc_out, 4),
        }
        passed = acc_ref - acc_out <= MAX_DIGITS_DROP + 1e-9
        detail = f"accuracy {acc_out:.2%} vs fp32 {acc_ref:.2%} (drop allowed {MAX_DIGITS_DROP:.1%})"
    else:
        if int(decided.sum()) < MIN_DECIDED:
            raise AccuracyGateFailed(
                f"accuracy gate cannot be assessed: the fp32 model decides its top-1 on only "
                f"{int(decided.sum())} of {len(ref)} evaluation images (needs {MIN_DECIDED})"
            )
        value = round(float(agree[decided].float().mean()), 4)
        gate |= {"metric": "top1_agreement", "threshold": MIN_AGREEMENT, "top1_agreement": value}
        passed = value >= MIN_AGREEMENT
        detail = (
            f"top-1 agreement with fp32 {value:.2%} on {int(decided.sum())} decided images "
            f"(needs {MIN_AGREEMENT:.0%}; {gate['top1_agreement_all']:.2%} on all {len(ref)})"
        )
    if not passed:
        raise AccuracyGateFailed(
            f"accuracy gate failed: {detail}; max |logit diff| {gate['max_abs_logit_diff']}, "
            f"fp32 median margin {gate['fp32_margin_median_std']} std"
        )
    return gate | {"passed": True}
