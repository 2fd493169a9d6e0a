"""GPU path: TensorRT engines, nvJPEG batch decode, the CUDA pipeline. Skipped without CUDA
(tests/conftest.py marks every `gpu` test skipped with the reason); run on a GPU machine."""

from __future__ import annotations

import pytest
import torch

from zooserve.export.build import BuildOptions, build
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.images import DecodeLimits, decode_image_bytes, decode_jpegs_on_gpu
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def images(sample_jpegs) -> list[bytes]:
    return list(sample_jpegs.values())


def test_gpu_decode_matches_cpu_decode(images) -> None:
    gpu = decode_jpegs_on_gpu(images, torch.device("cuda"))
    for data, g in zip(images, gpu, strict=True):
        cpu = decode_image_bytes(data, DecodeLimits(3, 40_000_000, 40_000_000, None)).image
        assert g.shape == cpu.shape
        assert (g.cpu().int() - cpu.int()).abs().max() <= 2


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_tensorrt_parity_with_eager(tmp_path, images, precision: str, tol: float) -> None:
    res = build("tiny_resnet", BuildOptions(format="tensorrt", precision=precision), out=None, work=tmp_path)
    trt_pipe = make_pipeline(load_bundle(res.bundle_dir, device="cuda"))
    ts = build("tiny_resnet", BuildOptions(format="torchscript"), out=None, work=tmp_path / "ts")
    ref_pipe = make_pipeline(load_bundle(ts.bundle_dir, device="cpu"))
    got = run_batch(trt_pipe, [Request(d) for d in images])
    ref = run_batch(ref_pipe, [Request(d) for d in images])
    agree = sum(
        g.body["predictions"][0]["index"] == r.body["predictions"][0]["index"]
        for g, r in zip(got, ref, strict=True)
    )
    assert agree / len(images) >= 0.99
    for g, r in zip(got, ref, strict=True):
        for pg, pr in zip(g.body["predictions"], r.body["predictions"], strict=True):
            assert abs(pg["probability"] - pr["probability"]) <= tol


def test_cuda_pipeline_equals_cpu_pipeline(build_cache, images) -> None:
    res = build_cache("tiny_resnet", format="torchscript")
    cuda = run_batch(make_pipeline(load_bundle(res.bundle_dir, device="cuda")), [Request(d) for d in images])
    cpu = run_batch(make_pipeline(load_bundle(res.bundle_dir, device="cpu")), [Request(d) for d in images])
    for a, b in zip(cuda, cpu, strict=True):
        assert a.body["predictions"][0]["index"] == b.body["predictions"][0]["index"]
        assert abs(a.body["predictions"][0]["probability"] - b.body["predictions"][0]["probability"]) < 1e-2
