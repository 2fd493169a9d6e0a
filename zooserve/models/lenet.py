"""LeNet-5 (LeCun et al. 1998) and its build-time training: scikit-learn's handwritten digits plus
digits rendered from fonts, augmented, all framed as served (``zooserve.models.digits``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from zooserve.errors import AccuracyGateFailed

if TYPE_CHECKING:
    from zooserve.specs import InputSpec

DIGITS_SEED = 0
DIGITS_SIDE = 32  # sklearn's 8x8 digits upscaled: the held-out images tests and samples send
# the build's gate: both held-out sets
MIN_DIGITS_ACCURACY = 0.98  # scikit-learn's digits, held-out 20 % (360 images)
MIN_AS_SENT_ACCURACY = 0.95  # digits as sent, from fonts held out of training
AS_SENT_IMAGES = 500


class LeNet5(nn.Module):
    """Classic LeNet-5 layout for 32x32 grey input: C1-S2-C3-S4 then the F5/F6/output FC layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels) as uint8 32x32, seeded split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images).float().div(16.0).unsqueeze(1)  # N,1,8,8 in [0,1]
    x = F.interpolate(x, size=(DIGITS_SIDE, DIGITS_SIDE), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).mul(255).round().to(torch.uint8)
    y = torch.from_numpy(d.target).long()
    idx_train, idx_test = train_test_split(
        range(len(y)), test_size=0.2, random_state=DIGITS_SEED, stratify=d.target
    )
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def digits_spec() -> InputSpec:
    """lenet5's input spec (the registry's), which frames digits as ``zooserve.models.digits`` does."""
    from zooserve.models.registry import get

    spec = get("lenet5").input
    assert spec is not None
    return spec


def normalize_digits(images: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) digit images of any size and polarity -> lenet5's input batch."""
    from zooserve.models.digits import digit_batch

    return digit_batch(images, digits_spec())[0]


@torch.no_grad()
def digits_accuracy(model: Any, images: Sequence[torch.Tensor] | torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of any callable (eager module or exported artifact) on uint8 digit images,
    through the serving framing; an image the framing refuses counts as wrong."""
    from zooserve.models.digits import digit_batch

    x, errors = digit_batch(images, digits_spec())
    predicted = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    refused = torch.tensor([e is not None for e in errors])
    return float(((predicted == labels) & ~refused).float().mean())


def sent_digits(sent: Sequence[Any]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Decoded images and labels of a ``digits.as_sent_set()`` / ``issue_set()`` list."""
    from zooserve.models.digits import decode_grey

    return [decode_grey(s.data) for s in sent], torch.tensor([s.label for s in sent])


def train_on_digits(
    model: nn.Module, epochs: int = 8, batch_size: int = 256, gate: bool = True
) -> dict[str, Any]:
    """Train in place (seeded; about half a minute of one core) and check the two held-out
    accuracies against the gate; returns facts recorded in the archive."""
    torch.manual_seed(DIGITS_SEED)
    # one thread: float reductions (and so the trained weights) then do not depend on how many
    # threads the building process happens to use; two builds give the same model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, epochs, batch_size, gate)
    finally:
        torch.set_num_threads(threads)


def _train(model: nn.Module, epochs: int, batch_size: int, gate: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from zooserve.models.digits import as_sent_set, issue_set, training_frames

    start = time.perf_counter()
    spec = digits_spec()
    assert spec.ink_box is not None
    x_train, y_train, x_test, y_test = digits_split()
    gen = torch.Generator().manual_seed(DIGITS_SEED)
    frames, ys = training_frames(x_train, y_train, gen, size=spec.size, box=spec.ink_box)
    xs = (frames - spec.mean[0]) / spec.std[0]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * -(-len(ys) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=6e-3, total_steps=steps)
    model.train()
    desc = f"training lenet5 on {len(ys)} digits (handwritten + fonts, augmented)"
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=None):
        perm = torch.randperm(len(ys), generator=gen)
        for i in range(0, len(ys), batch_size):
            b = perm[i : i + batch_size]
            loss = F.cross_entropy(model(xs[b]), ys[b], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    seconds = time.perf_counter() - start
    acc = digits_accuracy(model, x_test, y_test)
    sent = as_sent_set(AS_SENT_IMAGES)
    acc_sent = digits_accuracy(model, *sent_digits(sent))
    acc_issue = digits_accuracy(model, *sent_digits(issue_set()))
    gates = f"gates {MIN_DIGITS_ACCURACY:.0%} / {MIN_AS_SENT_ACCURACY:.0%}"
    print(f"lenet5: held-out accuracy on sklearn digits = {acc:.4f} ({len(y_test)} images)")
    print(
        f"lenet5: accuracy on digits as sent = {acc_sent:.4f} ({len(sent)} images: fonts held out of "
        f"training, 28-256 px, PNG/JPEG, either polarity); {gates}"
    )
    print(
        f"lenet5: 96x96 DejaVu Sans digits (issue 20's check) = {acc_issue:.4f}; trained in {seconds:.0f} s"
    )
    facts = {
        "digits_accuracy": acc, "digits_heldout": len(y_test), "as_sent_accuracy": acc_sent,
        "as_sent_images": len(sent), "issue20_accuracy": acc_issue, "training_images": len(ys),
    }  # fmt: skip
    if gate and (acc < MIN_DIGITS_ACCURACY or acc_sent < MIN_AS_SENT_ACCURACY):
        raise AccuracyGateFailed(
            f"lenet5 demo accuracy gate failed: sklearn held-out {acc:.2%} (needs {MIN_DIGITS_ACCURACY:.0%}),"
            f" digits as sent {acc_sent:.2%} (needs {MIN_AS_SENT_ACCURACY:.0%})"
        )
    return facts
