"""A generated captioned-images set and the build-time trainer of the ``show_attend_tell`` demo.

Each image holds two coloured shapes, side by side or one above the other; each has several
phrasings of the same relation ("a red circle to the left of a blue square", "a blue square to the
right of a red circle", ...). Train and held-out images come from different seeds. Training is
teacher-forced cross-entropy plus the paper's doubly stochastic attention term; the held-out
BLEU-4 (nltk corpus_bleu, all phrasings as references) is measured with the serving beam search.
"""

from __future__ import annotations

import io
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F
from tqdm import tqdm

from zooserve.models.beam_search import BeamOptions, Captioner
from zooserve.models.sat_checkpoint import SatCheckpoint
from zooserve.models.sat_modules import (
    END,
    PAD,
    START,
    UNK,
    DecoderStep,
    EncodeInit,
    SatConfig,
    build_captioner,
)
from zooserve.specs import IMAGENET_MEAN, IMAGENET_STD

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 70), "blue": (50, 100, 240), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle")
TRAIN_SEED, HELDOUT_SEED = 1, 2
DEMO_SIDE = 56  # the demo trunk resamples any input to this side; training images are this size
DEMO_CONFIG = dict(
    backbone="conv",
    conv_widths=(32, 64, 96),
    conv_side=DEMO_SIDE,
    attention_dim=64,
    embed_dim=48,
    decoder_dim=192,
    dropout=0.2,
)
PHRASES = {
    # relation -> phrasings of (first object, second object)
    "left": [
        "a {a} to the left of a {b}",
        "a {b} to the right of a {a}",
        "a {a} left of a {b}",
        "there is a {a} on the left and a {b} on the right",
    ],
    "above": [
        "a {a} above a {b}",
        "a {b} below a {a}",
        "a {a} on top of a {b}",
        "there is a {a} at the top and a {b} at the bottom",
    ],
}


def vocabulary() -> list[str]:
    """The tutorial's word-map layout: <pad>=0, the words, then <unk>, <start>, <end>."""
    words = {w for p in PHRASES.values() for s in p for w in s.split() if not w.startswith("{")}
    words |= set(COLOURS) | set(SHAPES)
    return [PAD, *sorted(words), UNK, START, END]


@dataclass
class Scene:
    a: tuple[str, str]  # (colour, shape) first in reading order: left or top
    b: tuple[str, str]
    relation: str  # "left" | "above"
    boxes: tuple[tuple[float, float, float], tuple[float, float, float]]  # (cx, cy, radius) in [0, 1]

    def captions(self) -> list[list[str]]:
        a, b = " ".join(self.a), " ".join(self.b)
        return [p.format(a=a, b=b).split() for p in PHRASES[self.relation]]


def random_scene(rng: random.Random) -> Scene:
    objects = [(c, s) for c in COLOURS for s in SHAPES]
    a, b = rng.sample(objects, 2)
    relation = rng.choice(("left", "above"))
    r1, r2 = rng.uniform(0.09, 0.16), rng.uniform(0.09, 0.16)
    along1, along2 = rng.uniform(0.2, 0.32), rng.uniform(0.68, 0.8)  # separated along the relation's axis
    across1, across2 = rng.uniform(0.22, 0.78), rng.uniform(0.22, 0.78)
    if relation == "left":
        boxes = ((along1, across1, r1), (along2, across2, r2))
    else:
        boxes = ((across1, along1, r1), (across2, along2, r2))
    return Scene(a, b, relation, boxes)


def render(scene: Scene, side: int, rng: random.Random | None = None) -> Image.Image:
    """Draw at 4x and downsample (anti-aliased, like a photo resized by the serving pipeline)."""
    rng = rng or random.Random(0)
    big = side * 4
    grey = rng.randint(0, 60)
    img = Image.new("RGB", (big, big), (grey, grey, grey))
    draw = ImageDraw.Draw(img)
    for (colour, shape), (cx, cy, r) in zip((scene.a, scene.b), scene.boxes, strict=True):
        fill = tuple(min(255, max(0, v + rng.randint(-25, 25))) for v in COLOURS[colour])
        x, y, rr = cx * big, cy * big, r * big
        if shape == "circle":
            draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=fill)
        elif shape == "square":
            draw.rectangle((x - rr * 0.9, y - rr * 0.9, x + rr * 0.9, y + rr * 0.9), fill=fill)
        else:
            draw.polygon([(x, y - rr), (x - rr, y + rr * 0.8), (x + rr, y + rr * 0.8)], fill=fill)
    return img.resize((side, side), Image.Resampling.BOX)


def scene_png(scene: Scene, side: int = 256, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    render(scene, side, random.Random(seed)).save(buf, format="PNG")
    return buf.getvalue()


def make_split(n: int, seed: int, side: int = DEMO_SIDE) -> tuple[torch.Tensor, list[Scene]]:
    """n scenes from ``seed``: uint8 images (n, 3, side, side) and their scenes."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    pixels = [torch.frombuffer(bytearray(render(s, side, rng).tobytes()), dtype=torch.uint8) for s in scenes]
    return torch.stack(pixels).view(n, side, side, 3).permute(0, 3, 1, 2).contiguous(), scenes


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def encode_captions(scenes: list[Scene], vocab: list[str], gen: torch.Generator) -> torch.Tensor:
    """One random phrasing per scene as <start> words <end> <pad>..., (n, T)."""
    ids = {w: i for i, w in enumerate(vocab)}
    picks = torch.randint(0, 4, (len(scenes),), generator=gen).tolist()
    seqs = [
        [ids[START], *(ids[w] for w in s.captions()[p]), ids[END]] for s, p in zip(scenes, picks, strict=True)
    ]
    out = torch.full((len(seqs), max(map(len, seqs))), ids[PAD], dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def bleu4(
    encoder: Any, step: Any, images: torch.Tensor, scenes: list[Scene], vocab: list[str], beam: int = 3
) -> float:
    """Corpus BLEU-4 of the beam-search captions against every phrasing of each scene."""
    from nltk.translate.bleu_score import corpus_bleu  # optional: only the demo's build-time evaluation

    special = {t: vocab.index(t) for t in (START, END, PAD)}
    captioner = Captioner(encoder, step, vocab, special)
    hyps: list[list[str]] = []
    for i in range(0, len(scenes), 64):
        for h in captioner(normalize(images[i : i + 64]), BeamOptions(beam_size=beam, max_length=20)):
            hyps.append(captioner.words(h)[0])
    return float(corpus_bleu([s.captions() for s in scenes], hyps))


def train_demo(
    side: int = 256,
    n_train: int = 3000,
    n_heldout: int = 400,
    epochs: int = 10,
    batch_size: int = 50,
    **_: Any,
) -> tuple[Any, dict[str, Any]]:
    """Train the demo captioner (seeded); returns our checkpoint and facts for the build output."""
    torch.manual_seed(TRAIN_SEED)
    t0 = time.perf_counter()
    vocab = vocabulary()
    cfg = SatConfig(vocab_size=len(vocab), **DEMO_CONFIG)  # type: ignore[arg-type]
    encoder, decoder = build_captioner(cfg)
    x_train, s_train = make_split(n_train, TRAIN_SEED)
    x_held, s_held = make_split(n_heldout, HELDOUT_SEED)
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    steps = epochs * math.ceil(n_train / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    encoder.train()
    decoder.train()
    bar = tqdm(total=steps, desc="training show_attend_tell on generated shapes", unit="batch")
    for _ in range(epochs):
        caps = encode_captions(s_train, vocab, gen)
        perm = torch.randperm(n_train, generator=gen)
        for i in range(0, n_train, batch_size):
            b = perm[i : i + batch_size]
            loss = caption_loss(encoder, decoder, normalize(x_train[b]), caps[b], vocab.index(PAD))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            bar.update()
    bar.close()
    encoder.eval()
    decoder.eval()
    bleu = bleu4(EncodeInit(encoder, decoder), DecoderStep(decoder), x_held, s_held, vocab)
    seconds = time.perf_counter() - t0
    print(
        f"show_attend_tell demo: held-out BLEU-4 = {bleu:.4f} ({n_heldout} images, beam 3), "
        f"trained in {seconds:.0f} s"
    )
    ckpt = SatCheckpoint(cfg, encoder.state_dict(), decoder.state_dict(), vocab, source_format="trained-demo")
    facts = {
        "bleu4_heldout": round(bleu, 4),
        "heldout_images": n_heldout,
        "train_images": n_train,
        "train_seconds": round(seconds, 1),
        "dataset": "generated coloured shapes (zooserve.models.shapes_captions)",
    }
    return ckpt, facts


def caption_loss(
    encoder: Any, decoder: Any, x: torch.Tensor, caps: torch.Tensor, pad: int, alpha_c: float = 0.0
) -> torch.Tensor:
    """Cross-entropy on the next word (+ the paper's doubly stochastic attention term, off by default:
    with ~10-word captions over 196 pixels it only pushes attention towards uniform)."""
    scores, alphas = decoder(encoder(x), caps)
    targets = caps[:, 1:]
    ce = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), targets.reshape(-1), ignore_index=pad)
    mask = (targets != pad).unsqueeze(2).float()
    att = ((1.0 - (alphas * mask).sum(dim=1)) ** 2).mean()
    return ce + alpha_c * att
