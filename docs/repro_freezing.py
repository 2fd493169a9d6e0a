"""Minimal reproducer: AOTInductor + freezing + dynamic batch silently miscompiles a convolution
whose input has ONE channel when its weight is channels_last (fp32 or bf16) or int8-quantized.

torch 2.14.1 (CPU, oneDNN), torchao 0.18 for the int8 case. No zooserve import.

    python repro_freezing.py            # table of cases
    AOTI_RUNTIME_CHECK_INPUTS=1 python repro_freezing.py   # the broken cases raise instead

Why: with dynamic shapes Inductor does not prepack the conv weight and predicts the output layout
of mkldnn._convolution_pointwise / onednn.qconv_pointwise in
torch/_inductor/mkldnn_ir.py::_prepare_convolution_fusion_create:
    if dynamic_shapes and is_contiguous_storage_and_layout(x): output_stride = contiguous
A (N, 1, H, W) input always counts as contiguous there (Inductor ignores strides of size-1 dims),
so it plans an NCHW output. At run time ATen decides differently:
  * fp32/bf16: mkldnn_conv_use_channels_last(input, weight) is true when the *weight* is
    channels_last (ATen does read the stride of the size-1 dim: (6,1,5,5) with strides
    (25,1,5,1) is channels_last), so the kernel writes NHWC;
  * int8: oneDNN qconv writes NHWC whatever the input.
The consumer reads the NHWC buffer as NCHW -> garbage (LeNet-5: 4-8 % digits accuracy).
Static shapes are fine (weight prepacked, both sides say NHWC); grad on is "fine" only because
freezing's oneDNN fusion passes then do not run at all. Related upstream history: pytorch#120873,
#121400 (introduced the contiguous rule for iC=1), #122489.
"""

import contextlib
import os
import tempfile

import torch
import torch._inductor.config as inductor_config
from torch import nn

torch.set_num_threads(2)


class Net(nn.Module):
    def __init__(self, cin: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 6, 5)
        self.fc = nn.Linear(6 * 12 * 12, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def compile_and_compare(model, x, dynamic=True, grad_off=True):
    with torch.no_grad():
        ref = model(x)
        ds = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
        ep = torch.export.export(model, (x,), dynamic_shapes=ds, strict=False)
    with tempfile.TemporaryDirectory() as d:
        grad = torch.no_grad() if grad_off else contextlib.nullcontext()
        with grad, inductor_config.patch({"freezing": True}):
            path = torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(d, "m.pt2"))
        compiled = torch._inductor.aoti_load_package(path)
        try:
            with torch.no_grad():
                out = compiled(x)
        except Exception as e:  # AOTI_RUNTIME_CHECK_INPUTS=1 turns the miscompile into this
            return "raises: " + str(e).splitlines()[0][:70]
    err = ((out.float() - ref.float()).abs().max() / ref.float().std()).item()
    return f"max|diff|/std = {err:.3g}  {'WRONG' if err > 0.1 else 'ok'}"


def fp_model(dtype, channels_last, cin=1):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return Net(cin).eval().to(dtype=dtype, memory_format=fmt)


def int8_model(x):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(0)
    ds = ({0: torch.export.Dim("batch", min=1, max=64)},)
    with torch.no_grad():
        gm = torch.export.export(Net().eval(), (x,), dynamic_shapes=ds, strict=False).module()
        q = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(gm, q)
        prepared(x)
        gm = convert_pt2e(prepared)
        # Inductor's int8 patterns want CompositeImplicit ops decomposed (conv2d -> convolution)
        table = {
            op: fn
            for op, fn in torch.export.default_decompositions().items()
            if torch._export.utils._is_cia_op(op)
        }
        return (
            torch.export.export(gm, (x,), dynamic_shapes=ds, strict=False).run_decompositions(table).module()
        )


if __name__ == "__main__":
    x = torch.randn(8, 1, 16, 16)
    bf16 = torch.bfloat16
    cases = [
        ("fp32, weight channels_last, dynamic batch", lambda: (fp_model(torch.float32, True), x, True, True)),
        ("bf16, weight channels_last, dynamic batch", lambda: (fp_model(bf16, True), x.to(bf16), True, True)),
        (
            "fp32, weight contiguous,    dynamic batch",
            lambda: (fp_model(torch.float32, False), x, True, True),
        ),
        (
            "fp32, weight channels_last, static batch ",
            lambda: (fp_model(torch.float32, True), x, False, True),
        ),
        (
            "fp32, weight channels_last, grad on      ",
            lambda: (fp_model(torch.float32, True), x, True, False),
        ),
        (
            "fp32, channels_last, 3 input channels    ",
            lambda: (fp_model(torch.float32, True, 3), torch.randn(8, 3, 16, 16), True, True),
        ),
    ]
    try:
        import torchao  # noqa: F401

        cases.append(("int8 PT2E (contiguous),   dynamic batch", lambda: (int8_model(x), x, True, True)))
    except ImportError:
        print("torchao not installed: int8 case skipped")
    print(f"torch {torch.__version__}")
    for name, make in cases:
        model, inp, dyn, grad_off = make()
        print(f"{name}: {compile_and_compare(model, inp, dyn, grad_off)}", flush=True)
