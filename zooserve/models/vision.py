"""Image classifiers: torchvision's architectures (so their state_dicts load unchanged), tiny
variants that share every code path, and the ``prepare`` step that turns a spec into exportable
modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import densenet, resnet, vgg

from zooserve.models.labels import labels_for
from zooserve.models.lenet import LeNet5, train_on_digits
from zooserve.models.weights import load_state_dict_strict
from zooserve.specs import ExportTarget, ModelSpec, Prepared, Weights

MAX_BATCH = 256


def build_torchvision(spec: ModelSpec) -> nn.Module:
    """Full-size model from torchvision's constructor, random weights."""
    kwargs: dict[str, Any] = {"weights": None, "num_classes": spec.num_classes}
    if spec.family == "googlenet":
        # no aux heads (training only); transform_input as torchvision's pretrained weights expect
        kwargs |= {"aux_logits": False, "init_weights": True, "transform_input": True}
    return torchvision.models.get_model(spec.options["arch"], **kwargs)


def build_tiny(spec: ModelSpec) -> nn.Module:
    """Few-channel versions of the torchvision classes: same forward(), same dense conversion."""
    arch, n = spec.options["arch"], spec.num_classes
    if arch == "tiny_vgg":
        m = vgg.VGG(vgg.make_layers([8, "M", 16, "M", 16, 16, "M", 32, "M", 32, "M"], batch_norm=True), n)
        return _shrink_classifier(m, in_features=32 * 2 * 2, hidden=64, pool=2)
    if arch == "tiny_alexnet":
        m = torchvision.models.AlexNet(num_classes=n)
        m.features = nn.Sequential(
            nn.Conv2d(3, 8, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )  # fmt: skip
        return _shrink_classifier(m, in_features=16 * 2 * 2, hidden=64, pool=2)
    if arch == "tiny_resnet":
        return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=n)
    if arch == "tiny_resnext":
        return resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], num_classes=n, groups=4, width_per_group=4)
    if arch == "tiny_densenet":
        return densenet.DenseNet(
            growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=n
        )
    if arch == "tiny_googlenet":
        return torchvision.models.GoogLeNet(num_classes=n, aux_logits=False, init_weights=False)
    raise KeyError(arch)


def _shrink_classifier(m: nn.Module, in_features: int, hidden: int, pool: int) -> nn.Module:
    """VGG/AlexNet hard-code a 4096-wide head; tiny variants keep its structure at a smaller width."""
    n = m.classifier[-1].out_features
    m.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
    m.classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n),
    )  # fmt: skip
    return m


def build_module(spec: ModelSpec) -> nn.Module:
    if spec.family == "lenet":
        return LeNet5(spec.num_classes)
    return build_tiny(spec) if spec.tiny else build_torchvision(spec)


def load_classifier(spec: ModelSpec, weights: Path | None) -> tuple[nn.Module, Weights, dict[str, Any]]:
    """The eval-mode module with its weights, the weights status and build facts to record."""
    torch.manual_seed(0)  # random weights are reproducible
    model = build_module(spec)
    facts: dict[str, Any] = {}
    if weights is not None:
        load_state_dict_strict(model, weights, ignore=spec.options.get("ignore_keys", ()))
        status = Weights.USER
    elif spec.default_weights == Weights.TRAINED_DEMO:
        facts = train_on_digits(model)
        status = Weights.TRAINED_DEMO
    else:
        status = Weights.RANDOM
    return model.eval(), status, facts


def prepare_classifier(spec: ModelSpec, weights: Path | None = None, **_: Any) -> Prepared:
    """One target, ``model``, with a dynamic batch dimension (``--dense`` adds its FC-to-conv
    form at export time: ``zooserve.export.dense``)."""
    model, status, facts = load_classifier(spec, weights)
    assert spec.input is not None
    side, ch = spec.input.size, spec.input.channels
    target = ExportTarget(model, (torch.randn(2, ch, side, side),), ({0: ("batch", 1, MAX_BATCH)},))
    return Prepared(targets={"model": target}, weights=status, labels=labels_for(spec), metadata=facts)
