"""LeNet-5 (LeCun et al. 1998) and its build-time training on scikit-learn's bundled digits."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

DIGITS_SEED = 0
DIGITS_SIDE = 32
# sklearn's digits are 8x8 with ink values 0..16; scaled to [0, 1] their mean/std are about these
DIGITS_MEAN = (0.3,)
DIGITS_STD = (0.4,)


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


def normalize_digits(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - DIGITS_MEAN[0]) / DIGITS_STD[0]


@torch.no_grad()
def digits_accuracy(model: Any, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of any callable (eager module or exported artifact) on uint8 digit images."""
    out = model(normalize_digits(images))
    return float((out.argmax(1) == labels).float().mean())


def train_on_digits(model: nn.Module, epochs: int = 40, batch_size: int = 64) -> dict[str, Any]:
    """Train in place (seeded, a few seconds); returns facts recorded in the archive."""
    torch.manual_seed(DIGITS_SEED)
    # one thread: float reductions (and so the trained weights) then do not depend on how many
    # threads the building process happens to use; two builds give the same model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, epochs, batch_size)
    finally:
        torch.set_num_threads(threads)


def _train(model: nn.Module, epochs: int, batch_size: int) -> dict[str, Any]:
    from tqdm import tqdm

    x_train, y_train, x_test, y_test = digits_split()
    xs, ys = normalize_digits(x_train), y_train
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    gen = torch.Generator().manual_seed(DIGITS_SEED)
    for _ in tqdm(range(epochs), desc="training lenet5 on sklearn digits", unit="epoch", disable=None):
        # small random shifts make the demo robust to off-centre user drawings
        shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
        perm = torch.randperm(len(ys), generator=gen)
        for i in range(0, len(ys), batch_size):
            b = perm[i : i + batch_size]
            loss = F.cross_entropy(model(torch.roll(xs[b], shifts=shift, dims=(2, 3))), ys[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    acc = digits_accuracy(model, x_test, y_test)
    print(f"lenet5: held-out accuracy on sklearn digits = {acc:.4f} ({len(y_test)} images)")
    return {"digits_accuracy": acc, "digits_heldout": len(y_test)}
