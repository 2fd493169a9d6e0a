"""Class names for each label source. ImageNet's names ship as a data file in the package."""

from __future__ import annotations

from functools import cache
from importlib import resources

from zooserve.specs import ModelSpec


@cache
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("zooserve.models").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, len(names)
    return names


def labels_for(spec: ModelSpec) -> list[str]:
    if spec.label_source == "imagenet":
        return list(imagenet_labels()[: spec.num_classes])
    if spec.label_source == "digits":
        return [str(i) for i in range(spec.num_classes)]
    return [f"class_{i}" for i in range(spec.num_classes)]
