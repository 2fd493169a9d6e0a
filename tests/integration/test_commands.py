"""The commands a user runs, run for real: the demo script, ``zooserve tune`` (a small grid), ``zooserve bench
served`` and ``bench precision`` on the 12 MP photo (a few seconds per point), ``zooserve build --evaluation
tencrop`` and its answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tools import require

from zooserve.bench.samples import photo_jpegs
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _zooserve(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "zooserve.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"zooserve {' '.join(args)}:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    return run


def test_tune_measures_a_small_grid_and_applies_its_pick(build_cache, tmp_path: Path) -> None:
    require("ab", "apache2-utils")
    res = build_cache("tiny_resnet", format="torchscript")
    store, work = tmp_path / "store", tmp_path / "builds"
    store.mkdir()
    shutil.copy(res.archive, store / "tiny_resnet.mar")
    shutil.copytree(res.bundle_dir, work / "tiny_resnet")
    before = (store / "tiny_resnet.mar").stat().st_mtime_ns
    run = _zooserve(
        "tune",
        "tiny_resnet",
        "--threads",
        "1",
        "--batch",
        "1,4",
        "--delay",
        "1",
        "--concurrency",
        "1,4",
        "--seconds",
        "1.5",
        "--store",
        str(store),
        "--work",
        str(work),
        "--run-dir",
        str(tmp_path / "tune"),
        "--apply",
        cwd=tmp_path,
    )
    result = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert len(result["rows"]) == 2 and all(r["rps_c4"] > 0 and r["errors_c4"] == 0 for r in result["rows"])
    assert result["pick"]["batch"] in (1, 4) and "pick:" in run.stdout
    assert (store / "tiny_resnet.mar").stat().st_mtime_ns != before  # re-packed with the pick


@pytest.fixture(scope="module")
def bench_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work dir for the bench tests: the tiny builds are made once."""
    return tmp_path_factory.mktemp("bench-work")


def _bench(tmp_path: Path, work: Path, *args: str) -> tuple[dict, str]:
    """``zooserve bench ARGS`` on tiny_resnet in ``tmp_path``: (results.json, the summary's text)."""
    require("ab", "apache2-utils")
    out, summary = tmp_path / "out", tmp_path / "benchmarks.md"
    where = ["--out", str(out), "--summary", str(summary), "--work", str(work)]
    _zooserve("bench", args[0], "tiny_resnet", *args[1:], *where, cwd=tmp_path, timeout=1500)
    return json.loads((out / "results.json").read_text()), summary.read_text()


def test_bench_served_measures_ours_over_rest_and_grpc(tmp_path: Path, bench_work: Path) -> None:
    res, text = _bench(tmp_path, bench_work, "served", "--concurrency", "1,4", "--seconds", "2")
    rows = res["served"]
    got = {(r["variant"], r["proto"], r["concurrency"]) for r in rows}
    assert {("ours-aoti", p, c) for p in ("rest", "grpc") for c in (1, 4)} <= got
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in rows)
    # each point says where the CPU went: the workers did the inference, the gateway relayed it
    assert all(r["cpu_workers_pct"] > 0 and r["cpu_gateway_pct"] > 0 for r in rows)
    assert all(r["cpu_workers_pct"] + r["cpu_frontend_pct"] < 100 * os.cpu_count() for r in rows)
    assert "tiny_resnet" in text and "CPU, % of one core: workers " in text


def test_bench_precision_serves_the_12_mp_photo_through_the_gateway_alone_and_stock(
    tmp_path: Path, bench_work: Path
) -> None:
    """The photo workload end to end on a tiny model: ours through the gateway, ours on TorchServe
    alone, stock TorchServe, all on the generated 12 MP JPEG, with the ratios in the summary."""
    res, text = _bench(
        tmp_path,
        bench_work,
        "precision",
        *("--precisions", "fp32", "--workloads", "12mp", "--concurrency", "1"),
        *("--batches", "1", "--seconds", "1"),
    )
    got = {(r["variant"], r["workload"], r["gateway"]): r for r in res["served"]}
    want = {
        ("ours-aoti", "12mp", True),
        ("ours-aoti (no gateway)", "12mp", False),
        ("stock (default threads)", "12mp", False),
    }
    assert want <= set(got)
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in got.values())
    assert got[("ours-aoti", "12mp", True)]["decode_ms"] > 0  # our handler's stages were read
    assert {(r["precision"], r["batch"]) for r in res["model_only"]} == {("fp32", 1)}
    assert "## Precisions and photos: tiny_resnet" in text and "| 12mp | fp32 |" in text
    assert "ours fp32 ÷ stock (default threads), 12mp photo, REST c1" in text


def test_tencrop_evaluation_and_exact_decode_through_the_cli(tmp_path: Path) -> None:
    _zooserve(
        "build",
        "tiny_resnet",
        "--format",
        "torchscript",
        "--evaluation",
        "tencrop",
        "--decode",
        "exact",
        "--name",
        "tr_tencrop",
        "--out",
        str(tmp_path / "store"),
        cwd=tmp_path,
    )
    bundle = load_bundle(tmp_path / ".zooserve" / "builds" / "tr_tencrop", device="cpu")
    assert bundle.manifest.serving.evaluation == "tencrop" and bundle.manifest.name == "tr_tencrop"
    assert bundle.manifest.serving.decode == "exact"
    pipe = make_pipeline(bundle)
    assert pipe.limits.min_side is None  # full-size decode: torchvision's pixels
    (answer,) = run_batch(pipe, [Request(photo_jpegs()["china.jpg"])])
    probs = [p["probability"] for p in answer.body["predictions"]]
    assert (
        answer.status == 200 and len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1
    )
    batch = pipe.preprocess([pipe.decode(Request(photo_jpegs()["china.jpg"]))])
    assert batch[0].shape[0] == 10  # the ten crops, one forward


def test_the_demo_script_predicts_over_rest_and_grpc(served, tmp_path: Path) -> None:
    """``make up``'s last step, against the session server: samples and drawn digits over REST and
    gRPC (same answers), a digit of the user's own with the frame lenet5 read, and a model that is
    not served is one line."""
    from zooserve.models.digits import render_sent

    mine = tmp_path / "my_seven.png"
    mine.write_bytes(render_sent(7, "DejaVuSans", (96, 96), 0.6))
    ports = served.cfg.ports
    run = subprocess.run(
        [sys.executable, str(ROOT / "client" / "demo.py"), str(mine), "--models", "lenet5", "no_such_model"]
        + ["--port", str(ports.inference), "--grpc-port", str(ports.grpc_inference)]
        + ["--key-file", str(served.cfg.key_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    answered = [line for line in lines if line.startswith("lenet5") and "gRPC answer: same" in line]
    assert len(answered) >= 10, run.stdout
    assert any(line.startswith("no_such_model: not served here") for line in lines), run.stdout
    yours = next(line for line in lines if "my_seven.png" in line)
    assert yours.split("->")[1].strip().startswith("7 ("), yours
    assert any(line.startswith("  |") for line in lines), "the 32x32 frame lenet5 read is shown"
