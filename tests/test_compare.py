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


def _p(method, owner, speedup, psnr, model="m", error=None, exact=None):
    """A point; exact (the uncached sample bit for bit) where its PSNR is the cap, unless `exact` says otherwise."""
    return Point(model, method, owner, cpu_s=1.0, speedup=speedup, psnr=psnr, error=error,
                 exact=psnr == compare.PSNR_CAP if exact is None else exact)


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
    assert gaps["peer a"].verdict == "dominated" and gaps["peer b"].verdict == "not dominated"
    assert gaps["peer c"].verdict == "not dominated" and gaps["peer e"].verdict == "no reuse"


def test_a_psnr_above_the_cap_is_not_exact():
    """metrics.psnr averages per-frame PSNRs (identical frames count as the cap): a sample whose frames differ by
    rounding can average above the cap without being the uncached one. It ranks below an exact sample, above every
    lower PSNR, and prints as its number, never as "identical"."""
    points = [
        _p("no cache", "none", 1.0, 100.0),
        _p("fk near", "fk", 1.2, 123.48),  # not exact, though above the cap
        _p("fk exact", "fk", 1.1, 100.0),
        _p("peer exact", "diffusers", 1.05, 100.0),
        _p("peer", "diffusers", 1.15, 91.6),
    ]
    gaps = {g.peer: g for g in frontier_gaps(points)}
    assert gaps["peer exact"].fk_method == "fk exact" and gaps["peer exact"].gap_db == 0.0
    assert gaps["peer exact"].verdict == "no reuse"
    assert gaps["peer"].fk_method == "fk near" and gaps["peer"].gap_db == pytest.approx(123.48 - 91.6)
    assert gaps["peer"].verdict == "dominated" and not gaps["peer"].fk_exact
    table = compare.format_gaps([gaps["peer"]])
    assert "123.48" in table and "identical" not in table
    assert compare.fk_frontier(points) == {("m", "fk near"), ("m", "fk exact")}
    for p in points:
        p.first_cpu_s = 1.0
    rows = compare.format_points(points).splitlines()[2:]
    assert "123.48" in rows[1] and "identical" in rows[2]


def test_same_decisions_are_neither_a_win_nor_a_loss():
    points = [
        _p("no cache", "none", 1.0, 100.0),
        _p("fk twin", "fk", 1.9, 40.0),  # the peer's decisions, a little slower (overhead or noise)
        _p("fk better", "fk", 2.5, 41.0),
        _p("fk twin of q", "fk", 3.1, 30.0),  # faster than q: still no win, the samples are the same
        _p("peer p", "diffusers", 2.0, 40.0),
        _p("peer q", "diffusers", 3.0, 30.0),
        _p("peer r", "diffusers", 2.4, 45.0),
    ]
    points[4].same_as = ["fk twin"]
    points[5].same_as = ["fk twin of q"]
    gaps = {g.peer: g for g in frontier_gaps(points)}
    assert gaps["peer p"].verdict == "dominated" and gaps["peer p"].fk_method == "fk better"
    assert gaps["peer p"].same == "fk twin" and gaps["peer p"].same_speedup == 1.9
    assert gaps["peer q"].verdict == "same decisions" and gaps["peer q"].same == "fk twin of q"
    assert gaps["peer r"].verdict == "not dominated" and gaps["peer r"].same is None
    table = compare.format_gaps(list(gaps.values()))
    assert "same decisions" in table and "not dominated" in table


def test_mark_same_decisions_matches_samples_that_differ_by_rounding():
    import torch

    from fastercache_kernels.demo import metrics

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 2, 8, 8, generator=g) * 2 - 1
    peer = ref + 0.05 * torch.randn(ref.shape, generator=g)
    rounding = peer + 1e-5 * torch.randn(ref.shape, generator=g)  # ~100 dB from the peer: rounding only
    other = peer + 0.02 * torch.randn(ref.shape, generator=g)  # ~40 dB from it: other decisions
    near = ref + 1e-4 * torch.randn(ref.shape, generator=g)  # a peer ~86 dB from the uncached sample
    near_other = ref + 1e-4 * torch.randn(ref.shape, generator=g)  # ~83 dB from `near`, but as far from ref
    videos = [ref, rounding, other, None, peer, peer.clone(), peer, near, near_other]
    points = [_p("no cache", "none", 1.0, 100.0), _p("fk same", "fk", 2.0, 0), _p("fk other", "fk", 2.0, 0),
              _p("fk failed", "fk", None, None, error="E"), _p("fk elsewhere", "fk", 2.0, 0, model="x"),
              _p("fk equal", "fk", 2.0, 0), _p("peer", "diffusers", 2.0, 0), _p("near peer", "diffusers", 2.0, 0),
              _p("fk near", "fk", 2.0, 0)]
    for p, v in zip(points, videos):
        p.psnr = v is not None and metrics.psnr(v, ref)
    assert metrics.psnr(near_other, near) > compare.SAME_DB  # close, yet not the same decisions: the margin says so
    compare.mark_same_decisions(points, videos)
    assert points[6].same_as == ["fk same", "fk equal"]
    assert points[7].same_as == []
    assert all(p.same_as == [] for p in points[:6])


def test_fk_frontier_keeps_the_points_no_faster_point_beats():
    points = [_p("fk a", "fk", 1.5, 45.0), _p("fk b", "fk", 2.0, 40.0), _p("fk c", "fk", 1.8, 39.0),
              _p("fk d", "fk", 3.0, 30.0), _p("peer", "diffusers", 5.0, 50.0), _p("fk e", "fk", 2.5, 30.0),
              _p("fk x", "fk", 1.0, 20.0, model="other")]
    assert compare.fk_frontier(points) == {("m", "fk a"), ("m", "fk b"), ("m", "fk d"), ("other", "fk x")}
    assert "fk's frontier on m: d 3.00x/30.00 > b 2.00x/40.00 > a 1.50x/45.00" in compare.format_frontier(points)
    for p in points:
        p.first_cpu_s = 1.0
    rows = compare.format_points(points).splitlines()[2:]
    assert [r.rstrip().endswith("*") for r in rows] == [True, True, False, True, False, False, True]


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
                     "diffusers FirstBlockCache 0.1"]
    assert record["versions"]["cache-dit"] is None
    assert len(record["load"]["before"]) == 3 and len(record["load"]["after"]) == 3
    ref, *others = record["points"]
    assert ref["error"] is None and ref["psnr"] == compare.PSNR_CAP and ref["speedup"] == pytest.approx(1.0)
    assert ref["exact"]
    for p in others:
        assert p["error"] is None, p["error"]
        assert p["speedup"] > 0 and p["cpu_s"] > 0 and len(p["rounds_cpu_s"]) == 1
        assert p["psnr"] > 0 and (not p["exact"] or p["psnr"] == compare.PSNR_CAP)
    [gap] = record["gaps"]
    assert gap["peer"] == "diffusers FirstBlockCache 0.1"
    # fk's First-Block-Cache makes diffusers' decisions on the same noise: their samples match, whatever the speeds
    assert gap["same"] == "fk First-Block-Cache 0.1"
    assert gap["verdict"] in ("dominated", "same decisions", "no reuse")


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
