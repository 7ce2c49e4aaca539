"""handle.summary() / decisions() / plot() (issue 22 item 4): the per-call log kept by the engine agrees with the
policies' own counts and records, costs no host read per call, restarts with each video, is capped, and survives
remove()."""

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dit_models import cog_inputs, one_thread, sample_loop, tiny_cogvideox  # noqa: F401
from model_zoo import SPECS, Case

import fastercache_kernels as fk
from fastercache_kernels import summary
from fastercache_kernels._extras import MissingExtraError

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

KIND_CHAR = {"full/compute": "C", "full/reuse": "A", "skip/compute": "s", "skip/reuse": "a"}


@pytest.fixture(scope="module")
def cog():
    return tiny_cogvideox()


def _text(handle) -> str:
    buf = io.StringIO()
    handle.summary(file=buf)
    return buf.getvalue()


def test_fastercache_strip_matches_the_call_kinds(cog):
    m = fk.apply(cog, "cogvideox-2b")
    try:
        sample_loop([cog], *cog_inputs(), calls=50)
        rep = m.decisions()
        (label, k), = rep["keys"].items()
        assert label == "batched" and k["calls"] == 50
        counts = {}
        for char in k["strip"].split():
            counts[char] = counts.get(char, 0) + 1
        want = {KIND_CHAR[kind]: n for kind, n in m.stats()["calls_per_kind"].items()}
        assert counts == want
        text = _text(m)
        assert k["strip"][:40] in text and "cache memory" in text and f"({100 * k['reuse_rate']:.0f}%)" in text
        assert rep["cache_bytes"] == m.stats()["cache_bytes"] > 0
    finally:
        m.remove()


def test_adaptive_strip_and_indicator_match_the_policy_record(cog):
    handle = fk.apply(cog, fk.FirstBlockCacheConfig(threshold=0.25), record=True)
    try:
        sample_loop([cog], *cog_inputs(), calls=20)
        (k,) = handle.decisions()["keys"].values()
        want = ["C" if bool(h["pred"]) else "r" for h in handle.history]
        assert k["strip"].split() == want and "r" in want and "C" in want
        metric = [float(h["metric"]) for h in handle.history]
        assert k["indicator"] == pytest.approx(metric, nan_ok=True)
        st = handle.stats()
        assert k["computed"] == st["computed"] and k["reused"] == st["reused"]
        text = _text(handle)
        assert "computes when >= 0.25" in text and f"{metric[3]:.3g}" in text
    finally:
        handle.remove()


def test_device_decisions_are_logged_like_host_ones(cog):
    strips = {}
    for decide in ("host", "device"):
        handle = fk.apply(cog, fk.FirstBlockCacheConfig(threshold=0.25), decide=decide)
        sample_loop([cog], *cog_inputs(), calls=8)
        strips[decide] = next(iter(handle.decisions()["keys"].values()))["strip"]
        handle.remove()
    assert strips["host"] == strips["device"] and "r" in strips["host"]


def _meta_policy(device_mode: bool):
    """An adaptive policy whose 0-d state lives on the meta device: any host read of it raises."""
    meta = {"dtype": torch.float32, "device": "meta"}
    return SimpleNamespace(name="fbcache", policy="fbcache", device_mode=device_mode, go=True, _go_read=False,
                           host_indicator=None, pred=torch.ones((), dtype=torch.bool, device="meta"),
                           metric=torch.zeros((), **meta))


@pytest.mark.parametrize("device_mode", [False, True])
def test_recording_a_call_reads_nothing_from_the_device(device_mode):
    engine = SimpleNamespace(policies=[_meta_policy(device_mode)])
    log = summary.CallLog()
    for c in range(1, 4):
        log.record(engine, SimpleNamespace(key="", c=c, step=None, branch=None, skips_model=False))
    (entries,) = log.entries.values()
    assert len(entries) == 3 and all(e[5].device.type == "meta" for e in entries)
    with pytest.raises((NotImplementedError, RuntimeError)):
        log.read()  # reading happens here, once, when a summary is asked for


def test_per_branch_strips_show_the_rebuilt_branch():
    case = Case(SPECS["wan"], calls=30)
    handle = fk.apply(case.model, ["latte", fk.FirstBlockCacheConfig(threshold=0.1)])
    case.run(case.model, True)
    keys = handle.decisions()["keys"]
    assert set(keys) == {"branch cond", "branch uncond"}
    rebuilt = keys["branch uncond"]["strip"].split().count("R")
    assert rebuilt == handle.stats()["calls_per_kind"]["skip/reconstruct [uncond]"] > 0
    assert "R" not in keys["branch cond"]["strip"]
    assert all(v is None for v, r in zip(keys["branch uncond"]["indicator"], keys["branch uncond"]["rows"])
               if r["kind"] == "R")  # the adaptive policy did not run on rebuilt calls
    handle.remove()


class _Pipe:
    def __init__(self, **mods):
        self.__dict__.update(mods)
        self.components = dict(mods)


def test_pipeline_summary_covers_every_transformer(cog):
    pipe = _Pipe(transformer=tiny_cogvideox(seed=1), transformer_2=tiny_cogvideox(seed=2))
    handle = fk.apply(pipe, fk.FirstBlockCacheConfig(threshold=0.25))
    sample_loop([pipe.transformer], *cog_inputs(), calls=6)
    text = _text(handle)
    assert "transformer (CogVideoXTransformer3DModel)" in text and "transformer_2 (" in text
    assert "no call recorded yet" in text  # transformer_2 never ran
    assert handle.decisions()["transformer"]["keys"]["batched"]["calls"] == 6
    handle.remove()


def test_log_restarts_with_each_video_and_is_capped(cog):
    handle = fk.apply(cog, "cogvideox-2b")
    try:
        handle.engine.log = summary.CallLog(cap=5)
        sample_loop([cog], *cog_inputs(), calls=20)
        sample_loop([cog], *cog_inputs(), calls=10)  # the timestep jumps up: a second video
        k = handle.decisions()["keys"]["batched"]
        assert k["video"] == 2 and k["calls"] == 5 and k["first_call"] == 6
        assert "6-10" in _text(handle)
    finally:
        handle.remove()


def test_summary_after_remove_keeps_the_last_video_and_memory(cog):
    handle = fk.apply(cog, "cogvideox-2b")
    sample_loop([cog], *cog_inputs(), calls=20)
    live = handle.decisions()
    handle.remove()
    after = handle.decisions()
    assert not after["active"] and after["cache_bytes"] == live["cache_bytes"] > 0
    assert after["keys"]["batched"]["strip"] == live["keys"]["batched"]["strip"]
    assert ", removed," in _text(handle)


def test_plot_writes_an_image(cog, tmp_path):
    pytest.importorskip("matplotlib")
    handle = fk.apply(cog, fk.FirstBlockCacheConfig(threshold=0.25))
    sample_loop([cog], *cog_inputs(), calls=6)
    path = handle.plot(tmp_path / "fbcache.png")
    handle.remove()
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(cog, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    handle = fk.apply(cog, "cogvideox-2b")
    try:
        with pytest.raises(MissingExtraError, match=r"fastercache_kernels\[plot\]"):
            handle.plot(tmp_path / "x.png")
    finally:
        handle.remove()
