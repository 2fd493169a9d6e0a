"""The bench plumbing, fast: model-only cells for a tiny model, tables, plots and the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zooserve.cli import main


def test_bench_model_only(tmp_path: Path) -> None:
    out, summary = tmp_path / "bench", tmp_path / "benchmarks.md"
    rc = main(
        [
            "bench",
            "model",
            "tiny_resnet",
            "--formats",
            "eager,torchscript",
            "--batches",
            "1,2",
            "--seconds",
            "0.5",
            "--out",
            str(out),
            "--summary",
            str(summary),
            "--work",
            str(tmp_path / "work"),
        ]
    )
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())["model_only"]
    assert {(r["format"], r["batch"]) for r in rows} == {
        (f, b) for f in ("eager", "torchscript") for b in (1, 2)
    }
    assert all(r["items_per_s"] > 0 and r["ms_per_batch"] > 0 for r in rows)
    assert (out / "model_only.png").stat().st_size > 0
    table = (out / "model_only.md").read_text()
    assert "| tiny_resnet | torchscript | 2 |" in table
    assert "Command: `zooserve bench model tiny_resnet" in summary.read_text()


def test_bench_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "no_such_model"]) == 2
    assert main(["bench", "model", "tiny_resnet", "--batches", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "--batches" in err


def test_targets_arithmetic() -> None:
    from zooserve.bench import summary

    res = {
        "model_only": [
            {"model": "m", "format": "aoti", "batch": 1, "items_per_s": 10.0, "ms_per_batch": 100.0},
            {"model": "m", "format": "aoti", "batch": 8, "items_per_s": 20.0, "ms_per_batch": 400.0},
        ],
        "served": [
            {"model": "m", "variant": "ours-aoti", "proto": p, "concurrency": c, "rps": r, "p50": 105.0}
            for p, c, r in (("rest", 1, 9.0), ("rest", 16, 17.0), ("grpc", 16, 18.0))
        ]
        + [
            {
                "model": "m",
                "variant": "stock (x)",
                "proto": "rest",
                "concurrency": 16,
                "rps": 10.0,
                "p50": 1.0,
            }
        ],
    }
    t = {row["target"]: row for row in summary.targets(res, "m")}
    assert t["served REST ÷ AOTI model-only (best batch)"]["value"] == pytest.approx(17 / 20)
    assert (
        t["ours ÷ stock (x), REST c16"]["value"] == pytest.approx(1.7)
        and t["ours ÷ stock (x), REST c16"]["met"]
    )
    assert t["gRPC ÷ REST, c16"]["met"]
    lone = t["lone request p50 (ms) ≤ AOTI bs1 + 10 ms"]
    assert lone["goal"] == pytest.approx(110.0) and lone["met"]
    res["served"][0]["p50"] = 120.0
    lone = {row["target"]: row for row in summary.targets(res, "m")}[
        "lone request p50 (ms) ≤ AOTI bs1 + 10 ms"
    ]
    assert not lone["met"] and "over by 10.00" in lone["gap"]
