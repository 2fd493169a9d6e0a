"""The registry is the contract: every named model is there, each family has a tiny variant."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zooserve.errors import UnknownModel
from zooserve.export.formats import FORMATS
from zooserve.models import registry
from zooserve.runtime.tasks import PIPELINES
from zooserve.specs import Format, Task

CONTRACT_NAMES = [
    "lenet5",
    "alexnet",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "densenet121",
    "bert",
    "show_attend_tell",
]


def test_every_contract_name_is_registered() -> None:
    assert set(CONTRACT_NAMES) <= set(registry.names())


@pytest.mark.parametrize("spec", registry.list_models(), ids=lambda s: s.name)
def test_entry_is_complete(spec) -> None:
    assert spec.task in PIPELINES and set(spec.formats) <= set(FORMATS)
    assert callable(spec.prepare)
    if spec.task == Task.CLASSIFY:
        assert spec.input is not None and len(spec.input.mean) == spec.input.channels == len(spec.input.std)
        assert spec.num_classes in (10, 1000)
    assert spec.batch.workers * spec.batch.threads <= 2, "workers x threads must fit the 2 cores"


def test_each_cnn_family_has_a_tiny_variant() -> None:
    full = {s.family for s in registry.list_models(task=Task.CLASSIFY, tiny=False)} - {"lenet"}
    tiny = {s.family for s in registry.list_models(task=Task.CLASSIFY, tiny=True)}
    assert full <= tiny


def test_unknown_model_is_a_typed_error() -> None:
    with pytest.raises(UnknownModel, match="zooserve models"):
        registry.get("resnet9000")


def test_models_command_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zooserve.cli", "models"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    for name in ("lenet5", "resnet50", "vgg16_bn", "bert", "show_attend_tell"):
        assert name in out
    assert "tiny_vgg" not in out  # tiny variants only with --all
    assert "11.7M" in out  # resnet18's parameter count, computed on the meta device


def test_every_format_and_task_has_its_table_entry() -> None:
    """Adding a Format or a Task without its compiler/loader or pipeline fails here."""
    assert set(FORMATS) == set(Format)
    assert set(PIPELINES) == set(Task)
