"""Every policy on a model sharded by diffusers' own context parallelism (Ulysses degree 2, two gloo processes on
CPU), applied after `enable_parallelism` (and before it, for the composition), on tiny Wan and LTX-Video, over a
whole video of per-branch (cache_context) and batched calls: each rank's output equals the single-process patched
model's within 1e-5 relative, both ranks take the same decision at every call (and the single process the same),
and the caches that hold the sequence are half the single-process size on each rank (CFG-Cache's buffers hold the
gathered output, the same size on each rank). Each model is one spawn of two processes with a timeout."""

from __future__ import annotations

import copy
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cp_models import MODELS, free_port, init, policies, run, shard

import fastercache_kernels as fk

TIMEOUT = 150


def _decisions(handle) -> dict:
    out = {"kinds": handle.stats().get("calls_per_kind")}
    if handle.runtime is not None:
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


def _run(family: str, rank: int) -> dict:
    model, x, text, adapter = MODELS[family]()
    ref = copy.deepcopy(model)  # single process: the same weights, never sharded
    before = copy.deepcopy(model)
    alone = [dist.new_group([r]) for r in range(2)][rank]  # the single-process reference all-reduces nothing
    shard(model)
    out = {"plain": float((run(model, x, text, False) - run(ref, x, text, False)).abs().max())}
    for name, configs in policies(family).items():
        adaptive = any(not isinstance(c, fk.FasterCacheConfig) for c in configs)
        kw = {"adapter": adapter, "record": True} if adaptive else {"adapter": adapter}
        for mode in ("batched", "per_branch"):
            with fk.apply(ref, configs, process_group=alone, **kw) if adaptive else fk.apply(ref, configs, **kw) as h:
                want = run(ref, x, text, mode == "per_branch")
                single = (_decisions(h), _bytes(h), _motion(h))
            with fk.apply(model, configs, **kw) as h:
                got = run(model, x, text, mode == "per_branch")
                stats = h.stats()
                sharded = (_decisions(h), _bytes(h), _motion(h))
                paths = sorted({str(b.motion[0]) for b in getattr(h.runtime, "metric_blocks", ()) if b.motion})
            out[name, mode] = {"rel": float((got - want).abs().max() / want.abs().max()), "single": single,
                               "sharded": sharded, "cp": stats.get("context_parallel"), "motion_paths": paths,
                               "reused": stats.get("reused", stats.get("cfg", {}).get("skip", 0))}
    # applied before enable_parallelism: diffusers' hooks wrap ours; remove() unhooks inside their chain
    configs = policies(family)["composed"]
    h = fk.apply(before, configs, adapter=adapter)
    shard(before)
    got = run(before, x, text, True)
    h.remove()
    with fk.apply(ref, configs, adapter=adapter, process_group=alone):
        want = run(ref, x, text, True)
    out["before"] = float((got - want).abs().max() / want.abs().max())
    out["before_removed"] = float((run(before, x, text, True) - run(ref, x, text, True)).abs().max())
    return out


def _worker(rank: int, port: int, family: str, queue) -> None:
    try:
        init(rank, port)
        queue.put((rank, _run(family, rank)))
    except BaseException:
        queue.put((rank, traceback.format_exc()))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(family: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, family, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    try:
        while len(results) < len(procs):
            r, res = queue.get(timeout=TIMEOUT)
            assert not isinstance(res, str), f"rank {r}:\n{res}"  # the other rank may wait on it: fail now
            results[r] = res
    finally:
        for p in procs:
            p.join(timeout=20 if len(results) == len(procs) else 0)
            if p.is_alive():
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return results


@pytest.mark.parametrize("family", list(MODELS))
def test_every_policy_under_ulysses(family):
    r0, r1 = (res := _spawn(family))[0], res[1]
    assert r0["plain"] < 1e-5, r0["plain"]  # diffusers' own sharding is exact here
    for key in r0:
        if not isinstance(key, tuple):
            continue
        a, b = r0[key], r1[key]
        print(f"\n{family} {key}: rel {a['rel']:.1e} / {b['rel']:.1e}, reused {a['reused']}, bytes single "
              f"{a['single'][1]} rank {a['sharded'][1]}")
        assert a["rel"] < 1e-5 and b["rel"] < 1e-5, (key, a["rel"], b["rel"])
        assert a["sharded"][0] == b["sharded"][0] == a["single"][0], (key, a["sharded"][0], b["sharded"][0])
        assert a["reused"] > 0, key  # something was reused
        (s_shard, s_gather), (c_shard, c_gather) = a["single"][1], a["sharded"][1]
        assert 2 * c_shard == s_shard and c_gather == s_gather and b["sharded"][1] == a["sharded"][1], (key, a, b)
        ms, mc = torch.tensor(a["single"][2]), torch.tensor(a["sharded"][2])
        assert ms.shape == mc.shape and torch.allclose(mc, ms, rtol=1e-5), (key, ms, mc)  # MoReg across shards
        if family == "wan" and key[0] == "adacache":
            assert a["motion_paths"] == ["shard"] and len(ms) > 0, a["motion_paths"]  # the halo path ran
        assert a["cp"]["ranks"] == 2 and {a["cp"]["rank"], b["cp"]["rank"]} == {0, 1}
    assert r0["before"] < 1e-5 and r1["before"] < 1e-5, (r0["before"], r1["before"])
    assert r0["before_removed"] < 1e-5, r0["before_removed"]  # diffusers' sharding intact after remove()


if __name__ == "__main__":  # a quick look: python tests/test_context_parallel.py wan
    import sys

    for r, res in _spawn(sys.argv[1] if len(sys.argv) > 1 else "wan").items():
        print(r, res)
