"""Runtime stages without a server: decode, batched preprocessing, evaluation modes, per-request errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from zooserve import errors
from zooserve.manifest import ServingOptions
from zooserve.models.preprocess import normalize, resize_batch
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.images import DecodeLimits, decode_image_bytes, image_bytes
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline
from zooserve.specs import InputSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from make_bad_inputs import image_cases  # noqa: E402

CASES = image_cases()
MAX_PIXELS = ServingOptions().max_pixels
EXACT = DecodeLimits(3, MAX_PIXELS, MAX_PIXELS, None)  # torchvision's full-size decode
SPEC = InputSpec(size=224, resize=256)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decode_corpus(case) -> None:
    request = Request(body=case.data, content_type=case.content_type)
    if case.status is None:
        img = decode_image_bytes(image_bytes(request), EXACT).image
        assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3
    else:
        with pytest.raises(errors.RequestError) as exc:
            decode_image_bytes(image_bytes(request), EXACT)
        assert (exc.value.status, exc.value.type) == (case.status, case.error_type)


def test_decoded_pixels_match_pil(sample_jpegs) -> None:
    import io

    import numpy as np
    from PIL import Image

    data = sample_jpegs["china.jpg"]
    ours = decode_image_bytes(data, EXACT).image.permute(1, 2, 0).numpy().astype(int)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(ours - pil).max() <= 2  # libjpeg versions may round differently


def test_json_and_text_bodies_are_refused_for_images() -> None:
    for body in ({"text": "x"}, "some text"):
        with pytest.raises(errors.UnsupportedMediaType):
            image_bytes(Request(body=body))


def test_batched_resize_equals_torchvision_per_image() -> None:
    torch.manual_seed(0)
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        for h, w in ((300, 400), (256, 256), (300, 400), (500, 260))
    ]
    ref_t = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    ours = resize_batch(images, SPEC)
    assert ours.shape == (4, 3, 224, 224)
    for img, out in zip(images, ours, strict=True):
        assert torch.equal(out, ref_t(img))


def test_normalize_equals_torchvision() -> None:
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ref = v2.Normalize(SPEC.mean, SPEC.std)(x.float() / 255)
    torch.testing.assert_close(normalize(x, SPEC), ref)


# ---- pipelines over a real exported model --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pipeline(build_cache):
    return make_pipeline(load_bundle(build_cache("tiny_resnet", format="torchscript").bundle_dir))


def _encode_jpeg(seed: int, size: tuple[int, int] = (90, 120)) -> bytes:
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(seed)
    return bytes(encode_jpeg(torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)).numpy())


def test_bad_requests_do_not_change_batch_mates(tiny_pipeline) -> None:
    good = [_encode_jpeg(i) for i in range(3)]
    alone = [run_batch(tiny_pipeline, [Request(g)])[0] for g in good]
    mixed = run_batch(
        tiny_pipeline, [Request(good[0]), Request(b""), Request(good[1]), Request(b"junk"), Request(good[2])]
    )
    assert [r.status for r in mixed] == [200, 400, 200, 400, 200]
    assert mixed[1].body["type"] == "EmptyBody" and mixed[3].body["type"] == "InvalidImage"
    for a, m in zip(alone, [mixed[0], mixed[2], mixed[4]], strict=True):
        for pa, pm in zip(a.body["predictions"], m.body["predictions"], strict=True):
            assert pa["index"] == pm["index"] and abs(pa["probability"] - pm["probability"]) < 1e-4


def test_response_shape_and_topk(tiny_pipeline) -> None:
    r = run_batch(
        tiny_pipeline, [Request(_encode_jpeg(0)), Request(_encode_jpeg(0), headers={"x-topk": "2"})]
    )
    body = r[0].body
    assert set(body) == {"model", "weights", "predictions"} and body["weights"] == "random"
    probs = [p["probability"] for p in body["predictions"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert {"index", "label", "probability"} == set(body["predictions"][0])
    assert len(r[1].body["predictions"]) == 2
    bad = run_batch(tiny_pipeline, [Request(_encode_jpeg(0), headers={"x-topk": "0"})])[0]
    assert bad.status == 400 and bad.body["type"] == "InvalidParameter"


def test_model_failure_is_a_server_error_not_a_client_error(tiny_pipeline) -> None:
    original = tiny_pipeline.model
    tiny_pipeline.model = lambda x: (_ for _ in ()).throw(RuntimeError("boom"))
    try:
        r = run_batch(tiny_pipeline, [Request(_encode_jpeg(0))])[0]
    finally:
        tiny_pipeline.model = original
    assert r.status == 500 and r.body["type"] == "InferenceFailed"


def test_pixel_budget_splits_the_batch(tiny_pipeline) -> None:
    budget = tiny_pipeline.batch_pixels
    tiny_pipeline.batch_pixels = 90 * 120 + 1  # one image fits, two do not
    try:
        rs = run_batch(tiny_pipeline, [Request(_encode_jpeg(i)) for i in range(3)])
    finally:
        tiny_pipeline.batch_pixels = budget
    assert [r.status for r in rs] == [200, 200, 200]


def test_tencrop_equals_torchvision_tencrop(build_cache) -> None:
    res = build_cache("tiny_resnet", format="torchscript", evaluation="tencrop")
    bundle = load_bundle(res.bundle_dir)
    pipe = make_pipeline(bundle)
    data = [_encode_jpeg(5, (100, 140)), _encode_jpeg(6, (120, 90))]
    got = pipe.forward(pipe.preprocess([pipe.decode(Request(d)) for d in data]))
    spec = pipe.spec
    for d, probs in zip(data, got, strict=True):
        img = v2.CenterCrop(spec.resize)(
            v2.Resize(spec.resize, antialias=True)(decode_image_bytes(d, EXACT).image)
        )
        crops = torch.stack(v2.TenCrop(spec.size)(img))
        ref = torch.softmax(bundle.modules["model"](normalize(crops, spec)), 1).mean(0)
        torch.testing.assert_close(probs, ref, rtol=1e-5, atol=1e-6)


def test_dense_mode_averages_scales_and_flips(build_cache) -> None:
    res = build_cache("tiny_vgg", format="aoti", dense=True)
    bundle = load_bundle(res.bundle_dir)
    pipe = make_pipeline(bundle)
    assert pipe.evaluation == "dense" and pipe.scales == (96, 144, 192) and pipe.flip
    data = _encode_jpeg(7, (150, 200))
    got = pipe.forward(pipe.preprocess([pipe.decode(Request(data))]))[0]
    img = decode_image_bytes(data, EXACT).image
    ref = 0
    for q in pipe.scales:
        x = normalize(v2.CenterCrop(q)(v2.Resize(q, antialias=True)(img))[None], pipe.spec)
        for v in (x, x.flip(3)):
            ref = ref + torch.softmax(bundle.modules["dense"](v).mean((2, 3)), 1)[0] / 6
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
