"""`python -m fastercache_kernels compare`: the frontier gaps on constructed points, a quick run on the trained demo
CogVideoX (fk's First-Block-Cache next to diffusers' FirstBlockCache hook), a failing peer recorded instead of
crashing, and cache-dit skipped when it is not importable."""

import json
import sys

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("skimage")

from fastercache_kernels.bench import compare  # noqa: E402
from fastercache_kernels.bench.compare import Method, Point, frontier_gaps  # noqa: E402


def _p(method, owner, speedup, psnr, model="m", error=None):
    return Point(model, method, owner, cpu_s=1.0, speedup=speedup, psnr=psnr, error=error)


def test_frontier_gaps_pick_fks_best_point_at_or_above_the_peers_speed():
    points = [
        _p("no cache", "none", 1.0, 100.0),
        _p("fk slow", "fk", 1.5, 40.0),
        _p("fk mid", "fk", 2.0, 35.0),
        _p("fk fast", "fk", 3.0, 28.0),
        _p("fk exact", "fk", 1.1, 100.0),
        _p("fk other model", "fk", 9.0, 99.0, model="other"),
        _p("fk broken", "fk", 9.0, 99.0, error="ValueError: x"),
        _p("peer a", "diffusers", 1.9, 33.0),  # fk mid (2.0x, 35 dB) is the best at >= 1.9x: +2
        _p("peer b", "diffusers", 2.0, 37.5),  # equal speed counts: fk mid, -2.5
        _p("peer c", "cache-dit", 3.5, 20.0),  # nothing of fk's this fast
        _p("peer d", "diffusers", 1.05, 100.0),  # both exact: 0
        _p("peer e", "diffusers", 1.2, 100.0),  # exact peer, fk's best at >= 1.2x is 40 dB
        _p("peer f", "diffusers", 1.0, 50.0),  # fk exact at 1.1x
        _p("peer g", "diffusers", 1.0, 50.0, error="RuntimeError: shapes"),  # failed: no gap
    ]
    gaps = {g.peer: g for g in frontier_gaps(points)}
    assert sorted(gaps) == ["peer a", "peer b", "peer c", "peer d", "peer e", "peer f"]
    assert gaps["peer a"].fk_method == "fk mid" and gaps["peer a"].gap_db == pytest.approx(2.0)
    assert gaps["peer b"].fk_method == "fk mid" and gaps["peer b"].gap_db == pytest.approx(-2.5)
    assert gaps["peer c"].fk_method is None and gaps["peer c"].gap_db is None
    assert gaps["peer c"].note == "no fk point this fast"
    assert gaps["peer d"].fk_method == "fk exact" and gaps["peer d"].gap_db == 0.0
    assert gaps["peer e"].fk_method == "fk slow" and gaps["peer e"].gap_db is None
    assert gaps["peer e"].note == "peer exact, fk not"
    assert gaps["peer f"].fk_method == "fk exact" and gaps["peer f"].note == "fk exact, peer not"
    assert "+2.00" in compare.format_gaps(list(gaps.values()))


def test_quick_compare_on_the_demo_cogvideox(tmp_path, monkeypatch):
    from fastercache_kernels.__main__ import main

    monkeypatch.setitem(sys.modules, "cache_dit", None)  # an import of cache_dit now fails: its methods drop out
    main(["compare", "--quick", "--models", "cogvideox", "--methods", "fk First-Block-Cache 0.1,FirstBlockCache 0.1",
          "--out", str(tmp_path)])
    record = json.loads((tmp_path / "compare.json").read_text())
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert "| cogvideox | diffusers | diffusers FirstBlockCache 0.1 |" in (tmp_path / "compare.md").read_text()
    names = [p["method"] for p in record["points"]]
    # (--methods matches substrings: the forecasting variants of the same threshold are included)
    assert names == ["no cache", "fk First-Block-Cache 0.1", "fk First-Block-Cache 0.1 forecast 1",
                     "fk First-Block-Cache 0.1 forecast 2", "diffusers FirstBlockCache 0.1"]
    assert record["versions"]["cache-dit"] is None
    assert len(record["load"]["before"]) == 3 and len(record["load"]["after"]) == 3
    ref, *others = record["points"]
    assert ref["error"] is None and ref["psnr"] == compare.PSNR_CAP and ref["speedup"] == pytest.approx(1.0)
    for p in others:
        assert p["error"] is None, p["error"]
        assert p["speedup"] > 0 and p["cpu_s"] > 0 and len(p["rounds_cpu_s"]) == 1
        assert 0 < p["psnr"] <= compare.PSNR_CAP
    [gap] = record["gaps"]
    assert gap["peer"] == "diffusers FirstBlockCache 0.1"


def test_a_failing_peer_is_recorded_and_the_others_run(monkeypatch):
    target = compare.DemoTarget("cogvideox", clips=1, steps=4)

    def broken(t, obj):
        raise RuntimeError("this hook does not fit")

    methods = [Method("no cache", "none"), Method("peer broken", "diffusers", broken),
               *[m for m in compare.fk_methods(target) if m.name == "fk First-Block-Cache 0.1"]]
    points = compare.run_model(target, methods, rounds=2)
    assert [p.method for p in points] == ["no cache", "peer broken", "fk First-Block-Cache 0.1"]
    assert points[1].error == "RuntimeError: this hook does not fit" and points[1].speedup is None
    assert points[2].error is None and len(points[2].rounds_cpu_s) == 2
    assert "failed: RuntimeError: this hook does not fit" in compare.format_points(points)
    assert compare.frontier_gaps(points) == []
