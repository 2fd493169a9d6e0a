"""Show-Attend-Tell: tutorial checkpoint import, restricted unpickling, batched beam search, exports.

The tutorial's classes are re-declared here in a fake module named ``models`` (its import path) so
that a checkpoint in its exact format can be written without its repository.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from zooserve.errors import WeightsError
from zooserve.export.build import BuildOptions, make_manifest
from zooserve.models import registry
from zooserve.models.beam_search import BeamOptions, Captioner
from zooserve.models.sat_checkpoint import SatCheckpoint, import_checkpoint, save_checkpoint
from zooserve.models.sat_modules import DecoderStep, EncodeInit
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.specs import Format

torch.set_num_threads(1)
WORDS = ["a", "red", "blue", "circle", "square", "left", "of", "above", "the", "is"]
WORD_MAP = {"<pad>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
WORD_MAP |= {"<unk>": len(WORD_MAP), "<start>": len(WORD_MAP) + 1, "<end>": len(WORD_MAP) + 2}
SIDE = 64


# ---- the tutorial's models.py, re-declared (structure and names as in its repository) --------------
class RefEncoder(nn.Module):
    def __init__(self, encoded_image_size: int = 14) -> None:
        super().__init__()
        self.enc_image_size = encoded_image_size
        resnet = ResNet(BasicBlock, [1, 1, 1, 1])  # the tutorial uses resnet101; tiny for speed
        self.resnet = nn.Sequential(*list(resnet.children())[:-2])
        self.adaptive_pool = nn.AdaptiveAvgPool2d((encoded_image_size, encoded_image_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adaptive_pool(self.resnet(images)).permute(0, 2, 3, 1)


class RefAttention(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)
        self.relu = nn.ReLU()
        self.softmax = nn.Softmax(dim=1)

    def forward(
        self, encoder_out: torch.Tensor, decoder_hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        att1 = self.encoder_att(encoder_out)
        att2 = self.decoder_att(decoder_hidden)
        att = self.full_att(self.relu(att1 + att2.unsqueeze(1))).squeeze(2)
        alpha = self.softmax(att)
        return (encoder_out * alpha.unsqueeze(2)).sum(dim=1), alpha


class RefDecoderWithAttention(nn.Module):
    def __init__(
        self,
        attention_dim: int,
        embed_dim: int,
        decoder_dim: int,
        vocab_size: int,
        decoder_layers: int = 1,
        encoder_dim: int = 2048,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.encoder_dim, self.attention_dim, self.embed_dim = encoder_dim, attention_dim, embed_dim
        self.decoder_dim, self.vocab_size, self.decoder_layers = decoder_dim, vocab_size, decoder_layers
        self.attention = RefAttention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, decoder_layers)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.sigmoid = nn.Sigmoid()
        self.fc = nn.Linear(decoder_dim, vocab_size)
        self.embedding.weight.data.uniform_(-0.1, 0.1)
        self.fc.bias.data.fill_(0)
        self.fc.weight.data.uniform_(-0.1, 0.1)

    def init_hidden_state(self, encoder_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = encoder_out.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)


def _fake_models_module() -> types.ModuleType:
    mod = types.ModuleType("models")
    for cls, name in (
        (RefEncoder, "Encoder"),
        (RefAttention, "Attention"),
        (RefDecoderWithAttention, "DecoderWithAttention"),
    ):
        cls.__module__, cls.__name__, cls.__qualname__ = "models", name, name
        setattr(mod, name, cls)
    return mod


@torch.no_grad()
def _make_captions_end(decoder: nn.Module) -> None:
    """Random decoders either end at once or never. Here the LSTM cell state grows every step
    (biased gates) and <end>'s logit follows it: captions of 15-30 varied tokens, clear margins."""
    hd, lstm = decoder.decoder_dim, decoder.decode_step
    lstm.weight_ih.mul_(0.1)
    lstm.weight_hh.mul_(0.1)
    lstm.bias_ih[: 2 * hd] += 3.0  # input and forget gates open
    lstm.bias_ih[2 * hd : 3 * hd] = 0.2  # candidate: c grows ~0.2 per step
    lstm.bias_ih[3 * hd :] += 3.0  # output gate open
    decoder.fc.weight.uniform_(-1.0, 1.0)
    decoder.fc.weight[WORD_MAP["<end>"]] = 0.5
    decoder.fc.bias[WORD_MAP["<end>"]] = -8.0


@torch.no_grad()
def reference_beam_search(
    encoder: nn.Module, decoder: nn.Module, image: torch.Tensor, word_map: dict[str, int], beam_size: int = 3
) -> list[int]:
    """caption.py's caption_image_beam_search, straightforwardly, with its true division fixed."""
    k, vocab_size = beam_size, len(word_map)
    encoder_out = encoder(image)
    encoder_dim = encoder_out.size(3)
    encoder_out = encoder_out.view(1, -1, encoder_dim)
    num_pixels = encoder_out.size(1)
    encoder_out = encoder_out.expand(k, num_pixels, encoder_dim)
    k_prev_words = torch.LongTensor([[word_map["<start>"]]] * k)
    seqs = k_prev_words
    top_k_scores = torch.zeros(k, 1)
    complete_seqs, complete_seqs_scores = [], []
    step = 1
    h, c = decoder.init_hidden_state(encoder_out)
    while True:
        embeddings = decoder.embedding(k_prev_words).squeeze(1)
        awe, alpha = decoder.attention(encoder_out, h)
        gate = decoder.sigmoid(decoder.f_beta(h))
        awe = gate * awe
        h, c = decoder.decode_step(torch.cat([embeddings, awe], dim=1), (h, c))
        scores = F.log_softmax(decoder.fc(h), dim=1)
        scores = top_k_scores.expand_as(scores) + scores
        if step == 1:
            top_k_scores, top_k_words = scores[0].topk(k, 0, True, True)
        else:
            top_k_scores, top_k_words = scores.view(-1).topk(k, 0, True, True)
        prev_word_inds = torch.div(top_k_words, vocab_size, rounding_mode="floor")
        next_word_inds = top_k_words % vocab_size
        seqs = torch.cat([seqs[prev_word_inds], next_word_inds.unsqueeze(1)], dim=1)
        incomplete_inds = [i for i, w in enumerate(next_word_inds) if w != word_map["<end>"]]
        complete_inds = list(set(range(len(next_word_inds))) - set(incomplete_inds))
        if len(complete_inds) > 0:
            complete_seqs.extend(seqs[complete_inds].tolist())
            complete_seqs_scores.extend(top_k_scores[complete_inds])
        k -= len(complete_inds)
        if k == 0:
            break
        seqs = seqs[incomplete_inds]
        h = h[prev_word_inds[incomplete_inds]]
        c = c[prev_word_inds[incomplete_inds]]
        encoder_out = encoder_out[prev_word_inds[incomplete_inds]]
        top_k_scores = top_k_scores[incomplete_inds].unsqueeze(1)
        k_prev_words = next_word_inds[incomplete_inds].unsqueeze(1)
        if step > 50:
            break
        step += 1
    i = complete_seqs_scores.index(max(complete_seqs_scores))
    return complete_seqs[i]


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, nn.Module, nn.Module]:
    torch.manual_seed(1)
    sys.modules["models"] = _fake_models_module()
    try:
        encoder = RefEncoder().eval()
        decoder = RefDecoderWithAttention(16, 16, 32, len(WORD_MAP), encoder_dim=512).eval()
        _make_captions_end(decoder)
        opt = torch.optim.Adam(decoder.parameters())  # the tutorial pickles its optimizers too
        root = tmp_path_factory.mktemp("reference")
        path, wm = root / "BEST_checkpoint.pth.tar", root / "WORDMAP.json"
        torch.save(
            {
                "epoch": 3,
                "bleu-4": 0.2,
                "encoder": encoder,
                "decoder": decoder,
                "encoder_optimizer": None,
                "decoder_optimizer": opt,
            },
            path,
        )
        wm.write_text(json.dumps(WORD_MAP))
    finally:
        del sys.modules["models"]  # the import must not need the tutorial's module
    return path, wm, encoder, decoder


def _captioner(ckpt: SatCheckpoint) -> Captioner:
    encoder, decoder = ckpt.build()
    special = {t: ckpt.vocab.index(t) for t in ("<start>", "<end>", "<pad>")}
    return Captioner(EncodeInit(encoder, decoder), DecoderStep(decoder), ckpt.vocab, special)


def test_reference_checkpoint_imports_and_matches_reference_beam_search(reference_checkpoint) -> None:
    path, wm, ref_encoder, ref_decoder = reference_checkpoint
    ckpt = import_checkpoint(path, wm, trust_pickle=True)
    assert ckpt.source_format == "reference" and ckpt.config.backbone == "resnet-basic-1-1-1-1"
    captioner = _captioner(ckpt)
    torch.manual_seed(2)
    images = torch.randn(5, 3, SIDE, SIDE)
    hyps = captioner(images, BeamOptions(beam_size=3))
    for i, hyp in enumerate(hyps):
        expected = reference_beam_search(ref_encoder, ref_decoder, images[i : i + 1], WORD_MAP)
        assert hyp.finished and [WORD_MAP["<start>"], *hyp.tokens] == expected


def test_reference_format_needs_opt_in_and_word_map(reference_checkpoint) -> None:
    path, wm, _, _ = reference_checkpoint
    with pytest.raises(WeightsError, match="--trust-pickle"):
        import_checkpoint(path, wm)
    with pytest.raises(WeightsError, match="word map"):
        import_checkpoint(path, None, trust_pickle=True)


class _Evil:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


@pytest.mark.parametrize("func", [os.system, eval])
def test_restricted_unpickler_refuses_other_globals(
    tmp_path: Path, func: object, reference_checkpoint
) -> None:
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "evil.pth"
    torch.save({"encoder": _Evil(func, arg), "decoder": None}, path)
    with pytest.raises(WeightsError, match="refusing to load"):
        import_checkpoint(path, reference_checkpoint[1], trust_pickle=True)
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"  # a bare pickle, not a torch zip file
    raw.write_bytes(pickle.dumps(_Evil(func, arg), protocol=2))
    with pytest.raises(WeightsError):
        import_checkpoint(raw, reference_checkpoint[1], trust_pickle=True)
    assert not marker.exists()


def test_our_format_round_trip(tmp_path: Path, reference_checkpoint) -> None:
    path, wm, _, _ = reference_checkpoint
    ckpt = import_checkpoint(path, wm, trust_pickle=True)
    ours = save_checkpoint(ckpt, tmp_path / "sat.pt")
    again = import_checkpoint(ours)  # weights_only=True, no opt-in needed
    images = torch.randn(2, 3, SIDE, SIDE)
    opts = BeamOptions()
    assert [h.tokens for h in _captioner(again)(images, opts)] == [
        h.tokens for h in _captioner(ckpt)(images, opts)
    ]


# ---- batched beam search on the registry's tiny model ----------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    spec = registry.get("tiny_show_attend_tell")
    prepared = spec.prepare(spec)
    step = prepared.targets["step"].module
    with torch.no_grad():
        step.decoder.fc.weight.mul_(40.0)  # random weights are near-uniform: sharpen to avoid near-ties
    ids = prepared.metadata["special_tokens"]
    captioner = Captioner(prepared.targets["encoder"].module, step, prepared.labels, ids)
    return spec, prepared, captioner


def test_batched_equals_per_image(tiny) -> None:
    _, _, captioner = tiny
    torch.manual_seed(3)
    images = torch.randn(6, 3, SIDE, SIDE)
    for opts in (BeamOptions(beam_size=3), BeamOptions(beam_size=4, length_norm=1.0)):
        batched = captioner(images, opts)
        for i, hyp in enumerate(batched):
            alone = captioner(images[i : i + 1], opts)[0]
            assert hyp.tokens == alone.tokens
            assert hyp.score == pytest.approx(alone.score, abs=1e-4)


@torch.no_grad()
def _greedy(captioner: Captioner, image: torch.Tensor, max_length: int) -> list[int]:
    enc, att1, h, c = captioner.encoder(image)
    word, rows, out = torch.tensor([captioner.start]), torch.tensor([0]), []
    for _ in range(max_length + 1):
        logp, h, c, _ = captioner.step(enc, att1, rows, word, h, c)
        word = logp.argmax(1)
        out.append(int(word))
        if out[-1] == captioner.end:
            break
    return out


def test_beam_one_is_greedy(tiny) -> None:
    _, _, captioner = tiny
    torch.manual_seed(4)
    images = torch.randn(4, 3, SIDE, SIDE)
    for i, hyp in enumerate(captioner(images, BeamOptions(beam_size=1, max_length=30))):
        assert hyp.tokens == _greedy(captioner, images[i : i + 1], 30)[: len(hyp.tokens)]


def test_no_end_returns_max_length_caption(tiny) -> None:
    _, prepared, captioner = tiny
    fc = prepared.targets["step"].module.decoder.fc
    end = captioner.end
    saved = fc.bias.data.clone()
    try:
        fc.bias.data[end] = -1e4  # <end> is never chosen
        hyps = captioner(torch.randn(3, 3, SIDE, SIDE), BeamOptions(beam_size=3, max_length=7))
    finally:
        fc.bias.data.copy_(saved)
    for hyp in hyps:
        assert not hyp.finished and len(hyp.tokens) == 7 and end not in hyp.tokens
        words, alphas = captioner.words(hyp)
        assert len(words) == 7 and alphas.shape == (7, 14 * 14)
        assert not {"<start>", "<end>", "<pad>"} & set(words)


# ---- exports, bundles and the serving pipeline ---------------------------------------------------------
def _bundle_dir(root: Path, spec, prepared, fmt: str) -> Path:
    from zooserve.export.aoti import compile_aoti
    from zooserve.export.torchscript import compile_torchscript

    root.mkdir()
    compile_fn, suffix = (compile_aoti, ".pt2") if fmt == "aoti" else (compile_torchscript, ".pt")
    artifacts = {}
    for key, target in prepared.targets.items():
        compile_fn(copy.deepcopy(target), root / f"{key}{suffix}")  # compilers may touch the module
        artifacts[key] = f"{key}{suffix}"
    make_manifest(spec, prepared, BuildOptions(format=Format(fmt)), artifacts).write(root)
    return root


@pytest.fixture(scope="module")
def bundles(tiny, tmp_path_factory: pytest.TempPathFactory):
    """Compiled once for the module: AOTInductor and TorchScript bundles of the tiny model."""
    from zooserve.runtime.bundle import load_bundle

    spec, prepared, _ = tiny
    base = tmp_path_factory.mktemp("sat_bundles")
    return {
        fmt: load_bundle(_bundle_dir(base / fmt, spec, prepared, fmt), device="cpu")
        for fmt in ("aoti", "torchscript")
    }


def _png(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(0, 256, (48 + seed, 40 + 2 * seed, 3), dtype=torch.uint8, generator=g).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["aoti", "torchscript"])
def test_export_parity(bundles, tiny, fmt: str) -> None:
    _, prepared, eager = tiny
    bundle = bundles[fmt]
    torch.manual_seed(5)
    x = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        want = eager.encoder(x)
        got = bundle.modules["encoder"](x)
        for w, g in zip(want, got, strict=True):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
        enc, att1, h, c = want
        rows, words = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([3, 4, 5, 6, 7])
        step_in = (enc, att1, rows, words, h[rows], c[rows])
        for w, g in zip(eager.step(*step_in), bundle.modules["step"](*step_in), strict=True):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    from zooserve.runtime.caption import captioner_from_bundle

    opts = BeamOptions(beam_size=3)
    compiled = captioner_from_bundle(bundle)(x, opts)
    assert [h.tokens for h in compiled] == [h.tokens for h in eager(x, opts)]


def test_pipeline_responses_and_errors(bundles, tiny) -> None:
    from zooserve.runtime.tasks import make_pipeline

    bundle = bundles["aoti"]
    pipe = make_pipeline(bundle)
    requests = [
        Request(_png(1)),
        Request(b"not an image"),
        Request(_png(2), headers={"x-attention": "1"}),
        Request(_png(3), headers={"x-beam-size": "0"}),
        Request(_png(3), headers={"x-beam-size": "1"}),
    ]
    out = run_batch(pipe, requests)
    assert [r.status for r in out] == [200, 400, 200, 400, 200]
    assert out[1].body["type"] == "InvalidImage" and out[3].body["type"] == "InvalidParameter"
    ok = out[0].body
    assert set(ok) == {"model", "weights", "caption", "tokens", "score"} and ok["weights"] == "random"
    assert ok["caption"] == " ".join(ok["tokens"]) and "<end>" not in ok["tokens"]
    att = out[2].body["attention"]
    assert len(att) == len(out[2].body["tokens"]) and len(att[0]) == 14 and len(att[0][0]) == 14
    assert abs(sum(map(sum, att[0])) - 1.0) < 1e-2
    alone = run_batch(pipe, [Request(_png(1))])[0].body  # batch-mates do not change a caption
    assert alone["tokens"] == ok["tokens"]


def test_render_attention(tmp_path: Path) -> None:
    from zooserve.attention_plot import render_attention

    maps = torch.softmax(torch.randn(3, 196), 1).view(3, 14, 14).tolist()
    out = render_attention(_png(1), ["a", "red", "circle"], maps, tmp_path / "att.png")
    with Image.open(out) as im:
        assert im.size[0] > 200


@pytest.mark.slow
def test_demo_reaches_bleu4_target() -> None:
    from zooserve.models.shapes_captions import train_demo

    _, facts = train_demo()
    assert facts["bleu4_heldout"] >= 0.7


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("torch.nn.modules.linear", "Linear", (200_000, 200_000)),  # 160 GB of weights if constructed
        ("models", "DecoderWithAttention", (100_000, 100_000, 100_000, 1_000_000)),
        ("torch.nn.modules.sparse", "Embedding", (10**9, 1024)),
    ],
)
def test_an_allowed_class_cannot_be_called_as_a_memory_bomb(module: str, name: str, args: tuple) -> None:
    """A pickle may call an allowed class with any arguments (REDUCE): it gets a bare instance,
    the constructor never runs, nothing is allocated."""
    from zooserve.models.sat_checkpoint import RestrictedUnpickler

    crafted = b"\x80\x02c" + f"{module}\n{name}\n".encode() + pickle.dumps(args, 2)[2:-1] + b"R."
    obj = RestrictedUnpickler(io.BytesIO(crafted)).load()
    assert type(obj).__name__ == name.split(".")[-1] and "_parameters" not in obj.__dict__


def test_bytes_of_a_size_is_refused() -> None:
    from zooserve.models.sat_checkpoint import RestrictedUnpickler

    crafted = b"\x80\x02cbuiltins\nbytes\n" + pickle.dumps((10**11,), 2)[2:-1] + b"R."
    with pytest.raises(WeightsError, match="refusing"):
        RestrictedUnpickler(io.BytesIO(crafted)).load()


def test_tutorial_checkpoint_builds_through_the_cli(reference_checkpoint, tmp_path: Path) -> None:
    """``zooserve build show_attend_tell --weights ckpt --word-map wm --trust-pickle``, as a user
    with the tutorial's BEST_checkpoint runs it: an archive whose captions are the reference's."""
    path, wm, _, _ = reference_checkpoint
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "zooserve.cli", "build", "show_attend_tell", "--format", "torchscript",
           "--weights", str(path), "--word-map", str(wm), "--trust-pickle", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "show_attend_tell.mar").is_file() and "weights=user" in run.stdout
    from zooserve.runtime.bundle import load_bundle

    bundle = load_bundle(tmp_path / ".zooserve" / "builds" / "show_attend_tell", device="cpu")
    assert bundle.manifest.weights == "user" and bundle.manifest.metadata["source_format"] != "zooserve-sat"
    without = [c for c in cmd if c != "--trust-pickle"]
    refused = subprocess.run(without, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr  # no pickle without the opt-in
