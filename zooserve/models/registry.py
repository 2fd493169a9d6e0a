"""The single list of models. Build, archive, handlers, tests and benchmarks all read it.

Adding a model is one ``_register`` call: name, task, family, ``prepare`` (registry entry ->
exportable modules), input spec, labels, batching. Families keep heavy optional imports
(transformers) inside the functions that need them, so listing the registry stays cheap.
"""

from __future__ import annotations

from typing import Any

from zooserve.errors import UnknownModel
from zooserve.models.bert import prepare_bert
from zooserve.models.show_attend_tell import prepare_captioner
from zooserve.models.vision import prepare_classifier
from zooserve.specs import BatchConfig, InputSpec, ModelSpec, Task, Weights

_REGISTRY: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    assert spec.name not in _REGISTRY, spec.name
    _REGISTRY[spec.name] = spec


def get(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModel(
            f"unknown model {name!r}; `zooserve models` lists the {len(_REGISTRY)} known ones"
        ) from None


def list_models(task: Task | None = None, tiny: bool | None = None) -> list[ModelSpec]:
    return [
        s for s in _REGISTRY.values() if (task is None or s.task == task) and (tiny is None or s.tiny == tiny)
    ]


def names(**filters: Any) -> list[str]:
    return [s.name for s in list_models(**filters)]


# ---- image classification ----------------------------------------------------------------------
IMAGENET = InputSpec(size=224, resize=256)
# big models: TorchServe holds a lone request for the whole maxBatchDelay (0 means its 100 ms
# default), so 1 ms keeps concurrency-1 latency near the model's; under load the queue refills anyway
_BIG = BatchConfig(batch_size=8, max_batch_delay_ms=1)
_TINY_BATCH = BatchConfig(batch_size=8, max_batch_delay_ms=20, threads=1)

_register(
    ModelSpec(
        name="lenet5",
        task=Task.CLASSIFY,
        family="lenet",
        prepare=prepare_classifier,
        description="LeNet-5, trained at build time on scikit-learn's digits and digits rendered from fonts",
        # framed as MNIST frames digits (20 px box, centre of mass); mean/std of the framed training set
        input=InputSpec(size=32, channels=1, mean=(0.09,), std=(0.23,), ink_box=20),
        num_classes=10,
        label_source="digits",
        dense=True,
        default_weights=Weights.TRAINED_DEMO,
        batch=BatchConfig(batch_size=32, max_batch_delay_ms=2, threads=1),
    )
)

# name: (family, description)
_TORCHVISION = {
    "alexnet": ("vgg", "AlexNet (Krizhevsky et al. 2012)"),
    **{
        f"vgg{d}{bn}": ("vgg", f"VGG-{d}{' with batch norm' if bn else ''} (Simonyan & Zisserman 2014)")
        for d in (11, 13, 16, 19)
        for bn in ("", "_bn")
    },
    "googlenet": ("googlenet", "GoogLeNet / Inception v1 (Szegedy et al. 2014)"),
    **{f"resnet{d}": ("resnet", f"ResNet-{d} (He et al. 2015)") for d in (18, 34, 50, 101, 152)},
    "resnext50_32x4d": ("resnet", "ResNeXt-50 32x4d (Xie et al. 2016)"),
    "densenet121": ("densenet", "DenseNet-121 (Huang et al. 2016)"),
}
for _name, (_family, _desc) in _TORCHVISION.items():
    _register(
        ModelSpec(
            name=_name,
            task=Task.CLASSIFY,
            family=_family,
            prepare=prepare_classifier,
            description=_desc,
            input=IMAGENET,
            dense=True,
            batch=_BIG,
            options={"arch": _name, "ignore_keys": ("aux1.", "aux2.") if _family == "googlenet" else ()},
        )
    )

# Tiny variants: the same torchvision classes with few channels, 10 classes, small inputs.
_TINY = {
    "tiny_alexnet": ("vgg", 96),
    "tiny_vgg": ("vgg", 64),
    "tiny_googlenet": ("googlenet", 64),
    "tiny_resnet": ("resnet", 64),
    "tiny_resnext": ("resnet", 64),
    "tiny_densenet": ("densenet", 64),
}
for _name, (_family, _side) in _TINY.items():
    _register(
        ModelSpec(
            name=_name,
            task=Task.CLASSIFY,
            family=_family,
            prepare=prepare_classifier,
            description=f"test variant of the {_family} family ({_side}px, 10 classes)",
            input=InputSpec(size=_side, resize=_side + _side // 7),
            num_classes=10,
            label_source="generic",
            dense=True,
            tiny=True,
            batch=_TINY_BATCH,
            options={"arch": _name},
        )
    )


# ---- text classification and captioning ---------------------------------------------------------
_register(
    ModelSpec(
        name="bert",
        task=Task.CLASSIFY_TEXT,
        family="bert",
        prepare=prepare_bert,
        description="BERT sequence classifier (HF checkpoint dir via --weights; small demo trained at build)",
        num_classes=0,
        label_source="checkpoint",
        default_weights=Weights.TRAINED_DEMO,
        batch=BatchConfig(batch_size=16, max_batch_delay_ms=5),
    )
)
_register(
    ModelSpec(
        name="tiny_bert",
        task=Task.CLASSIFY_TEXT,
        family="bert",
        prepare=prepare_bert,
        description="test variant of bert (random tiny config)",
        num_classes=0,
        label_source="checkpoint",
        tiny=True,
        batch=_TINY_BATCH,
    )
)
_register(
    ModelSpec(
        name="show_attend_tell",
        task=Task.CAPTION,
        family="sat",
        prepare=prepare_captioner,
        description="Show, Attend and Tell captioner (ResNet-101 encoder; demo trained on generated shapes)",
        input=InputSpec(size=256),
        num_classes=0,
        label_source="checkpoint",
        default_weights=Weights.TRAINED_DEMO,
        batch=BatchConfig(batch_size=8, max_batch_delay_ms=5),
    )
)
_register(
    ModelSpec(
        name="tiny_show_attend_tell",
        task=Task.CAPTION,
        family="sat",
        prepare=prepare_captioner,
        description="test variant of show_attend_tell (small encoder, random weights)",
        input=InputSpec(size=64),
        num_classes=0,
        label_source="checkpoint",
        tiny=True,
        batch=_TINY_BATCH,
    )
)
