"""The fast-decode fidelity gate (``zooserve bench fidelity``; ``tests/unit/test_fidelity.py``).

Large photos decoded in ``fast`` mode (libjpeg-turbo's DCT scaling, keeping ``FAST_MARGIN`` x
the model's side) must give the answers ``exact`` mode (full-size torchvision decode) gives: top-1
agreement >= 99 % and every class probability within 0.02, on models whose outputs are sharp enough
for that to mean something. Small photos (no scaling applies) must give bit-identical model inputs.

Both modes run the served pipeline itself (``runtime.tasks.make_pipeline`` on a built bundle,
``decode`` overridden as an operator would in model-config.yaml): decode, preprocess (resize and
crop, or lenet5's ink framing), forward, softmax.

Sharp models: the trained lenet5 (digits; median top-1 ~0.93), and a ResNet without trained
weights whose last layer is replaced by a **calibrated scene head** (``sharpened``): ten scenes
(quadrants and centres of scikit-learn's two photos), a logistic regression on the network's
pooled features of exact-decoded views of them, and a temperature chosen so the median top-1
probability on other views is ``SHARP_TOP1`` (0.9). Random weights alone give near-uniform
posteriors (ResNet-50: top-1 ~0.001 of 1000 classes), where any decode passes; scaling random
logits up makes them sharp but sends every photo to the same class, and random features with a
nearest-prototype head moved by up to 0.08 under a +-1 grey-level noise (no decode at all).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_image

from zooserve.bench import model_only
from zooserve.bench.samples import photo_jpegs
from zooserve.errors import UserError
from zooserve.models import registry
from zooserve.models.lenet import digits_split
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.images import jpeg_reduction
from zooserve.runtime.pipeline import Pipeline, Request
from zooserve.runtime.tasks import make_pipeline
from zooserve.specs import Format

MIN_AGREEMENT = 0.99
MAX_PROB_DIFF = 0.02
SHARP_TOP1 = 0.9  # median top-1 probability the prototype head is calibrated to
SOURCES = ("china.jpg", "flower.jpg")


# ---- large photos and digits, generated from what scikit-learn ships ----------------------------
def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _size(rng: np.random.Generator, megapixels: tuple[float, float]) -> tuple[int, int]:
    """A camera-like frame: 4:3, 3:2 or 16:9, landscape or portrait, with that many megapixels."""
    aspect = rng.choice([4 / 3, 3 / 2, 16 / 9])
    mp = rng.uniform(*megapixels) * 1e6
    w, h = round(math.sqrt(mp * aspect)), round(math.sqrt(mp / aspect))
    return (w, h) if rng.random() < 0.75 else (h, w)


def _jpeg(img: Image.Image, rng: np.random.Generator, quality: tuple[int, int]) -> bytes:
    """JPEG at a quality in ``quality``, 4:2:0 (phones) or, one time in four, 4:4:4."""
    buf = io.BytesIO()
    q = int(rng.integers(quality[0], quality[1] + 1))
    img.save(buf, "JPEG", quality=q, subsampling=0 if rng.random() < 0.25 else 2)
    return buf.getvalue()


def _grain(a: np.ndarray, rng: np.random.Generator, amount: int = 3) -> np.ndarray:
    noise = rng.integers(-amount, amount + 1, size=a.shape[:2], dtype=np.int16)
    return np.clip(a.astype(np.int16) + (noise[..., None] if a.ndim == 3 else noise), 0, 255).astype(np.uint8)


def large_photos(
    count: int,
    seed: int = 0,
    megapixels: tuple[float, float] = (3.0, 12.0),
    quality: tuple[int, int] = (85, 95),
) -> list[bytes]:
    """Camera-sized JPEGs of the ``SCENES`` (views as ``scene_views`` makes them, upscaled to
    ``megapixels`` with a fine grain, quality in ``quality``), cycling through the scenes. Seeded."""
    per_scene = -(-count // len(SCENES))
    views = scene_views(per_scene, seed, megapixels, quality)
    order = [i * per_scene + j for j in range(per_scene) for i in range(len(SCENES))]
    return [views[k][0] for k in order[:count]]


def large_digits(
    count: int,
    seed: int = 0,
    megapixels: tuple[float, float] = (3.0, 12.0),
    quality: tuple[int, int] = (85, 95),
) -> list[tuple[bytes, int]]:
    """(JPEG, true digit): scikit-learn's held-out handwritten digits upscaled onto a camera-sized
    page: the digit 30-60 % of the shorter side tall, anywhere with a margin, dark ink on light
    paper or the reverse, a slight paper tint and grain, RGB JPEG. Seeded."""
    rng = _rng(seed)
    _, _, x, y = digits_split()
    out = []
    for _ in range(count):
        j = int(rng.integers(0, len(y)))
        w, h = _size(rng, megapixels)
        side = round(rng.uniform(0.3, 0.6) * min(w, h))
        glyph = Image.fromarray(x[j, 0].numpy()).resize((side, side), Image.Resampling.BICUBIC)
        ink = np.asarray(glyph, np.float32)[..., None] / 255.0
        dark = rng.random() < 0.7
        paper = np.array([235, 228, 215], np.float32) * rng.uniform(0.85, 1.0)
        pen = np.array([25, 30, 45], np.float32)
        if not dark:
            paper, pen = pen, paper
        page = np.empty((h, w, 3), np.float32)
        page[:] = paper
        left = int(rng.integers(round(0.05 * w), w - side - round(0.05 * w) + 1))
        top = int(rng.integers(round(0.05 * h), h - side - round(0.05 * h) + 1))
        page[top : top + side, left : left + side] = paper * (1 - ink) + pen * ink
        img = Image.fromarray(_grain(page.round().astype(np.uint8), rng))
        out.append((_jpeg(img, rng, quality), int(y[j])))
    return out


# ---- the sharpened CNN ---------------------------------------------------------------------------
def scene_views(
    count: int,
    seed: int,
    megapixels: tuple[float, float] = (0.2, 0.5),
    quality: tuple[int, int] = (80, 95),
) -> list[tuple[bytes, int]]:
    """(JPEG, scene): views of the ``SCENES`` regions of scikit-learn's two photos (a 70-100 %
    sub-crop, a flip, colour jitter +-20 %, resized (Lanczos) to ``megapixels``, a +-3 grain, a
    quality in ``quality``, 4:2:0 or one in four 4:4:4), ``count`` per scene, scene by scene."""
    rng = _rng(seed)
    photos = [Image.fromarray(load_sample_image(s)) for s in SOURCES]
    out = []
    for scene, (src, box) in enumerate(SCENES):
        im = photos[src]
        w, h = im.size
        x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
        for _ in range(count):
            f = rng.uniform(0.7, 1.0)
            cw, ch = (x2 - x1) * f, (y2 - y1) * f
            x0, y0 = x1 + rng.uniform(0, x2 - x1 - cw), y1 + rng.uniform(0, y2 - y1 - ch)
            img = im.crop((round(x0), round(y0), round(x0 + cw), round(y0 + ch)))
            out.append((_view(img, rng, megapixels, quality), scene))
    return out


def _view(
    img: Image.Image, rng: np.random.Generator, megapixels: tuple[float, float], quality: tuple[int, int]
) -> bytes:
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.8, 1.2))
    scale = math.sqrt(rng.uniform(*megapixels) * 1e6 / (img.width * img.height))
    size = (max(8, round(img.width * scale)), max(8, round(img.height * scale)))
    img = Image.fromarray(_grain(np.asarray(img.resize(size, Image.Resampling.LANCZOS)), rng))
    return _jpeg(img, rng, quality)


# ten scenes: (photo, box as fractions of it): each photo's four quadrants and its centre
QUADRANTS_AND_CENTRE = (
    (0, 0, 0.5, 0.5),
    (0.5, 0, 1, 0.5),
    (0, 0.5, 0.5, 1),
    (0.5, 0.5, 1, 1),
    (0.25, 0.25, 0.75, 0.75),
)
SCENES = [(s, box) for s in range(2) for box in QUADRANTS_AND_CENTRE]


def sharpened(name: str, bundle_dir: Path, views: int = 12, seed: int = 2) -> torch.nn.Module:
    """The registry's ``name`` (a ResNet, weights as the build gives them: random) with its last
    layer replaced by a 10-scene linear classifier: logistic regression on the network's pooled
    features of ``views`` exact-decoded views per scene, then a temperature calibrated so the
    median top-1 probability on other views is ``SHARP_TOP1``."""
    from sklearn.linear_model import LogisticRegression

    spec = registry.get(name)
    net = spec.prepare(spec).targets["model"].module.eval()
    fc_in = net.fc.in_features
    net.fc = torch.nn.Identity()
    pipe = _pipeline(bundle_dir, "exact", net)
    train, calib = scene_views(views, seed), scene_views(max(2, views // 3), seed + 1)
    feats = _outputs(pipe, [d for d, _ in train], raw=True)
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    fit = LogisticRegression(C=1.0, max_iter=2000).fit(((feats - mean) / std).numpy(), [y for _, y in train])
    head = torch.nn.Linear(fc_in, len(SCENES))
    with torch.no_grad():
        w = torch.from_numpy(fit.coef_).float() / std
        head.weight.copy_(w)
        head.bias.copy_(torch.from_numpy(fit.intercept_).float() - w @ mean)
    with torch.no_grad():
        logits = head(_outputs(pipe, [d for d, _ in calib], raw=True).clone())
    temperature = calibrate(logits, SHARP_TOP1)
    with torch.no_grad():
        head.weight.mul_(temperature)
        head.bias.mul_(temperature)
    net.fc = head
    net.temperature = temperature
    return net


def median_top1(logits: torch.Tensor, temperature: float = 1.0) -> float:
    return float(torch.softmax(temperature * logits, dim=1).max(dim=1).values.median())


def calibrate(logits: torch.Tensor, target: float) -> float:
    """The temperature at which the median top-1 probability of ``logits`` is ``target`` (it grows
    with the temperature: bisection on a log scale)."""
    lo, hi = 1e-3, 1e3
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if median_top1(logits, mid) < target else (lo, mid)
    return math.sqrt(lo * hi)


# ---- fast vs exact through the served pipeline ---------------------------------------------------
def _pipeline(bundle_dir: Path, decode: str, model: Any = None) -> Pipeline:
    bundle = load_bundle(bundle_dir, overrides={"decode": decode}, device="cpu")
    if model is not None:
        bundle.modules["model"] = model
    return make_pipeline(bundle)


@torch.inference_mode()
def _outputs(pipe: Any, datas: Sequence[bytes], raw: bool = False, batch: int = 8) -> torch.Tensor:
    """Posteriors (N, classes) from the pipeline's own stages; ``raw``: the model's outputs."""
    out = []
    for i in range(0, len(datas), batch):
        items = [pipe.decode(Request(d)) for d in datas[i : i + batch]]
        inputs = pipe.preprocess(items)
        out.append(pipe.model(inputs[0]).float() if raw else pipe.forward(inputs))
    return torch.cat(out)


@dataclass
class Fidelity:
    model: str
    images: int
    scaled: int  # images that fast mode decoded at a reduced DCT scale
    agreement: float  # top-1, fast vs exact
    max_prob_diff: float  # over every image and class
    median_top1: float  # exact mode: how sharp the model is
    distinct_top1: int  # exact mode: how many classes the images went to
    accuracy_exact: float | None = None  # digits: against the true labels
    accuracy_fast: float | None = None
    seconds_exact: float = 0.0  # decode + preprocess + forward, all images
    seconds_fast: float = 0.0

    @property
    def passed(self) -> bool:
        return self.agreement >= MIN_AGREEMENT and self.max_prob_diff <= MAX_PROB_DIFF


def compare(
    bundle_dir: Path,
    datas: Sequence[bytes],
    labels: Sequence[int] | None = None,
    model: Any = None,
    name: str = "",
) -> Fidelity:
    """Fast vs exact decode of ``datas`` through the bundle's pipeline (its model, or ``model``)."""
    probs, secs = {}, {}
    for mode in ("exact", "fast"):
        pipe = _pipeline(bundle_dir, mode, model)
        t = time.perf_counter()
        probs[mode] = _outputs(pipe, datas)
        secs[mode] = time.perf_counter() - t
    cover = pipe.limits.min_side
    scaled = sum(jpeg_reduction(Image.open(io.BytesIO(d)).size, cover) > 1 for d in datas)
    top_e, top_f = probs["exact"].argmax(1), probs["fast"].argmax(1)
    acc = None
    if labels is not None:
        truth = torch.tensor(list(labels))
        acc = (float((top_e == truth).float().mean()), float((top_f == truth).float().mean()))
    return Fidelity(
        model=name or bundle_dir.name,
        images=len(datas),
        scaled=int(scaled),
        agreement=float((top_e == top_f).float().mean()),
        max_prob_diff=float((probs["exact"] - probs["fast"]).abs().max()),
        median_top1=float(probs["exact"].max(1).values.median()),
        distinct_top1=len(set(top_e.tolist())),
        accuracy_exact=acc[0] if acc else None,
        accuracy_fast=acc[1] if acc else None,
        seconds_exact=secs["exact"],
        seconds_fast=secs["fast"],
    )


def small_photos_identical(bundle_dir: Path, datas: Sequence[bytes]) -> bool:
    """Photos too small for any DCT scale: fast and exact give the model the same tensor."""
    inputs = []
    for mode in ("exact", "fast"):
        pipe = _pipeline(bundle_dir, mode)
        inputs.append(pipe.preprocess([pipe.decode(Request(d)) for d in datas]))
    return all(torch.equal(a, b) for a, b in zip(*inputs, strict=True))


# ---- zooserve bench fidelity ---------------------------------------------------------------------
def run(a: argparse.Namespace) -> list[Fidelity]:
    """lenet5 (trained by its build) on ``a.images`` large digits, and each ResNet of ``a.models``
    sharpened, on ``a.images`` large photos; the small photos' model inputs compared bit for bit.
    Prints a markdown table; writes ``OUT/fidelity.json``."""
    for name in a.models:
        if registry.get(name).family != "resnet":
            raise UserError(
                f"bench fidelity sharpens ResNets (a 'fc' head); {name} is a {registry.get(name).family}"
            )
    work, store = a.work, a.work / "store"
    t0, load = time.time(), Path("/proc/loadavg").read_text().strip()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows, identical = [], {}
    lenet = model_only.artifact("lenet5", Format.TORCHSCRIPT, work, store)
    digits = large_digits(a.images, seed=1)
    rows.append(compare(lenet, [d for d, _ in digits], [y for _, y in digits], name="lenet5 (trained)"))
    print(json.dumps(asdict(rows[-1])), flush=True)
    photos = large_photos(a.images, seed=1)
    small = [photo_jpegs()[s] for s in SOURCES]
    for name in a.models:
        bundle = model_only.artifact(name, Format.TORCHSCRIPT, work, store)
        net = sharpened(name, bundle)
        rows.append(compare(bundle, photos, model=net, name=f"{name} (scene head, T={net.temperature:.2f})"))
        print(json.dumps(asdict(rows[-1])), flush=True)
        identical[name] = small_photos_identical(bundle, small)
    identical["lenet5"] = small_photos_identical(lenet, [d for d, _ in large_digits(4, 5, (0.01, 0.05))])
    a.out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": a.command_line,
        "loadavg": load,
        "minutes": (time.time() - t0) / 60,
        "rows": [asdict(r) | {"passed": r.passed} for r in rows],
        "small_photos_bit_identical": identical,
    }
    (a.out / "fidelity.json").write_text(json.dumps(result, indent=1), "utf-8")
    print(f"load average at the start: {load}; {result['minutes']:.1f} min\n")
    print(table(rows))
    print(
        "small photos (no DCT scale applies), fast == exact model inputs: "
        + ", ".join(f"{k} {v}" for k, v in identical.items())
    )
    return rows


def _encode(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def table(rows: Sequence[Fidelity]) -> str:
    head = (
        "| model | images | scaled | top-1 agreement | max prob diff | median top-1 (exact) | classes hit | "
        "accuracy exact / fast | s exact / fast | gate |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        acc = (
            "-"
            if r.accuracy_exact is None
            else f"{100 * r.accuracy_exact:.1f} % / {100 * r.accuracy_fast:.1f} %"
        )
        lines.append(
            f"| {r.model} | {r.images} | {r.scaled} | {100 * r.agreement:.1f} % | {r.max_prob_diff:.4f} | "
            f"{r.median_top1:.3f} | {r.distinct_top1} | {acc} | "
            f"{r.seconds_exact:.1f} / {r.seconds_fast:.1f} | {'pass' if r.passed else '**fail**'} |"
        )
    return head + "\n".join(lines) + "\n"
