"""runtime.forecast.History: a ring buffer of static tensors whose device-side weights make fk.ops.forecast the
Lagrange / Taylor extrapolation of the stored values (docs/algorithms.md section 9)."""

import math

import pytest
import torch
import torch._dynamo.testing

from fastercache_kernels.runtime.forecast import History

# unequal spacing, increasing (step indices with skipped steps) and decreasing (timesteps), and sigmas close
# together (differences of 1e-3: fp32 weights arithmetic would lose digits there)
POSITION_SETS = {
    "steps": [0.0, 1.0, 3.0, 4.0, 7.0],
    "timesteps": [999.0, 979.0, 939.0, 919.0, 859.0],
    "sigmas": [0.701, 0.702, 0.7035, 0.705, 0.708],
}


def _poly(coeffs: torch.Tensor, t: float) -> torch.Tensor:
    """sum_d coeffs[d] * t^d per element (coeffs [D + 1, N]), in float64."""
    return sum(c * t**d for d, c in enumerate(coeffs))


@pytest.mark.parametrize("positions", POSITION_SETS.values(), ids=POSITION_SETS.keys())
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_weights_reproduce_polynomials_up_to_their_order(order, positions):
    g = torch.Generator().manual_seed(order)
    history = History(4, (6,))
    coeffs = torch.randn(order + 1, 6, generator=g, dtype=torch.float64)
    t0, target = positions[0], positions[-1]
    for t in positions[:-1]:
        history.push(_poly(coeffs, t - t0), torch.tensor(t))  # centred at t0: the values stay O(1)
    torch.testing.assert_close(history.forecast(torch.tensor(target), order).double(), _poly(coeffs, target - t0),
                               rtol=1e-5, atol=1e-5)
    # One degree more is missed by exactly the interpolation error prod_i (target - x_i) times the leading
    # coefficient (over the order + 1 newest points): scaled here to a miss of 1, so the test can fail.
    used = positions[-order - 2:-1]
    lead = 1.0 / math.prod(target - t for t in used)
    higher = torch.cat([torch.zeros_like(coeffs), torch.full((1, 6), lead, dtype=torch.float64)])  # values O(1)
    history.reset()
    for t in positions[:-1]:
        history.push(_poly(higher, t - t0), torch.tensor(t))
    miss = _poly(higher, target - t0) - history.forecast(torch.tensor(target), order).double()
    torch.testing.assert_close(miss, torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-3)


def test_weights_sum_to_one_and_order_one_is_taylorseers():
    # TaylorSeer's first order, f(s) = f0 + s * (f0 - f1) / h over step distances, is the Lagrange line
    h = History(3, (1,))
    h.push(torch.zeros(1), torch.tensor(10.0))
    h.push(torch.zeros(1), torch.tensor(12.0))  # h = 2
    for s in (1.0, 2.0, 5.0):
        w = h.weights(torch.tensor(12.0 + s), 1)
        newest, older = h.index.item() - 1, h.index.item() - 2  # (host reads are fine in a test)
        assert w[newest].item() == pytest.approx(1 + s / 2) and w[older].item() == pytest.approx(-s / 2)
        assert w.sum().item() == pytest.approx(1.0)
        assert h.weights(torch.tensor(12.0 + s), 2).sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("order", [1, 2])
def test_taylorseer_rule_matches_diffusers_hook(order):
    # diffusers 0.42's TaylorSeerState: recursive differences over step distances, sum_i D_i * s^i / i!
    hooks = pytest.importorskip("diffusers.hooks.taylorseer_cache")
    state = hooks.TaylorSeerState(taylor_factors_dtype=torch.float64, max_order=order)
    history = History(3, (2, 7), dtype=torch.float32)
    g = torch.Generator().manual_seed(order)
    for step in (0, 1, 3, 4, 7):  # computed steps, unequal gaps
        value = torch.randn(2, 7, generator=g)
        state.current_step = step
        state.update((value,))
        history.push(value, torch.tensor(float(step)))
        for ahead in (1, 2):
            state.current_step = step + ahead
            (expected,) = state.predict()
            got = history.forecast(torch.tensor(float(step + ahead)), order, rule="taylorseer")
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_taylorseer_order_two_is_not_the_interpolating_parabola():
    # at equal spacing, one step ahead: Lagrange (3, -3, 1) is exact on t^2, TaylorSeer (2.5, -2, 0.5) is not
    h = History(3, (1,))
    for t in (0.0, 1.0, 2.0):
        h.push(torch.tensor([t * t]), t)
    newest_first = [2, 1, 0]
    assert h.weights(3.0, 2)[newest_first].tolist() == [3.0, -3.0, 1.0]
    assert h.weights(3.0, 2, rule="taylorseer")[newest_first].tolist() == [2.5, -2.0, 0.5]
    assert h.forecast(3.0, 2).item() == 9.0 and h.forecast(3.0, 2, rule="taylorseer").item() == 8.0
    assert torch.equal(h.weights(3.5, 1), h.weights(3.5, 1, rule="taylorseer"))


def test_order_zero_is_plain_reuse():
    g = torch.Generator().manual_seed(1)
    h = History(3, (4, 5), dtype=torch.bfloat16)
    for i in range(5):
        last = torch.randn(4, 5, generator=g).bfloat16()
        h.push(last, torch.tensor(float(i)))
        y = h.forecast(torch.tensor(i + 2.0), 0)
        assert y.dtype == torch.bfloat16 and torch.equal(y, last)
        x = torch.randn(4, 5, generator=g).bfloat16()
        assert torch.equal(h.forecast(torch.tensor(i + 2.0), 0, x), (x.float() + last.float()).bfloat16())


def test_fallback_to_the_orders_the_pushes_allow():
    h = History(3, (2,))
    assert torch.equal(h.weights(torch.tensor(1.0), 2), torch.zeros(3))  # nothing pushed: the forecast is x (or 0)
    h.push(torch.tensor([1.0, 2.0]), torch.tensor(0.0))
    assert torch.equal(h.weights(torch.tensor(5.0), 2), h.weights(torch.tensor(5.0), 0))
    h.push(torch.tensor([3.0, 2.0]), torch.tensor(1.0))
    w1 = h.weights(torch.tensor(5.0), 1)
    assert torch.equal(h.weights(torch.tensor(5.0), 2), w1)
    torch.testing.assert_close(h.forecast(torch.tensor(5.0), 2), torch.tensor([11.0, 2.0]))  # the line through both
    assert (w1 == 0).sum().item() == 1  # the never-written slot is left out


def test_ring_buffer_wraps_around_in_place():
    h = History(3, (8,))
    ptr, pos_ptr = h.buf.data_ptr(), h.positions.data_ptr()
    quad = lambda t: torch.full((8,), 1.0 - 2.0 * t + 0.25 * t * t)  # noqa: E731
    for i in range(7):
        h.push(quad(float(i)), torch.tensor(float(i)))
    assert h.buf.data_ptr() == ptr and h.positions.data_ptr() == pos_ptr  # no new buffers
    assert h.index.item() == 7 % 3 and h.filled.item() == 3
    assert sorted(h.positions.tolist()) == [4.0, 5.0, 6.0]  # the oldest values were overwritten
    torch.testing.assert_close(h.forecast(torch.tensor(8.0), 2), quad(8.0))
    h.reset()
    assert h.filled.item() == 0 and torch.equal(h.weights(torch.tensor(8.0), 2), torch.zeros(3))
    h.push(quad(0.0), torch.tensor(0.0))
    assert h.index.item() == 1 and torch.equal(h.forecast(torch.tensor(3.0), 2), quad(0.0))


def test_push_casts_and_checks():
    h = History(2, (3,), dtype=torch.float16)
    h.push(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 0.5)  # cast into the buffer; a float position
    assert h.buf.dtype == torch.float16 and h.buf[0].tolist() == [1.0, 2.0, 3.0] and h.positions[0].item() == 0.5
    with pytest.raises(ValueError, match="`value` has shape \\(4,\\) but the history holds values of shape \\(3,\\)"):
        h.push(torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="a position must be one value"):
        h.push(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="`order` must be an int in \\[0, 1\\]"):
        h.weights(1.0, 2)
    with pytest.raises(ValueError, match="`rule` must be 'lagrange' or 'taylorseer'"):
        h.weights(1.0, 1, rule="newton")
    with pytest.raises(ValueError, match="`slots` must be an int in \\[1, 4\\]"):
        History(5, (3,))


def test_one_graph_no_host_sync():
    # push + weights + forecast in one compiled graph: a host read (.item(), a Python branch on a tensor) would be
    # a graph break, an error under fullgraph=True; new step values must not recompile either
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    h = History(3, (2, 5))

    @torch.compile(backend=counter, fullgraph=True)
    def step(value, t, x):
        h.push(value, t)
        return h.forecast(t + 1.0, 2, x), h.forecast(t + 1.0, 2, rule="taylorseer")

    eager = History(3, (2, 5))
    g = torch.Generator().manual_seed(2)
    for i in range(5):
        value, x = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
        t = torch.tensor(float(3 * i))
        eager.push(value, t)
        torch.testing.assert_close(step(value, t, x),
                                   (eager.forecast(t + 1.0, 2, x), eager.forecast(t + 1.0, 2, rule="taylorseer")))
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"
    assert torch.equal(h.buf, eager.buf) and torch.equal(h.index, eager.index)
