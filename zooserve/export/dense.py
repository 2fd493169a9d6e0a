"""FC-to-conv conversion for dense evaluation, as in the VGG paper (Simonyan & Zisserman, sec. 3.2).

The converted network is fully convolutional: at the native input size its scores equal the
original network's; at larger inputs it returns a class score map (N, classes, h, w), which dense
evaluation averages spatially.

- ``vgg`` family (AlexNet, VGG) and LeNet-5: the first Linear becomes a k x k conv over the last
  feature map (k = the adaptive pool's output, or LeNet's 5x5), the following Linears 1x1 convs.
- GAP + FC nets (GoogLeNet, ResNet/ResNeXt, DenseNet): the classifier becomes a 1x1 conv applied
  *before* global pooling; averaging the map equals pool-then-FC because both are linear.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from zooserve.specs import ExportTarget, ModelSpec


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, linear.out_features, kernel, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel, kernel))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def convert_head(classifier: nn.Sequential, in_channels: int, kernel: int) -> nn.Sequential:
    """Replace every Linear of an FC head by its conv equivalent; other layers stay as they are."""
    layers: list[nn.Module] = []
    channels, k = in_channels, kernel
    for layer in classifier:
        if isinstance(layer, nn.Linear):
            layers.append(linear_to_conv(layer, channels, k))
            channels, k = layer.out_features, 1
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


class FullyConvolutional(nn.Module):
    """``trunk`` (feature extractor) followed by a conv ``head``: image -> class score map."""

    def __init__(self, trunk: nn.Module, head: nn.Module, input_transform: nn.Module | None = None) -> None:
        super().__init__()
        self.input_transform = input_transform or nn.Identity()
        self.trunk = trunk
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.input_transform(x)))


class _DenseNetTrunk(nn.Module):
    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features(x))


class _GoogLeNetInput(nn.Module):
    """torchvision's GoogLeNet re-normalises its input when transform_input is set (its pretrained
    weights expect it): ImageNet normalisation -> the (x - 0.5) / 0.5 the weights were trained on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * std + mean - 0.5) / 0.5


def _resnet_trunk(m: nn.Module) -> nn.Module:
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)


def _googlenet_trunk(m: nn.Module) -> nn.Module:
    names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b"]  # fmt: skip
    return nn.Sequential(*(getattr(m, n) for n in names))


def to_fully_convolutional(model: nn.Module, family: str) -> FullyConvolutional:
    """The FC-to-conv version of ``model`` (weights shared by copy, original left untouched)."""
    if family == "vgg":  # AlexNet and VGG: features -> AdaptiveAvgPool(k) -> flatten -> classifier
        k = _pool_side(model.avgpool)
        in_ch = model.classifier[_first_linear(model.classifier)].in_features // (k * k)
        return FullyConvolutional(model.features, convert_head(model.classifier, in_ch, k))
    if family == "lenet":
        in_ch = model.features[3].out_channels
        k = int(round((model.classifier[0].in_features // in_ch) ** 0.5))
        return FullyConvolutional(model.features, convert_head(model.classifier, in_ch, k))
    if family == "resnet":
        return FullyConvolutional(
            _resnet_trunk(model), convert_head(nn.Sequential(model.fc), model.fc.in_features, 1)
        )
    if family == "densenet":
        head = convert_head(nn.Sequential(model.classifier), model.classifier.in_features, 1)
        return FullyConvolutional(_DenseNetTrunk(model.features), head)
    if family == "googlenet":
        head = convert_head(nn.Sequential(model.dropout, model.fc), model.fc.in_features, 1)
        transform = _GoogLeNetInput() if model.transform_input else None
        return FullyConvolutional(_googlenet_trunk(model), head, transform)
    raise ValueError(f"FC-to-conv conversion is not defined for family {family!r}")


def _pool_side(pool: nn.Module) -> int:
    size = pool.output_size
    side = size if isinstance(size, int) else size[0]
    assert side is not None and (isinstance(size, int) or size[0] == size[1]), size
    return int(side)


def _first_linear(seq: nn.Sequential) -> int:
    return next(i for i, layer in enumerate(seq) if isinstance(layer, nn.Linear))


def scores_from_map(out: torch.Tensor) -> torch.Tensor:
    """Logits from either a plain (N, C) output or a dense (N, C, h, w) score map."""
    return out.mean(dim=(2, 3)) if out.ndim == 4 else out


def min_dense_side(dense: nn.Module, channels: int, native: int) -> int:
    """Smallest input side whose score map is at least 2x2: torch.export specialises a size-1 map,
    so the dense artifact's dynamic range starts here (the plain model covers the native size)."""
    side = native
    with torch.no_grad():
        while dense(torch.zeros(1, channels, side, side)).shape[-1] < 2:
            side += 8
    return side


def dense_target(target: ExportTarget, spec: ModelSpec) -> tuple[ExportTarget, dict[str, int]]:
    """The FC-to-conv form of a prepared classifier: dynamic batch, height and width, returning
    class score maps; and the size range it covers (recorded in the manifest)."""
    assert spec.input is not None
    side, ch = spec.input.size, spec.input.channels
    fcn = to_fully_convolutional(target.module, spec.family).eval()
    lo = min_dense_side(fcn, ch, side)
    batch = target.dynamic[0][0]
    dyn = {0: batch, 2: ("height", lo, 4 * side), 3: ("width", lo, 4 * side)}
    example = (torch.randn(2, ch, lo + 8, lo + 16),)
    return ExportTarget(fcn, example, (dyn,)), {"dense_min_side": lo, "dense_max_side": 4 * side}


def dense_scales(spec: ModelSpec, min_side: int) -> tuple[int, ...]:
    """Shorter-side scales for dense evaluation: 256/384/512 for ImageNet models, as the VGG paper."""
    assert spec.input is not None
    q = max(spec.input.resize or spec.input.size, min_side)
    return (q, round(q * 1.5), q * 2)
