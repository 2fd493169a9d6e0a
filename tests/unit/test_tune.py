"""``zooserve tune``'s pure parts: the grid, the pick rule and the model-config rewrite."""

from __future__ import annotations

import argparse

from zooserve.bench import tune


def _args(**kw: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    tune.add_arguments(p)
    return p.parse_args(["m", *[f"--{k}={v}" for k, v in kw.items()]])


def test_grid_skips_oversubscription_and_duplicate_batch1_points(monkeypatch) -> None:
    monkeypatch.setattr(tune.os, "sched_getaffinity", lambda _: {0, 1})
    points = tune.grid(_args(workers="1,2", threads="1,2", batch="1,8", delay="1,5"))
    assert all(p["workers"] * p["threads"] <= 2 for p in points)
    # (workers, threads) in {(1, 1), (1, 2), (2, 1)}; batch 1 never waits, so one delay value each
    assert sum(1 for p in points if p["batch"] == 1) == 3 and len(points) == 3 * 3
    assert {p["delay"] for p in points if p["batch"] == 1} == {1}


def _row(batch: int, delay: int, rps16: float, p50_1: float) -> dict:
    return {"workers": 1, "threads": 2, "batch": batch, "delay": delay, "rps_c16": rps16, "p50_c1": p50_1}


def test_pick_prefers_low_lone_latency_within_five_percent() -> None:
    rows = [_row(1, 1, 80.0, 31.0), _row(8, 1, 97.0, 32.0), _row(8, 20, 100.0, 52.0)]
    best = tune.pick(rows, [1, 16], floor_ms=30.0)
    assert (best["batch"], best["delay"], best["met"]) == (8, 1, True)


def test_pick_says_when_no_point_meets_both() -> None:
    rows = [_row(1, 1, 50.0, 31.0), _row(8, 20, 100.0, 52.0)]
    best = tune.pick(rows, [1, 16], floor_ms=30.0)
    assert (best["batch"], best["met"]) == (8, False)


def test_apply_point_keeps_other_keys() -> None:
    cfg = {
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": 4,
        "maxBatchDelay": 50,
        "responseTimeout": 120,
        "zooserve": {"threads": 1, "topk": 5},
    }
    out = tune.apply_point(cfg, {"workers": 1, "threads": 2, "batch": 8, "delay": 1})
    assert out == {
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 8,
        "maxBatchDelay": 1,
        "responseTimeout": 120,
        "zooserve": {"threads": 2, "topk": 5},
    }
