"""Batched beam search for Show-Attend-Tell over exported (or eager) encoder/step callables.

All images of a batch and all their beams advance together: one ``step`` call per time step on a
(live hypotheses, ...) tensor, with each hypothesis pointing at its image's features. As in the
tutorial's algorithm, an image's beam narrows by one whenever one of its hypotheses emits ``<end>``
(that is what makes its captions token-for-token equal); finished and pruned hypotheses are dropped
by boolean indexing, never by Python loops over hypotheses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zooserve.errors import InvalidParameter

StepFn = Callable[..., Any]


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int = 3
    max_length: int = 50  # words before <end>; the tutorial's `step > 50` cut-off
    length_norm: float = 0.0  # rank finished captions by score / length**length_norm (0: off)


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, <end> included when reached
    score: float  # sum of log-probs (divided by length**length_norm when that is on)
    alphas: torch.Tensor  # (len(tokens), pixels) attention that produced each token
    finished: bool


class _Store:
    """Per image: one hypothesis (tokens, attention, score), padded to the longest possible."""

    def __init__(self, n: int, length: int, pixels: int, device: torch.device) -> None:
        self.tokens = torch.zeros(n, length, dtype=torch.long, device=device)
        self.alphas = torch.zeros(n, length, pixels, device=device)
        self.length = torch.zeros(n, dtype=torch.long, device=device)
        self.score = torch.full((n,), float("-inf"), device=device)

    def put(
        self,
        img: torch.Tensor,
        t: int,
        seqs: torch.Tensor,
        hist: torch.Tensor,
        last: tuple[torch.Tensor, ...],
    ) -> None:
        """Store for images ``img`` the hypotheses ``seqs``/``hist`` (t-1 steps) extended by ``last``."""
        word, alpha, score = last
        self.tokens[img, : t - 1], self.tokens[img, t - 1] = seqs, word
        self.alphas[img, : t - 1], self.alphas[img, t - 1] = hist, alpha
        self.length[img], self.score[img] = t, score


def _outputs(out: Any) -> tuple[torch.Tensor, ...]:
    """Exported modules return a tuple, a list (AOTInductor) or a single tensor."""
    return tuple(out) if isinstance(out, (list, tuple)) else (out,)


@torch.no_grad()
def beam_search(
    step: StepFn,
    enc: torch.Tensor,
    att1: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    start: int,
    end: int,
    opts: BeamOptions,
) -> list[Hypothesis]:
    """Beam search for every image of ``enc`` (N, P, D) at once; one result per image, always."""
    n, pixels, k, dev = enc.shape[0], enc.shape[1], opts.beam_size, enc.device
    enc, att1 = enc.contiguous(), att1.contiguous()  # AOTInductor kernels assume dense inputs
    rows = torch.arange(n, device=dev)  # image of each live hypothesis
    slot = torch.zeros(n, dtype=torch.long, device=dev)  # its rank within its image's beam
    words = torch.full((n,), start, dtype=torch.long, device=dev)
    scores = torch.zeros(n, device=dev)
    seqs = torch.zeros(n, 0, dtype=torch.long, device=dev)
    hist = torch.zeros(n, 0, pixels, device=dev)
    width = torch.full((n,), k, dtype=torch.long, device=dev)  # open beams per image
    best = _Store(n, opts.max_length + 1, pixels, dev)  # best finished caption
    cut = _Store(n, opts.max_length + 1, pixels, dev)  # best open one at max_length (fallback)
    ranks = torch.arange(k, device=dev)
    for t in range(1, opts.max_length + 2):
        logp, h, c, alpha = _outputs(step(enc, att1, rows, words, h, c))
        vocab = logp.shape[1]
        if k > vocab:
            raise InvalidParameter(f"beam size {k} exceeds the vocabulary size {vocab}")
        slots = 1 if t == 1 else k  # at t=1 every beam of an image is the same single hypothesis
        grid = torch.full((n, slots, vocab), float("-inf"), device=dev)
        grid[rows, slot] = scores.unsqueeze(1) + logp
        top_s, top_i = grid.view(n, -1).topk(k, dim=1)  # sorted: an image's best candidates first
        word = top_i % vocab
        row_of = torch.zeros(n, slots, dtype=torch.long, device=dev)
        row_of[rows, slot] = torch.arange(rows.numel(), device=dev)
        parent = row_of.gather(1, torch.div(top_i, vocab, rounding_mode="floor"))  # floor, not true division
        valid = ranks.unsqueeze(0) < width.unsqueeze(1)  # the beam narrowed as hypotheses finished
        done = valid & (word == end)
        _offer_finished(best, t, done, top_s, parent, word, seqs, hist, alpha, opts.length_norm)
        keep = valid & ~done
        if t == opts.max_length:
            _keep_best_open(cut, t, keep, top_s, parent, word, seqs, hist, alpha)
        img, rank = keep.nonzero(as_tuple=True)  # row-major: by image, then by rank
        pr = parent[img, rank]
        seqs = torch.cat([seqs[pr], word[img, rank].unsqueeze(1)], dim=1)
        hist = torch.cat([hist[pr], alpha[pr].unsqueeze(1)], dim=1)
        h, c, scores, words = h[pr], c[pr], top_s[img, rank], word[img, rank]
        rows, slot, width = img, (keep.cumsum(1) - 1)[img, rank], keep.sum(1)
        if rows.numel() == 0:
            break
    return _collect(best, cut)


def _offer_finished(
    best: _Store,
    t: int,
    done: torch.Tensor,
    top_s: torch.Tensor,
    parent: torch.Tensor,
    word: torch.Tensor,
    seqs: torch.Tensor,
    hist: torch.Tensor,
    alpha: torch.Tensor,
    length_norm: float,
) -> None:
    """Per image, the best-ranked hypothesis ending now replaces the stored one if strictly better
    (ties keep the earlier, as the tutorial's ``list.index(max(...))`` does)."""
    first = done.int().argmax(dim=1)  # candidates are rank-sorted: the first finished is the best
    idx = torch.arange(done.shape[0], device=done.device)
    score = top_s[idx, first] / (float(t) ** length_norm if length_norm else 1.0)
    img = (done.any(dim=1) & (score > best.score)).nonzero().squeeze(1)
    if img.numel():
        pr = parent[img, first[img]]
        best.put(img, t, seqs[pr], hist[pr], (word[img, first[img]], alpha[pr], score[img]))


def _keep_best_open(
    cut: _Store,
    t: int,
    keep: torch.Tensor,
    top_s: torch.Tensor,
    parent: torch.Tensor,
    word: torch.Tensor,
    seqs: torch.Tensor,
    hist: torch.Tensor,
    alpha: torch.Tensor,
) -> None:
    first = keep.int().argmax(dim=1)
    img = keep.any(dim=1).nonzero().squeeze(1)
    if img.numel():
        pr = parent[img, first[img]]
        cut.put(img, t, seqs[pr], hist[pr], (word[img, first[img]], alpha[pr], top_s[img, first[img]]))


def _collect(best: _Store, cut: _Store) -> list[Hypothesis]:
    finished = best.length > 0
    out = []
    for i, ok in enumerate(finished.tolist()):
        store = best if ok else cut  # no <end> within max_length: the best caption of max length
        n = int(store.length[i])
        out.append(Hypothesis(store.tokens[i, :n].tolist(), float(store.score[i]), store.alphas[i, :n], ok))
    return out


class Captioner:
    """Encoder + step callables (exported or eager) with the vocabulary: images -> hypotheses."""

    def __init__(self, encoder: StepFn, step: StepFn, vocab: list[str], special: dict[str, int]) -> None:
        self.encoder, self.step, self.vocab = encoder, step, vocab
        self.start, self.end = special["<start>"], special["<end>"]
        self.strip = {special[t] for t in ("<start>", "<end>", "<pad>") if t in special}

    def __call__(self, x: torch.Tensor, opts: BeamOptions | list[BeamOptions]) -> list[Hypothesis]:
        """Encode all images once; one batched search per distinct option set."""
        feats = _outputs(self.encoder(x))
        per_image = opts if isinstance(opts, list) else [opts] * x.shape[0]
        hyps: list[Any] = [None] * x.shape[0]
        for group in dict.fromkeys(per_image):
            idx = [i for i, o in enumerate(per_image) if o == group]
            sel = feats if len(idx) == len(per_image) else tuple(f[idx] for f in feats)
            for i, hyp in zip(idx, beam_search(self.step, *sel, self.start, self.end, group), strict=True):
                hyps[i] = hyp
        return hyps

    def words(self, hyp: Hypothesis) -> tuple[list[str], torch.Tensor]:
        """Caption words (special tokens stripped) and their attention rows."""
        keep = [i for i, tok in enumerate(hyp.tokens) if tok not in self.strip]
        return [self.vocab[hyp.tokens[i]] for i in keep], hyp.alphas[keep]
