"""The LeNet-5 demo is trained at build time and must be accurate through its exported artifact, on
scikit-learn's held-out digits and on digits as people send them; images without a digit get a 4xx."""

from __future__ import annotations

import pytest
import torch

from zooserve.errors import AccuracyGateFailed
from zooserve.models import digits as D
from zooserve.models.lenet import AS_SENT_IMAGES, digits_accuracy, sent_digits
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline


def test_digits_accuracy_of_exported_artifact(build_cache, digits) -> None:
    res = build_cache("lenet5", format="aoti")
    assert res.manifest.weights == "trained-demo"
    facts = res.manifest.metadata
    model = load_bundle(res.bundle_dir).modules["model"]
    acc = digits_accuracy(model, *digits)
    assert acc >= 0.98, acc
    assert abs(acc - facts["digits_accuracy"]) < 1e-6  # the figure the build recorded
    sent = digits_accuracy(model, *sent_digits(D.as_sent_set(AS_SENT_IMAGES)))
    assert sent >= 0.95, sent
    assert abs(sent - facts["as_sent_accuracy"]) < 1e-6
    assert digits_accuracy(model, *sent_digits(D.issue_set())) >= 0.95


def test_a_request_without_a_digit_is_refused_alone(build_cache) -> None:
    pipe = make_pipeline(load_bundle(build_cache("lenet5", format="aoti").bundle_dir))
    seven = D.render_sent(7, "DejaVuSans", (120, 90), 0.6, centre=(0.3, 0.4))
    three = D.render_sent(3, "cmss10", (40, 40), 0.7, ink=255, paper=0, fmt="JPEG")
    blank = D.render_sent(0, "DejaVuSans", (64, 64), 0.5, ink=255, paper=255)
    out = run_batch(pipe, [Request(seven), Request(blank), Request(three)])
    assert [r.status for r in out] == [200, 422, 200]
    assert out[1].body["type"] == "NoDigitFound" and "no digit found" in out[1].body["message"]
    assert [r.body["predictions"][0]["label"] for r in (out[0], out[2])] == ["7", "3"]
    alone = run_batch(pipe, [Request(seven)])[0].body
    assert alone["predictions"][0]["index"] == out[0].body["predictions"][0]["index"]
    assert abs(alone["predictions"][0]["probability"] - out[0].body["predictions"][0]["probability"]) < 1e-4


def test_the_build_fails_when_the_demo_is_not_accurate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate itself: a model trained on noise cannot pass, and the build stops with the numbers."""
    from zooserve.models.lenet import LeNet5, train_on_digits

    def noise(images, labels, g, **_):  # noqa: ANN001, ANN202
        return torch.rand(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)

    monkeypatch.setattr(D, "training_frames", noise)
    monkeypatch.setattr("zooserve.models.lenet.AS_SENT_IMAGES", 50)
    with pytest.raises(AccuracyGateFailed, match=r"sklearn held-out \d+\.\d+% \(needs 98%\)"):
        train_on_digits(LeNet5(), epochs=1)
