"""torch.distributed: two gloo processes on CPU, each holding a different shard of the tokens, take identical
decisions because the metric's partial sums are all-reduced before dividing (docs/algorithms.md section 5), with host
or device (torch.cond) decisions alike; without the all-reduce (a one-rank group each) their local decisions differ."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastercache_kernels as fk

CALLS = 12


class Block(torch.nn.Module):
    """A tiny DiT block: x + gate * attn(x), then x + ff(norm2(x))."""

    def __init__(self, c):
        super().__init__()
        self.attn = torch.nn.Linear(c, c)
        self.norm2 = torch.nn.LayerNorm(c)
        self.ff = torch.nn.Linear(c, c)

    def forward(self, hidden_states, temb):
        hidden_states = hidden_states + torch.tanh(temb)[:, None] * self.attn(hidden_states)
        return hidden_states + self.ff(self.norm2(hidden_states))


class Toy(torch.nn.Module):
    """Input [B, C, F, H, W] -> frame-major tokens [B, F*H*W, C] -> blocks -> back."""

    def __init__(self, c=8, layers=3):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(c) for _ in range(layers))
        self.t = torch.nn.Linear(1, c)

    def forward(self, hidden_states, timestep):
        b, c, f, h, w = hidden_states.shape
        x = hidden_states.permute(0, 2, 3, 4, 1).reshape(b, f * h * w, c)
        temb = self.t(timestep.float().reshape(-1, 1) / 1000)
        for blk in self.blocks:
            x = blk(x, temb)
        return x.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)


def _configs():
    # thresholds inside the range the metrics of this toy run take (0.1-0.6), so both decisions occur
    return {"fbcache": fk.FirstBlockCacheConfig(threshold=0.2),
            "teacache": fk.TeaCacheConfig(coefficients=(1.0, 0.0), threshold=0.3, indicator="block_input"),
            "adacache": fk.AdaCacheConfig(codebook={0.25: 3, 0.35: 2, 1.0: 1}, num_calls=CALLS, moreg=False)}


def _run(rank: int, group, decide: str = "host") -> dict:
    torch.manual_seed(0)
    model = Toy()
    adapter = fk.adapters.generic_adapter(blocks=r"^blocks\.\d+$", attn_capture="norm2", block_io=("hidden_states",))
    g = torch.Generator().manual_seed(100 + rank)  # every rank holds a different shard
    x0 = torch.randn(2, 8, 2, 2, 3, generator=g) * (1 + 3 * rank)
    out = {}
    for name, cfg in _configs().items():
        h = fk.apply(model, cfg, adapter=adapter, record=True, process_group=group, decide=decide)
        x = x0.clone()
        with torch.no_grad():
            for t in torch.linspace(999, 0, CALLS):
                y = model(hidden_states=x, timestep=t.expand(2))
                x = x - 0.3 * y + 0.05 * torch.sin(3 * x * (1 + t / 500))
        out[name] = [bool(r["pred"]) for r in h.history]
        out[name + ".metric"] = [round(float(r["metric"]), 4) for r in h.history]
        h.remove()
    return out


def _worker(rank: int, port: int, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        shared = _run(rank, None)
        device = _run(rank, None, decide="device")  # torch.cond, all-reduce outside the branches
        alone = [dist.new_group([r]) for r in range(2)][rank]  # a one-rank group: no all-reduce
        local = _run(rank, alone)
        queue.put((rank, shared, local, device))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_decide_alike():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {r: (s, loc, dev) for r, s, loc, dev in (queue.get(timeout=240) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (s0, l0, d0), (s1, l1, d1) = results[0], results[1]
    names = [n for n in s0 if "." not in n]
    for name in names:
        assert s0[name] == s1[name], (name, s0[name], s1[name])
        assert s0[name + ".metric"][1:] == s1[name + ".metric"][1:]  # the same all-reduced sums on both ranks
        assert d0[name] == d1[name] == s0[name], (name, d0[name], d1[name])
    for name in names:
        assert 0 < sum(s0[name]) < CALLS, (name, s0[name])
    assert any(l0[n] != l1[n] for n in names), "the shards must differ enough to split local decisions"
