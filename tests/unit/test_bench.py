"""The bench plumbing, fast: model-only cells for a tiny model, tables, plots and the summary."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from zooserve.bench.precision import STOCK, variant
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
    assert "| tiny_resnet | torchscript | fp32 | 2 |" in table
    assert "Command: `zooserve bench model tiny_resnet" in summary.read_text()
    # `bench report` renders the same run again without measuring: same command line, same rows
    summary.unlink()
    (out / "model_only.md").unlink()
    assert main(["bench", "report", "--out", str(out), "--summary", str(summary)]) == 0
    assert (out / "model_only.md").read_text() == table
    assert "Command: `zooserve bench model tiny_resnet" in summary.read_text()
    assert main(["bench", "report", "--out", str(tmp_path / "nothing")]) == 2


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
    assert t["served ÷ model-only, fp32, small photo (REST)"]["value"] == pytest.approx(17 / 20)
    assert (
        t["ours fp32 ÷ stock (x), small photo, REST c16"]["value"] == pytest.approx(1.7)
        and t["ours fp32 ÷ stock (x), small photo, REST c16"]["met"]
    )
    assert t["gRPC ÷ REST, c16"]["met"]
    lone = t["lone request p50 (ms) ≤ AOTI bs1 + 10 ms"]
    assert lone["goal"] == pytest.approx(110.0) and lone["met"]
    res["served"][0]["p50"] = 120.0
    lone = {row["target"]: row for row in summary.targets(res, "m")}[
        "lone request p50 (ms) ≤ AOTI bs1 + 10 ms"
    ]
    assert not lone["met"] and "over by 10.00" in lone["gap"]


def test_a_limit_at_a_batch_the_server_never_forms_is_explained() -> None:
    """int8 peaks at batch 32 while the server batches 8: the gap says what bs8 allows."""
    from zooserve.bench import summary

    res = {
        "model_only": [
            {"model": "m", "format": "aoti", "precision": "int8", "batch": b, "items_per_s": v}
            for b, v in ((8, 40.0), (32, 64.0))
        ],
        "served": [
            {"model": "m", "variant": variant("int8"), "precision": "int8", "proto": "rest"}
            | {"concurrency": 16, "rps": 35.0, "p50": 1.0}
        ],
        "settings": {"batch_settings": {"batchSize": 8}},
    }
    t = {row["target"]: row for row in summary.targets(res, "m")}[
        "served ÷ model-only, int8, small photo (REST)"
    ]
    assert t["value"] == pytest.approx(35 / 64) and not t["met"]
    assert "at the served batchSize 8 the model alone does 40.0 img/s (bs8): served ÷ that = 0.88" in t["gap"]


def test_served_vs_limit_is_an_exact_product_of_measured_factors() -> None:
    from zooserve.bench import summary

    row = {"model": "m", "variant": "ours-aoti-bf16", "precision": "bf16", "proto": "rest", "concurrency": 16}
    # 8 per batch, handler 250 ms of which inference 200 ms, busy 90 %: 0.9 x 0.8 x 40 = 28.8 req/s
    row |= {"rps": 28.8, "batch_mean": 8.0, "handler_ms": 250.0, "inference_ms": 200.0, "handler_share": 90.0}
    row |= {"decode_ms": 30.0, "preprocess_ms": 20.0, "cpu_workers_pct": 180.0, "loadgen_cpu_pct": 2.0}
    mo = [{"model": "m", "format": "aoti", "precision": "bf16", "batch": 8, "items_per_s": 50.0}]
    (line,) = summary.served_vs_limit({"model_only": mo, "served": [row]}, "m")
    assert "served 28.8 ≈ 0.90 (handler busy" in line and "× 0.80 (inference's share" in line
    assert "× 40.0 img/s (the model inside the worker) = 28.8" in line and "ran at 0.80 of it" in line
    assert "workers 180" in line


def _photo_results() -> dict:
    """A run of the precision part: fp32 and bf16 on both photos, through the gateway and not,
    and stock; figures chosen so every ratio is easy to check by hand."""
    mo = [
        {"model": "m", "format": "aoti", "precision": p, "batch": b, "items_per_s": v, "ms_per_batch": 1.0}
        for p, b, v in (("fp32", 1, 10.0), ("fp32", 8, 20.0), ("bf16", 8, 40.0))
    ]
    sv = []
    for w, ours, alone, stock in (
        ("small", (17.0, 30.0), (18.0, 32.0), 10.0),
        ("12mp", (10.0, 16.0), (10.0, 17.0), 2.0),
    ):
        for p, r in zip(("fp32", "bf16"), ours, strict=True):
            sv.append({"variant": variant(p), "precision": p, "workload": w, "gateway": True, "rps": r})
        for p, r in zip(("fp32", "bf16"), alone, strict=True):
            sv.append(
                {
                    "variant": variant(p, gateway=False),
                    "precision": p,
                    "workload": w,
                    "gateway": False,
                    "rps": r,
                }
            )
        sv.append({"variant": STOCK, "precision": "fp32", "workload": w, "gateway": False, "rps": stock})
    sv = [r | {"model": "m", "proto": "rest", "concurrency": 16, "p50": 50.0} for r in sv]
    return {"model_only": mo, "served": sv}


def test_photo_and_precision_targets() -> None:
    from zooserve.bench import summary

    t = {row["target"]: row for row in summary.targets(_photo_results(), "m")}
    assert t["served ÷ model-only, bf16, small photo (REST)"]["value"] == pytest.approx(30 / 40)
    assert not t["served ÷ model-only, bf16, small photo (REST)"]["met"]
    small_bf16 = t[f"ours bf16 ÷ {STOCK}, small photo, REST c16"]
    assert small_bf16["value"] == pytest.approx(3.0) and small_bf16["met"]
    big = t[f"ours fp32 ÷ {STOCK}, 12mp photo, REST c16"]
    assert big["value"] == pytest.approx(5.0) and big["goal"] == 2.5 and big["met"]
    assert t[f"ours bf16 ÷ {STOCK}, 12mp photo, REST c16"]["value"] == pytest.approx(8.0)
    small_fp32 = t[f"ours fp32 ÷ {STOCK}, small photo, REST c16"]
    assert small_fp32["value"] == pytest.approx(1.7) and small_fp32["met"] and not small_fp32["gap"]
    res = _photo_results()
    next(r for r in res["served"] if r["variant"] == STOCK and r["workload"] == "small")["rps"] = 15.0
    gap = {row["target"]: row for row in summary.targets(res, "m")}[
        f"ours fp32 ÷ {STOCK}, small photo, REST c16"
    ]
    assert not gap["met"] and "model-only fp32 ceiling ÷ stock = 1.33 (below the goal" in gap["gap"]


def test_photo_table_lists_every_precision_and_photo() -> None:
    from zooserve.bench import summary

    lines = summary.photo_table(_photo_results(), "m")
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines[2:]}
    assert set(rows) == {(w, p) for w in ("small", "12mp") for p in ("fp32", "bf16")}
    cells = [c.strip() for c in rows[("12mp", "bf16")].split("|")[1:-1]]
    # ours, alone, stock, model-only, served ÷ model-only, ours ÷ stock, gateway ÷ alone
    assert cells[2:9] == ["16.0", "17.0", "2.0", "40.0", "0.40", "8.00", "0.94"]


def test_camera_photo_is_a_12_mp_jpeg_made_from_the_bundled_photo(tmp_path: Path) -> None:
    from PIL import Image

    from zooserve.bench.samples import PHONE_12MP, camera_photo, write_workloads

    small = camera_photo((400, 300), quality=90)
    with Image.open(io.BytesIO(small)) as im:
        assert im.format == "JPEG" and im.size == (400, 300)
    assert camera_photo((400, 300)) == small  # deterministic
    paths = write_workloads(tmp_path, ["small", "12mp"])
    with Image.open(paths["12mp"]) as im:
        assert im.size == PHONE_12MP and im.format == "JPEG"
    assert (
        1_500_000 < paths["12mp"].stat().st_size < 6_000_000
    )  # a camera's file, under TorchServe's body limit
    with pytest.raises(ValueError, match="unknown workloads"):
        write_workloads(tmp_path, ["huge"])


def test_bench_refuses_unknown_workloads_and_precisions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "precision", "tiny_resnet", "--workloads", "small,huge"]) == 2
    assert main(["bench", "precision", "tiny_resnet", "--precisions", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "huge" in err and "fp16" in err


def test_variant_names() -> None:
    assert variant("fp32") == "ours-aoti" and variant("int8") == "ours-aoti-int8"
    assert variant("bf16", gateway=False) == "ours-aoti-bf16 (no gateway)"
