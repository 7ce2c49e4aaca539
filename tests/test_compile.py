"""torch.compile sees the custom ops as single nodes: fullgraph, no graph break, no recompile when a 0-d
scalar tensor changes value."""

import torch
import torch._dynamo.testing

import fastercache_kernels as fk
from fastercache_kernels import reference as R


def test_extrapolate_fullgraph_no_recompile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def step(newer, older, w):
        return fk.ops.extrapolate(newer, older, w) * 2.0

    newer, older = torch.randn(64, 33), torch.randn(64, 33)
    w = torch.tensor(0.0)
    for i in range(10):
        w.fill_(0.1 * i)  # the weight changes every call; the graph must not care
        torch.testing.assert_close(step(newer, older, w), 2 * R.extrapolate(newer, older, 0.1 * i))
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"
    # a fresh 0-d tensor each call (as a policy computing weights would pass) must not recompile either
    for i in range(3):
        step(newer, older, torch.tensor(0.05 * i))
    assert counter.frame_count == 1


def test_extrapolate_out_compiles():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")

    @torch.compile(backend=counter, fullgraph=True)
    def step(newer, older, w, buf):
        fk.ops.extrapolate(newer, older, w, out=buf)
        return buf + 1

    newer, older, buf = torch.randn(10), torch.randn(10), torch.empty(10)
    for i in range(4):
        res = step(newer, older, torch.tensor(float(i)), buf)
        torch.testing.assert_close(buf, R.extrapolate(newer, older, float(i)))
        torch.testing.assert_close(res, buf + 1)
    assert counter.frame_count == 1
