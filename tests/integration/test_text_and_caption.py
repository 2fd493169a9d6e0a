"""BERT and Show-Attend-Tell served by the same handler: REST, gRPC, client, CLI, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from zooserve import errors
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline

pytestmark = pytest.mark.integration

TEXTS = ["short one", "a somewhat longer sentence about the weather and the markets " * 3, "x " * 700]


def _in_process(served, name: str, body: object, content_type: str = "") -> dict:
    pipe = make_pipeline(load_bundle(served.bundles[name]))
    return run_batch(pipe, [Request(body, content_type=content_type)])[0].body


def test_bert_rest_grpc_in_process_agree(served) -> None:
    for text in TEXTS:
        rest = served.client.predict("tiny_bert", text)
        grpc = served.client.predict("tiny_bert", text, grpc=True)
        assert rest == grpc
        local = _in_process(served, "tiny_bert", text.encode())
        assert [p["index"] for p in rest["predictions"]] == [p["index"] for p in local["predictions"]]
        assert abs(rest["predictions"][0]["probability"] - local["predictions"][0]["probability"]) < 1e-4
    assert served.client.predict("tiny_bert", TEXTS[2])["truncated"] is True
    assert served.client.predict("tiny_bert", {"text": TEXTS[0]})["truncated"] is False


def test_bert_concurrent_texts_batch_and_keep_order(served) -> None:
    texts = [f"sentence number {i} " * (1 + i % 7) for i in range(24)]
    alone = [served.client.predict("tiny_bert", t)["predictions"][0]["index"] for t in texts]
    with ThreadPoolExecutor(24) as pool:
        together = list(
            pool.map(lambda t: served.client.predict("tiny_bert", t)["predictions"][0]["index"], texts)
        )
    assert together == alone


@pytest.mark.parametrize(
    "body, error",
    [
        (b"", errors.EmptyBody),
        (b"\xff\xfe\xfa", errors.InvalidText),
        ({"txt": "no text key"}, errors.InvalidJSON),
    ],
)
def test_bert_bad_inputs(served, body, error) -> None:
    with pytest.raises(error):
        served.client.predict("tiny_bert", body)
    with pytest.raises(error):
        served.client.predict("tiny_bert", body, grpc=True)


def test_caption_rest_grpc_in_process_agree(served, sample_jpegs) -> None:
    data = sample_jpegs["flower.jpg"]
    rest = served.client.predict("tiny_show_attend_tell", data)
    grpc = served.client.predict("tiny_show_attend_tell", data, grpc=True)
    assert rest == grpc
    assert {"model", "weights", "caption", "tokens", "score"} <= set(rest)
    local = _in_process(served, "tiny_show_attend_tell", data)
    assert rest["tokens"] == local["tokens"] and abs(rest["score"] - local["score"]) < 1e-4


def test_caption_attention_on_request(served, sample_jpegs) -> None:
    body = served.client.predict(
        "tiny_show_attend_tell", sample_jpegs["china.jpg"], headers={"X-Attention": "1"}
    )
    assert len(body["attention"]) == len(body["tokens"])
    side = len(body["attention"][0])
    assert side == len(body["attention"][0][0]) and side > 1


def test_caption_bad_image_is_the_same_error_as_classification(served) -> None:
    with pytest.raises(errors.InvalidImage):
        served.client.predict("tiny_show_attend_tell", b"\xff\xd8\xff not a jpeg")


def _cli(served, *args: str) -> subprocess.CompletedProcess:
    ports = [
        "--port",
        str(served.cfg.ports.inference),
        "--grpc-port",
        str(served.cfg.ports.grpc_inference),
        "--key-file",
        str(served.cfg.key_file),
    ]
    return subprocess.run(
        [sys.executable, "-m", "zooserve.cli", "predict", *args, *ports],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_predict_text_and_attention_plot(served, sample_jpegs, tmp_path) -> None:
    r = _cli(served, "tiny_bert", "some text to classify", "--grpc", "--topk", "2")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["predictions"]) == 2
    img = tmp_path / "china.jpg"
    img.write_bytes(sample_jpegs["china.jpg"])
    out = tmp_path / "attention.png"
    r = _cli(served, "tiny_show_attend_tell", str(img), "--attention", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_cli_predict_bad_file_one_line(served, tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 nope")
    r = _cli(served, "tiny_resnet", str(bad))
    assert r.returncode == 2 and "InvalidImage" in r.stderr and "Traceback" not in r.stderr
