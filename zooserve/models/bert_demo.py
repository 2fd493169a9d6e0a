"""The BERT demo and tiny test model, built without network: generated topic sentences, a
WordPiece vocabulary trained by ``tokenizers``, and a small BERT fine-tuned on them (seeded).

Both are saved as ordinary Hugging Face directories in a cache, so ``prepare_bert`` loads them
exactly like a user's checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.processors import BertProcessing
from torch import nn
from tqdm import tqdm

from zooserve.models.bert_hf import PAD_MULTIPLE, LogitsOnly

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DEMO_VERSION = 1  # bump when the generator or training changes: invalidates the cache
DEMO_SEED = 0


# ---- generated topic sentences (demo and tiny vocabularies) --------------------------------------
# topic: (subjects, verbs, objects). Some objects are shared between topics on purpose.
TOPICS: dict[str, tuple[str, str, str]] = {
    "business": (
        "the bank|investors|the startup|shareholders|the company|analysts|the board|a retailer",
        "raised|cut|reported|invested in|sold|announced|negotiated|audited",
        "profits|the merger|interest rates|the budget|quarterly earnings|stock prices|a loan|the market"
        "|a record",
    ),
    "food": (
        "the chef|my grandmother|the bakery|the restaurant|a food critic|the kitchen staff|the caterer"
        "|the cook",
        "baked|roasted|tasted|seasoned|served|grilled|simmered|sliced",
        "the soup|fresh bread|a spicy curry|the pasta|chocolate cake|the salad|the chips|garlic butter"
        "|the market",
    ),
    "sports": (
        "the striker|the coach|the goalkeeper|our team|the referee|the captain|the sprinter|the fans",
        "scored against|trained for|defended|celebrated|lost|won|cheered for|qualified for",
        "the match|the league|the tournament|the final|the championship|the season|a penalty|the relay"
        "|a record",
    ),
    "technology": (
        "the engineers|the developers|the software team|a hacker|the programmer|the chip maker|the robot"
        "|the app",
        "debugged|released|encrypted|upgraded|compiled|deployed|patched|benchmarked",
        "the processor|the database|a new smartphone|the network|the algorithm|the server|the chips"
        "|the update",
    ),
    "weather": (
        "the forecaster|a storm|the wind|heavy rain|the thunder|a cold front|the fog|the heatwave",
        "flooded|battered|swept across|froze|soaked|hit|cooled|warmed",
        "the coast|the valley|the highway|the northern hills|the harbour|the farmland|the city|a record low",
    ),
}
# topic-free material, "|"-separated like TOPICS
NEUTRAL_SUBJECTS = "people|my friend|everyone|a local group|the report|the neighbours|someone|the visitors"
FILLERS = (
    "on monday|last week|in the city|according to reports|for the first time|this morning|again"
    "|near the river|after a long delay|as expected"
)
CHATTER = (
    "nobody said much|it was a long day|people talked about it for hours|the news spread quickly"
    "|we were not surprised|nothing else happened"
)
JOINERS = [" and ", ", while ", ". then ", "; meanwhile ", ", because ", " but "]


def _clause(rng: random.Random, topic: str) -> str:
    subjects, verbs, objects = (part.split("|") for part in TOPICS[topic])
    subject = rng.choice(NEUTRAL_SUBJECTS.split("|")) if rng.random() < 0.25 else rng.choice(subjects)
    words = [subject, rng.choice(verbs), rng.choice(objects)]
    if rng.random() < 0.6:
        words.append(rng.choice(FILLERS.split("|")))
    return " ".join(words)


def topic_sentence(rng: random.Random) -> tuple[str, int]:
    """1-4 topic clauses plus distractors: fewer clauses of other topics and topic-free chatter.
    The label is the majority topic, so a model has to weigh clauses, not spot one keyword."""
    names = list(TOPICS)
    label = rng.randrange(len(names))
    n_main = rng.randint(1, 4)
    clauses = [_clause(rng, names[label]) for _ in range(n_main)]
    for _ in range(rng.randint(0, n_main - 1)):  # strictly fewer than n_main: still the majority
        clauses.append(_clause(rng, rng.choice([n for n in names if n != names[label]])))
    clauses += rng.sample(CHATTER.split("|"), rng.randint(0, 2))
    rng.shuffle(clauses)
    text = clauses[0]
    for c in clauses[1:]:
        text += rng.choice(JOINERS) + c
    text = text[0].upper() + text[1:] + rng.choice([".", "!", ""])
    return text, label


def topic_dataset(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    pairs = [topic_sentence(rng) for _ in range(n)]
    return [t for t, _ in pairs], [y for _, y in pairs]


def train_wordpiece(texts: list[str], vocab_size: int) -> Any:
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tokenizer = wp._tokenizer  # the tokenizers.Tokenizer (BERT normalizer and pre-tokenizer)
    # training leaves no post-processor: add [CLS] ... [SEP] as every BERT tokenizer does
    tokenizer.post_processor = BertProcessing(*((t, tokenizer.token_to_id(t)) for t in ("[SEP]", "[CLS]")))
    return tokenizer


def save_hf_dir(model: nn.Module, tokenizer: Any, out: Path, max_length: int) -> None:
    from transformers import BertTokenizer  # heavy: only when BERT is built

    model.save_pretrained(out)
    BertTokenizer(tokenizer_object=tokenizer, model_max_length=max_length).save_pretrained(out)


# ---- cached model directories --------------------------------------------------------------------
def cache_root() -> Path:
    if os.environ.get("ZOOSERVE_CACHE"):
        return Path(os.environ["ZOOSERVE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zooserve"


def _cached(name: str, build: Callable[[Path], Any]) -> Path:
    """``build(tmp_dir)`` once; the finished directory is renamed into place (atomic, reusable)."""
    final = cache_root() / name
    if (final / "config.json").is_file():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # unwritable home (e.g. a non-root container): build under the temp dir instead
        final = Path(tempfile.gettempdir()) / "zooserve-cache" / name
        final.parent.mkdir(parents=True, exist_ok=True)
        if (final / "config.json").is_file():
            return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        build(tmp)
        os.replace(tmp, final)
    except OSError:
        if not (final / "config.json").is_file():  # not a lost race with another build: a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_dir() -> Path:
    return _cached("bert-tiny-v1", _build_tiny)


def _build_tiny(out: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification  # heavy: only when BERT is built

    tokenizer = train_wordpiece(topic_dataset(400, seed=1)[0], vocab_size=300)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(TOPICS),
        id2label=dict(enumerate(TOPICS)),
        label2id={n: i for i, n in enumerate(TOPICS)},
    )
    torch.manual_seed(0)
    save_hf_dir(BertForSequenceClassification(config).eval(), tokenizer, out, 128)


def demo_dir() -> Path:
    return _cached(f"bert-demo-v{DEMO_VERSION}", train_demo)


def train_demo(out: Path, n_train: int = 4000, n_heldout: int = 1000, epochs: int = 2) -> dict[str, Any]:
    """Small BERT fine-tuned from scratch on generated topic sentences (seeded, ~1 min on 2 cores)."""
    from transformers import BertConfig, BertForSequenceClassification  # heavy: only when BERT is built

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t0 = time.perf_counter()
        x_train, y_train = topic_dataset(n_train, seed=DEMO_SEED)
        x_test, y_test = topic_dataset(n_heldout, seed=DEMO_SEED + 1)
        tokenizer = train_wordpiece(x_train, vocab_size=1000)
        config = BertConfig(
            vocab_size=tokenizer.get_vocab_size(),
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=256,
            max_position_embeddings=512,
            num_labels=len(TOPICS),
            id2label=dict(enumerate(TOPICS)),
            label2id={n: i for i, n in enumerate(TOPICS)},
        )
        torch.manual_seed(DEMO_SEED)
        model = BertForSequenceClassification(config)
        _fit(model, tokenizer, x_train, y_train, epochs)
        accuracy = demo_accuracy(model, tokenizer, x_test, y_test)
        save_hf_dir(model.eval(), tokenizer, out, config.max_position_embeddings)
        facts = {
            "heldout_accuracy": round(accuracy, 4),
            "heldout_size": n_heldout,
            "train_size": n_train,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "demo_task": "topic of generated sentences",
        }
        (out / "demo.json").write_text(json.dumps(facts, indent=1), "utf-8")
        print(f"bert demo: held-out accuracy {accuracy:.4f} on {n_heldout} sentences")
        return facts
    finally:
        torch.set_num_threads(threads)


def _batches(tokenizer: Any, texts: list[str], max_len: int = 128) -> Any:
    tokenizer.enable_truncation(max_len)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_to_multiple_of=PAD_MULTIPLE)
    encs = tokenizer.encode_batch(texts)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return (torch.tensor([getattr(e, f) for e in encs]) for f in ("ids", "attention_mask", "type_ids"))


def _fit(
    model: nn.Module, tokenizer: Any, texts: list[str], labels: list[int], epochs: int, bs: int = 32
) -> None:
    from transformers import get_linear_schedule_with_warmup  # heavy: only when BERT is built

    steps = epochs * ((len(texts) + bs - 1) // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, steps // 10, steps)
    gen = torch.Generator().manual_seed(DEMO_SEED)
    y_all = torch.tensor(labels)
    model.train()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    with tqdm(total=steps, desc="fine-tuning bert demo on generated topics", unit="step") as bar:
        for _ in range(epochs):
            for idx in _length_buckets(lengths, bs, gen):
                ids, mask, types = _batches(tokenizer, [texts[j] for j in idx])
                loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=y_all[idx]).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def _length_buckets(lengths: list[int], bs: int, gen: torch.Generator, pool: int = 16) -> list[list[int]]:
    """Shuffled batches of similar length (sorted within pools of 16 batches): ~half the padding."""
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    batches = []
    for i in range(0, len(perm), bs * pool):
        chunk = sorted(perm[i : i + bs * pool], key=lengths.__getitem__)
        batches += [chunk[j : j + bs] for j in range(0, len(chunk), bs)]
    return [batches[k] for k in torch.randperm(len(batches), generator=gen).tolist()]


@torch.no_grad()
def demo_accuracy(model: Any, tokenizer: Any, texts: list[str], labels: list[int], bs: int = 256) -> float:
    """Top-1 accuracy of an eager model or any (ids, mask, types) -> logits callable."""
    call = LogitsOnly(model).eval() if hasattr(model, "config") else model
    correct = 0
    for i in range(0, len(texts), bs):
        logits = call(*_batches(tokenizer, texts[i : i + bs]))
        logits = logits[0] if isinstance(logits, (list, tuple)) else logits  # AOTI returns a list
        correct += int((logits.argmax(1) == torch.tensor(labels[i : i + bs])).sum())
    return correct / len(texts)
