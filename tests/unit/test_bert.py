"""BERT: transformers parity (eager, AOTInductor, TorchScript) through the runtime's dynamic
padding, the text pipeline over run_batch with bad inputs mixed in, weights errors, the demo.

A tiny random BertConfig is saved with ``save_pretrained`` (plus a WordPiece tokenizer trained by
``tokenizers``) and imported through ``prepare_bert`` exactly like a user's checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from zooserve.errors import WeightsError
from zooserve.export.build import BuildOptions, make_manifest
from zooserve.manifest import Manifest
from zooserve.models import bert_demo, registry
from zooserve.models.bert import prepare_bert
from zooserve.runtime.bundle import Bundle, load_bundle
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline
from zooserve.runtime.text import TextItem, TextPipeline
from zooserve.specs import Format, Prepared

MAX_POS = 128
LABELS = ["negative", "neutral", "positive"]
TEXTS = [
    "ok",
    "The striker scored against the league on monday, while the chef baked fresh bread.",
    "The engineers debugged the server; meanwhile the forecaster said a storm flooded the coast "
    "and investors sold stock prices after a long delay, because nothing else happened again today.",
]
LONG = " ".join(["the referee celebrated the championship"] * 40)  # far over MAX_POS tokens


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("hf_bert")
    tokenizer = bert_demo.train_wordpiece(bert_demo.topic_dataset(300, seed=5)[0], vocab_size=250)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POS,
        num_labels=3,
        type_vocab_size=2,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    bert_demo.save_hf_dir(BertForSequenceClassification(config).eval(), tokenizer, out, MAX_POS)
    return out


@pytest.fixture(scope="module")
def prepared(hf_dir: Path) -> Prepared:
    return prepare_bert(registry.get("tiny_bert"), weights=hf_dir)


@pytest.fixture(scope="module")
def reference(hf_dir: Path) -> Any:
    """transformers' own eager model and tokenizer, each text run alone (no padding at all)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(hf_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)

    @torch.no_grad()
    def logits(texts: list[str]) -> torch.Tensor:
        encs = [tokenizer(t, truncation=True, max_length=MAX_POS, return_tensors="pt") for t in texts]
        return torch.cat([model(**e).logits for e in encs])

    return logits


def write_bundle(
    root: Path, prepared: Prepared, fmt: str, artifact: str | None, name: str = "tiny_bert"
) -> Path:
    """A build directory by hand (its artifact compiled by the caller): the build's own manifest."""
    root.mkdir(parents=True, exist_ok=True)
    for file_name, src in prepared.extra_files.items():
        shutil.copyfile(src, root / file_name)
    opts = BuildOptions(format=Format(fmt), archive_name=name)
    make_manifest(registry.get("tiny_bert"), prepared, opts, {"model": artifact} if artifact else {}).write(
        root
    )
    return root


@pytest.fixture(scope="module")
def bundles(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """eager (hand-made bundle), AOTInductor and TorchScript, each compiled once for the module."""
    from zooserve.export.aoti import compile_aoti
    from zooserve.export.torchscript import compile_torchscript

    base = tmp_path_factory.mktemp("bundles")
    target = prepared.targets["model"]
    eager_root = write_bundle(base / "eager", prepared, "aoti", None)
    manifest = Manifest.read(eager_root)
    eager = Bundle(eager_root, manifest, manifest.serving, modules={"model": target.module})
    compile_aoti(target, write_bundle(base / "aoti", prepared, "aoti", "model.pt2") / "model.pt2")
    compile_torchscript(target, write_bundle(base / "ts", prepared, "torchscript", "model.pt") / "model.pt")
    return {
        "eager": eager,
        "aoti": load_bundle(base / "aoti", device="cpu"),
        "torchscript": load_bundle(base / "ts", device="cpu"),
    }


def test_prepared_contract(prepared: Prepared) -> None:
    assert prepared.weights == "user" and prepared.labels == LABELS
    assert prepared.metadata["max_length"] == MAX_POS and prepared.metadata["pad_multiple"] == 8
    assert prepared.extra_files["tokenizer.json"].is_file()
    target = prepared.targets["model"]
    assert len(target.example_inputs) == 3 and all(d[1] == ("seq", 8, MAX_POS) for d in target.dynamic)
    json.dumps(prepared.metadata)


@pytest.mark.parametrize("fmt", ["eager", "aoti", "torchscript"])
@pytest.mark.parametrize("texts", [TEXTS[1:2], [*TEXTS, LONG]], ids=["batch1", "mixed-lengths"])
def test_transformers_parity(bundles: dict[str, Bundle], reference: Any, fmt: str, texts: list[str]) -> None:
    """Runtime tokenizer + dynamic padding + exported model == transformers on each text alone."""
    pipe = TextPipeline(bundles[fmt])
    batch = pipe.preprocess([TextItem(t, 3) for t in texts])
    with torch.inference_mode():
        out = pipe.model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert _relative(out, reference(texts)) <= 1e-4


def test_dynamic_padding(bundles: dict[str, Bundle]) -> None:
    pipe = TextPipeline(bundles["eager"])
    for texts in (["ok"], TEXTS, [*TEXTS, LONG]):
        items = [TextItem(t, 3) for t in texts]
        batch = pipe.preprocess(items)
        lengths = batch.attention_mask.sum(1)
        width = batch.input_ids.shape[1]
        assert width % 8 == 0 and width - int(lengths.max()) < 8  # the longest rounded up, no more
        assert batch.token_type_ids.shape == batch.input_ids.shape
        assert [it.truncated for it in items] == [t == LONG for t in texts]
    assert width == MAX_POS and int(lengths[-1]) == MAX_POS


def test_padding_never_exceeds_positions(bundles: dict[str, Bundle]) -> None:
    """With max_length not a multiple of 8, the rounded-up width is clipped to max_length."""
    eager = bundles["eager"]
    manifest = replace(eager.manifest, metadata={**eager.manifest.metadata, "max_length": 60})
    pipe = TextPipeline(replace(eager, manifest=manifest))
    batch = pipe.preprocess([TextItem(LONG, 3)])
    assert batch.input_ids.shape[1] == 60 and batch.input_ids.is_contiguous()  # AOTI needs contiguous


def _good_requests() -> list[Request]:
    return [
        Request(TEXTS[1].encode()),
        Request(TEXTS[2], content_type="text/plain"),
        Request({"text": TEXTS[0]}, content_type="application/json"),
        Request(json.dumps({"text": LONG}).encode(), content_type="application/json"),
        Request("ok", headers={"x-topk": "1"}, content_type="text/plain"),
    ]


BAD = [
    (Request(b""), 400, "EmptyBody"),
    (Request(b"caf\xe9 \xff"), 400, "InvalidText"),
    (Request("   \n", content_type="text/plain"), 400, "InvalidText"),
    (Request({"text": "lone \ud800 surrogate"}, content_type="application/json"), 400, "InvalidText"),
    (Request(b'{"text": "unterminated', content_type="application/json"), 400, "InvalidJSON"),
    (Request({"txt": "no text field"}, content_type="application/json"), 400, "InvalidJSON"),
    (Request({"text": ["a", "b"]}, content_type="application/json"), 400, "InvalidJSON"),
    (Request({"text": 7}, content_type="application/json"), 400, "InvalidJSON"),
    (Request(b"x" * 65537), 413, "PayloadTooLarge"),
    (Request({"text": "hi", "topk": 99}, content_type="application/json"), 400, "InvalidParameter"),
]


def test_pipeline_end_to_end(bundles: dict[str, Bundle]) -> None:
    """AOTI bundle over run_batch: bad requests get their own 4xx; batch-mates are unaffected."""
    pipe = make_pipeline(bundles["aoti"])
    assert isinstance(pipe, TextPipeline)
    alone = run_batch(pipe, _good_requests())
    mixed_requests = [r for pair in zip(_good_requests(), [b[0] for b in BAD], strict=False) for r in pair]
    mixed_requests += [b[0] for b in BAD[len(_good_requests()) :]]
    mixed = run_batch(pipe, mixed_requests)
    good = [resp for resp in mixed if resp.status == 200]
    errors = {(resp.status, resp.body["type"]) for resp in mixed if resp.status != 200}
    assert errors == {(code, kind) for _, code, kind in BAD}
    assert len(good) == len(alone) == 5
    for a, b in zip(alone, good, strict=True):
        json.dumps(b.body)
        assert b.body["model"] == "tiny_bert" and b.body["weights"] == "user"
        assert b.body["truncated"] == a.body["truncated"]
        probs = [p["probability"] for p in b.body["predictions"]]
        assert probs == sorted(probs, reverse=True)
        ref = [p["probability"] for p in a.body["predictions"]]
        assert [p["index"] for p in a.body["predictions"]] == [p["index"] for p in b.body["predictions"]]
        assert probs == pytest.approx(ref, abs=1e-5)
    assert [len(r.body["predictions"]) for r in good] == [3, 3, 3, 3, 1]  # topk 5 capped at 3 labels
    assert [r.body["truncated"] for r in good] == [False, False, False, True, False]
    assert sum(p["probability"] for p in good[0].body["predictions"]) == pytest.approx(1, abs=1e-5)
    assert {p["label"] for p in good[0].body["predictions"]} == set(LABELS)


def test_vocab_txt_only_checkpoint(hf_dir: Path, prepared: Prepared, tmp_path: Path) -> None:
    """Older checkpoints ship vocab.txt without tokenizer.json: same tokenizer.json comes out."""
    from tokenizers import Tokenizer

    d = shutil.copytree(hf_dir, tmp_path / "vocab_only")
    Tokenizer.from_file(str(d / "tokenizer.json"))  # sanity: the original is readable
    vocab = json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]
    (d / "vocab.txt").write_text("".join(f"{t}\n" for t in sorted(vocab, key=vocab.get)), "utf-8")
    (d / "tokenizer.json").unlink()
    again = prepare_bert(registry.get("tiny_bert"), weights=d)
    a, b = (Tokenizer.from_file(str(p.extra_files["tokenizer.json"])) for p in (prepared, again))
    assert [e.ids for e in a.encode_batch(TEXTS)] == [e.ids for e in b.encode_batch(TEXTS)]


def test_weights_errors(hf_dir: Path, tmp_path: Path) -> None:
    from transformers import BertForMaskedLM

    spec = registry.get("bert")
    (tmp_path / "file.bin").write_bytes(b"nope")
    no_weights = shutil.copytree(
        hf_dir, tmp_path / "no_weights", ignore=shutil.ignore_patterns("*.safetensors")
    )
    mlm = tmp_path / "mlm"
    BertForMaskedLM(BertForMaskedLM.config_class.from_pretrained(hf_dir)).save_pretrained(mlm)
    shutil.copy(hf_dir / "tokenizer.json", mlm)
    corrupt = shutil.copytree(hf_dir, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\0" * 64)
    cases = {tmp_path / "missing": "not a directory", tmp_path / "file.bin": "not a directory"}
    cases |= {
        no_weights: "no model.safetensors",
        mlm: "not a BertForSequenceClassification",
        corrupt: "cannot load",
    }
    for path, message in cases.items():
        with pytest.raises(WeightsError, match=message) as info:
            prepare_bert(spec, weights=path)
        assert "\n" not in str(info.value)


def test_tiny_bert_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOOSERVE_CACHE", str(tmp_path))
    p = prepare_bert(registry.get("tiny_bert"))
    assert p.weights == "random" and p.labels == list(bert_demo.TOPICS)
    target = p.targets["model"]
    with torch.no_grad():
        assert target.module(*target.example_inputs).shape == (2, len(p.labels))


def test_demo_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build-time demo reaches its stated held-out accuracy, also exported and served in-process.

    Trains the real demo into a temporary cache: ~55 s on 2 busy cores (the file's longest test)."""
    from zooserve.export.torchscript import compile_torchscript

    monkeypatch.setenv("ZOOSERVE_CACHE", str(tmp_path / "cache"))
    p = prepare_bert(registry.get("bert"))
    assert p.weights == "trained-demo" and p.metadata["heldout_accuracy"] >= 0.97
    root = write_bundle(tmp_path / "bundle", p, "torchscript", "model.pt", name="bert")
    compile_torchscript(p.targets["model"], root / "model.pt")
    pipe = make_pipeline(load_bundle(root, device="cpu"))
    texts, labels = bert_demo.topic_dataset(p.metadata["heldout_size"], seed=bert_demo.DEMO_SEED + 1)
    responses = [
        r for i in range(0, len(texts), 64) for r in run_batch(pipe, [Request(t) for t in texts[i : i + 64]])
    ]
    predicted = [p.labels.index(r.body["predictions"][0]["label"]) for r in responses]
    accuracy = sum(a == b for a, b in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy == pytest.approx(p.metadata["heldout_accuracy"], abs=2e-3)
