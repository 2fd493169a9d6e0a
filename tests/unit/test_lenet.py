"""The LeNet-5 demo is trained at build time and must be accurate through its exported artifact."""

from __future__ import annotations

from zooserve.models.lenet import digits_accuracy
from zooserve.runtime.bundle import load_bundle


def test_digits_accuracy_of_exported_artifact(build_cache, digits) -> None:
    res = build_cache("lenet5", format="aoti")
    assert res.manifest.weights == "trained-demo"
    model = load_bundle(res.bundle_dir).modules["model"]
    acc = digits_accuracy(model, *digits)
    assert acc >= 0.97, acc
    assert abs(acc - res.manifest.metadata["digits_accuracy"]) < 1e-6  # the figure the build recorded
