"""Every policy on a model sharded by diffusers' own context parallelism (Ulysses degree 2, two gloo processes on
CPU), applied after `enable_parallelism` (and before it, for the composition), on tiny Wan and LTX-Video, over a
whole video of per-branch (cache_context) and batched calls: each rank's output equals the single-process patched
model's within 1e-5 relative, both ranks take the same decision at every call (and the single process the same),
and the caches that hold the sequence are half the single-process size on each rank (CFG-Cache's buffers hold the
gathered output, the same size on each rank). One spawn of two processes (with a timeout) runs both models."""

from __future__ import annotations

import copy
import io
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cp_models import MODELS, free_port, init, policies, run, shard
from dit_models import one_thread  # noqa: F401

import fastercache_kernels as fk

pytestmark = pytest.mark.usefixtures("one_thread")

TIMEOUT = 150


def _decisions(handle) -> dict:
    out = {"kinds": handle.stats().get("calls_per_kind")}
    if handle.adaptive is not None:
        out["pred"] = [(r["key"], bool(r["pred"])) for r in handle.history]
    return out


def _bytes(handle) -> tuple[int, int]:
    """(bytes of the caches that hold the sequence, bytes of CFG-Cache's, which hold the gathered output)."""
    stats = handle.stats()
    if "context_parallel" in stats:
        return stats["context_parallel"]["sharded_bytes"], stats["context_parallel"]["gathered_bytes"]
    gathered = sum(p.cache_bytes() - sum(c.nbytes() for c in p.caches) for p in handle.policies
                   if p.name == "fastercache")
    return stats["cache_bytes"] - gathered, gathered


def _motion(handle) -> list:
    return [float(r["motion"]) for r in handle.history if "motion" in r and not torch.isnan(r["motion"])]


def _runs(family: str) -> list:
    """(policy, configs, call pattern, decide) of every run."""
    out = [(name, configs, mode, "host") for name, configs in policies(family).items()
           for mode in ("batched", "per_branch")]
    if family == "wan":  # torch.cond decisions (eager): the collectives run outside the branches
        out += [(name, policies(family)[name], "per_branch", "device") for name in ("adacache", "fbcache")]
    return out


def _patched(model, family: str, adapter, x, text) -> dict:
    """Every run on `model`: (output, decisions, cache bytes, MoReg values, MoReg path, stats)."""
    out = {}
    for name, configs, mode, decide in _runs(family):
        adaptive = any(not isinstance(c, fk.FasterCacheConfig) for c in configs)
        kw = {"adapter": adapter, "record": True, "decide": decide} if adaptive else {"adapter": adapter}
        with fk.apply(model, configs, **kw) as h:
            y = run(model, x, text, mode == "per_branch")
            stats = h.stats()
            paths = sorted({str(b.motion[0]) for b in getattr(h.adaptive, "metric_blocks", ()) if b.motion})
            out[name, mode, decide] = {"y": y, "decisions": _decisions(h), "bytes": _bytes(h), "motion": _motion(h),
                                       "paths": paths, "cp": stats.get("context_parallel"),
                                       "reused": stats.get("reused", stats.get("cfg", {}).get("skip", 0))}
    return out


def _sharded(family: str) -> dict:
    """One rank: every run on the model sharded by enable_parallelism, then the composition applied before it."""
    model, x, text, adapter = MODELS[family]()
    before = copy.deepcopy(model)
    shard(model)
    out = _patched(model, family, adapter, x, text)
    out["plain"] = run(model, x, text, False)
    # applied before enable_parallelism: diffusers' hooks wrap ours; remove() unhooks inside their chain
    h = fk.apply(before, policies(family)["composed"], adapter=adapter)
    shard(before)
    out["before"] = run(before, x, text, True)
    h.remove()
    out["before_removed"] = run(before, x, text, True)
    return out


def _single(family: str) -> dict:
    """The single-process references (the test process, no process group), computed while the ranks run."""
    model, x, text, adapter = MODELS[family]()
    out = _patched(model, family, adapter, x, text)
    out["plain"] = run(model, x, text, False)
    out["before_removed"] = run(model, x, text, True)
    with fk.apply(model, policies(family)["composed"], adapter=adapter):
        out["before"] = run(model, x, text, True)
    return out


def _worker(rank: int, port: int, families: list, queue) -> None:
    try:
        init(rank, port)
        for family in families:
            buf = io.BytesIO()  # bytes, not shared tensors: this process may exit before the parent reads them
            torch.save(_sharded(family), buf)
            queue.put((rank, family, buf.getvalue()))
    except BaseException:
        queue.put((rank, None, traceback.format_exc()))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(families: list) -> dict:
    """{family: {"single": ..., 0: ..., 1: ...}}: one spawn of two ranks runs every family (one start-up)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, families, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {f: {} for f in families}

    def done() -> bool:
        return all(len(v) == 3 for v in results.values())

    try:
        for f in families:
            results[f]["single"] = _single(f)
        while not done():
            r, f, res = queue.get(timeout=TIMEOUT)
            assert f is not None, f"rank {r}:\n{res}"  # the other rank may wait on it: fail now
            results[f][r] = torch.load(io.BytesIO(res), weights_only=False)
    finally:
        for p in procs:
            p.join(timeout=20 if done() else 0)
            if p.is_alive():
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return results


@pytest.fixture(scope="module")
def sharded_runs(one_thread):  # noqa: F811
    return _spawn(list(MODELS))


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", list(MODELS))
def test_every_policy_under_ulysses(sharded_runs, family):
    res = sharded_runs[family]
    one, r0, r1 = res["single"], res[0], res[1]
    assert _rel(r0["plain"], one["plain"]) < 1e-5  # diffusers' own sharding is exact here
    for key in _runs(family):
        key = key[0], key[2], key[3]
        s, a, b = one[key], r0[key], r1[key]
        print(f"\n{family} {key}: rel {_rel(a['y'], s['y']):.1e} / {_rel(b['y'], s['y']):.1e}, reused {a['reused']}, "
              f"cache bytes (sharded, gathered) single {s['bytes']} a rank {a['bytes']}")
        assert _rel(a["y"], s["y"]) < 1e-5 and _rel(b["y"], s["y"]) < 1e-5, key
        assert a["decisions"] == b["decisions"] == s["decisions"], (key, a["decisions"], b["decisions"])
        assert a["reused"] > 0, key  # something was reused
        (s_shard, s_gather), (c_shard, c_gather) = s["bytes"], a["bytes"]
        assert 2 * c_shard == s_shard and c_gather == s_gather and b["bytes"] == a["bytes"], (key, s, a, b)
        ms, mc = torch.tensor(s["motion"]), torch.tensor(a["motion"])
        assert ms.shape == mc.shape and torch.allclose(mc, ms, rtol=1e-5), (key, ms, mc)  # MoReg across shards
        if family == "wan" and key[0] == "adacache":
            assert a["paths"] == ["shard"] and len(ms) > 0, a["paths"]  # the halo path ran
        assert a["cp"]["ranks"] == 2 and {a["cp"]["rank"], b["cp"]["rank"]} == {0, 1}
    for r in (r0, r1):
        assert _rel(r["before"], one["before"]) < 1e-5
        assert _rel(r["before_removed"], one["before_removed"]) < 1e-5  # diffusers' sharding intact after remove()


def _halo_worker(rank: int, port: int, queue) -> None:
    import os

    from fastercache_kernels import ops
    from fastercache_kernels.runtime import parallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=3)
    try:
        p = torch.randn(2, 50, 4, generator=torch.Generator().manual_seed(0))  # 5 frames of 10 tokens
        local = p.tensor_split(3, 1)[rank]  # 17, 17, 16 tokens: uneven, and a stride-2 halo (20) spans two ranks
        shard_ = parallel.sequence_shard(dist.group.WORLD, local.shape[1], "cpu")
        parts = [parallel.motion_partials(local, 5, k, shard_) for k in (1, 2)]
        for t in parts:
            dist.all_reduce(t)
        whole = [ops.motion_score(p, 5, [k], "BNC", partials=True).reshape(2) for k in (1, 2)]
        queue.put((rank, [float((a - b).abs().max() / b.abs().max()) for a, b in zip(parts, whole)]))
    except BaseException:
        queue.put((rank, traceback.format_exc()))
        raise
    finally:
        dist.destroy_process_group()


def test_moreg_halo_spans_ranks():
    """MoReg's sums from shards (3 ranks, uneven, a halo longer than a shard) equal motion_score of the whole."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_halo_worker, args=(r, port, queue)) for r in range(3)]
    for p in procs:
        p.start()
    try:
        got = [queue.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=20)
            if p.is_alive():
                p.kill()
                p.join()
    for r, errs in got:
        assert not isinstance(errs, str), errs
        assert max(errs) < 1e-6, (r, errs)


if __name__ == "__main__":  # a quick look: python tests/test_context_parallel.py wan
    import sys

    family = sys.argv[1] if len(sys.argv) > 1 else "wan"
    for r, res in _spawn([family])[family].items():
        print(r, {k: v["decisions"] for k, v in res.items() if isinstance(k, tuple)})
