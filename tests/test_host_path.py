"""The per-call host path (issue 21 item 4): diffusers' Attention modules called through `direct_attention`, eager
device calls that reuse a run of blocks in one op, and the host mirrors (`_hforce`, `_hstreak`) that replace tensor
bookkeeping. Each must give what the path it shortcuts gives."""

import logging
import warnings

import pytest
import torch
from dit_models import clone, cog_inputs, one_thread, sample_loop, tiny_cogvideox  # noqa: F401

import fastercache_kernels as fk

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


def _attentions(model):
    from diffusers.models.attention_processor import Attention

    return [m for m in model.modules() if type(m) is Attention]


def test_direct_attention_is_attention_forward():
    """Every call computes (threshold 0): the outputs equal the unpatched model's bit for bit, the blocks' Attention
    modules run `direct_attention`, and remove() gives back their class forward."""
    model = tiny_cogvideox(layers=2)
    ref = clone(model)
    lat, extra = cog_inputs()
    with fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.0)):
        outs = sample_loop([model, ref], lat, extra, calls=4)
        attns = _attentions(model)
        assert attns and all("forward" in a.__dict__ for a in attns)
    assert all(torch.equal(a, b) for a, b in outs)
    assert all("forward" not in a.__dict__ and not hasattr(a, "_fk_direct") for a in _attentions(model))


class _Scaled:
    """A processor that halves what the model's own processor returns (takes the same keyword arguments)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        self.calls += 1
        out = self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, image_rotary_emb=image_rotary_emb)
        return tuple(o * 0.5 for o in out) if isinstance(out, tuple) else out * 0.5


def test_direct_attention_follows_a_new_processor_and_keeps_the_warning():
    """A processor set after the first call is the one called (its parameters read anew); keyword arguments the
    processor does not take go through Attention.forward, which drops them and says so, as without fk."""
    model = tiny_cogvideox(layers=1)
    ref = clone(model)
    lat, extra = cog_inputs()
    with fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.0)):
        sample_loop([model], lat, extra, calls=1)  # observed: direct_attention installed
        for m in (model, ref):
            (attn,) = _attentions(m)
            attn.set_processor(_Scaled(attn.processor))
        outs = sample_loop([model, ref], lat, extra, calls=2)
        assert all(torch.equal(a, b) for a, b in outs)
        (attn,) = _attentions(model)
        assert attn.processor.calls == 2
        x = torch.randn(2, 6, 16)
        logger = logging.getLogger("diffusers.models.attention_processor")
        seen = []
        handler = logging.Handler()
        handler.emit = seen.append
        logger.addHandler(handler)
        try:
            with torch.no_grad():
                got = attn(x, encoder_hidden_states=x[:, :2], not_a_parameter=1)
        finally:
            logger.removeHandler(handler)
        assert any("not_a_parameter" in r.getMessage() for r in seen)
        with torch.no_grad():
            want = type(attn).forward(attn, x, encoder_hidden_states=x[:, :2])
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_eager_device_reuse_is_host_modes_and_the_per_block_cond_to_rounding():
    """decide="device" run eagerly keeps each run's residual as host decisions keep their chain's (last output - first
    input, beside the per-block residuals the traced path reads) and adds it on a reused call: the same bits as
    decide="host", and the per-block torch.cond (cond_in_eager) to rounding, with the same decisions; the per-block
    residuals its computed calls write (two foreach ops per stream) are the cond path's bits. All three models get
    the same inputs each call."""
    lat, extra = cog_inputs()
    base = tiny_cogvideox(layers=4)
    models = [clone(base) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = fk.FirstBlockCacheConfig(threshold=0.2)
        hs = [fk.apply(models[0], cfg, decide="host"), fk.apply(models[1], cfg, decide="device"),
              fk.apply(models[2], cfg, decide="device")]
        hs[2].adaptive.cond_in_eager = True
        outs = sample_loop(models, lat, extra, calls=12)
    dev = hs[1].adaptive
    runs = [len(b.run) for b in dev.order if b.run_head is b]
    assert runs == [1, 3]  # the first block decides, the other three form one run
    stats = [h.stats() for h in hs]
    assert 0 < stats[0]["reused"] == stats[1]["reused"] == stats[2]["reused"] < 11
    assert dev._run_fresh and not hs[2].adaptive._run_fresh
    assert all(torch.equal(row[0], row[1]) for row in outs)
    assert all(torch.allclose(row[1], row[2], rtol=1e-5, atol=1e-6) for row in outs)
    assert any(not torch.equal(row[1], row[2]) for row in outs)  # the reused calls round differently
    for b, c in zip(dev.order, hs[2].adaptive.order):
        for x, y in zip(b.bufs.get("res", []), c.bufs.get("res", [])):
            assert torch.equal(x, y)
    for h in hs:
        h.remove()


def test_eager_device_reuse_after_a_traced_call_adds_the_per_block_residuals():
    """A call that runs torch.cond (traced, captured, or here cond_in_eager) writes only the per-block residuals: the
    runs' residuals are stale until the next eager computed call, so a reused eager call adds the per-block ones
    (the run buffers, poisoned here, are not read)."""
    lat, extra = cog_inputs()
    model = tiny_cogvideox(layers=4)
    seen = []

    def on_call(i, t):
        rt.cond_in_eager = i == 3  # call 4 runs the per-block cond
        if i in (3, 4):
            seen.append(rt._run_fresh)
        if i == 4:
            for b in rt.order:
                for r in b.bufs.get("run", []):
                    r.fill_(float("nan"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fk.apply(model, fk.FirstBlockCacheConfig(threshold=1e9, warmup=2), decide="device") as h:
            rt = h.adaptive
            outs = sample_loop([model], lat, extra, calls=8, on_call=on_call)
            assert h.stats()["computed"] == 2  # the warm-up calls; then every call reuses
    assert seen == [True, False]  # call 2 (eager, computed) wrote the runs; call 4 (cond) made them stale
    assert all(torch.isfinite(row[0]).all() for row in outs)


@pytest.mark.parametrize("cap", [None, 2])
def test_host_mirrors_decide_by_the_rule(cap):
    """The host path of `begin`/`end` (the forced flag and the reuse streak kept in Python) decides by the rule of
    docs/algorithms.md section 5 with the guards: every call computes that is the first of its video, within
    `warmup`, after `cap` reused calls in a row, or whose metric is not below the threshold (in fp32), over two
    videos; decide="device" run with torch.cond makes the same decisions."""
    lat, extra = cog_inputs()
    base = tiny_cogvideox(layers=2)
    hist = {}
    for mode in ("host", "device"):
        model = clone(base)
        cfg = fk.FirstBlockCacheConfig(threshold=0.3, warmup=2, max_consecutive_reuse=cap)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fk.apply(model, cfg, decide=mode, record=True) as h:
                h.adaptive.cond_in_eager = mode == "device"
                sample_loop([model], lat, extra, calls=14)
                sample_loop([model], lat, extra, calls=14)
                hist[mode] = h.history
                if mode == "host":
                    assert h.adaptive._hstreak is not None  # the mirror served every call
    thr = torch.tensor(0.3, dtype=torch.float32).item()
    streak, want = 0, []
    for r in hist["host"]:
        c, metric = int(r["c"]), float(r["metric"])
        if c == 1:
            streak = 0
        go = c <= 2 or (cap is not None and streak >= cap) or not metric < thr
        streak = 0 if go else streak + 1
        want.append(go)
    got = [bool(r["pred"]) for r in hist["host"]]
    assert got == want and not all(got) and len(got) == 28
    assert got == [bool(r["pred"]) for r in hist["device"]]


class OptimizeContext:
    """Named as dynamo's context: a stack walk that reached this test's frames would take the call as compiled."""

    def run(self, model, lat, extra):
        return sample_loop([model], lat, extra, calls=2)


def test_compile_check_is_skipped_in_eager_and_still_sees_compile(monkeypatch):
    """An eager call (no eval-frame callback in the model's forward) is known to run eagerly without
    `under_torch_compile`'s stack walk (made to answer "compiled" for this test's frames, and not asked), and the
    bookkeeping is not wrapped in torch.compiler.disable; a compiled call still sees torch.compile: the default
    decide="auto" lays out host chains for the eager calls and device decisions for the compiled ones."""
    from fastercache_kernels.runtime import adaptive

    seen = []
    real = adaptive.under_torch_compile

    def spy():
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(adaptive, "under_torch_compile", spy)
    model = tiny_cogvideox(layers=1)
    lat, extra = cog_inputs()
    with fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.2)) as h:
        with monkeypatch.context() as m:
            m.setattr(adaptive, "_EVAL_FRAME", __file__)
            OptimizeContext().run(model, lat, extra)
        assert seen == [] and not h.adaptive.device_mode
        assert h.stats()["calls"] == 2
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        sample_loop([compiled], lat, extra, calls=2)
        assert seen == [True, True] and h.adaptive.device_mode
    torch._dynamo.reset()


def test_deferred_pred_and_metric_reach_the_saved_state():
    """First-Block-Cache's host rule defers writing `pred` and `metric` (two tensor ops per call) until something
    reads them: the state the branch switch saves after each call carries the writes (`_due`, no tensor op on the
    switch), and a reader of a saved state (`_flush_saved`, as the later branches' links read it) sees what the
    immediate writes give."""
    lat, extra = cog_inputs()
    base = tiny_cogvideox(layers=2)
    models = [clone(base) for _ in range(2)]
    saved, pending = [[], []], [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hs = [fk.apply(m, fk.FirstBlockCacheConfig(threshold=0.2), decide="host") for m in models]

        def on_call(i, t):
            if i:
                hs[1].adaptive._defers = False  # (laid out by the observed call 1)
                for k, h in enumerate(hs):
                    rt = h.adaptive
                    st = rt.save()[0]
                    pending[k] += rt.state_value(st, "_due") is not None
                    st = rt._flush_saved(st)
                    saved[k].append((bool(rt.state_value(st, "pred")),
                                     str(float(rt.state_value(st, "metric")))))  # (str: nan equals nan)

        sample_loop(models, lat, extra, calls=10, on_call=on_call)
    assert hs[0].adaptive._due is not None and hs[1].adaptive._due is None  # the last call's writes: deferred
    assert saved[0] == saved[1] and len({p for p, _ in saved[0]}) == 2  # both decisions were taken
    # saving wrote nothing: the writes travel with the state (all but the observed first call's, written at once)
    assert pending[0] == len(saved[0]) - 1 and pending[1] == 0
    for h in hs:
        h.remove()


def test_later_cfg_branch_decides_on_the_host_with_the_first_ones_decision(monkeypatch):
    """Per-branch calls (`cache_context("cond" | "uncond")`) with host decisions: the later branch follows the first
    one's decision from its host value (`_hlead`), so MagCache's later branch takes the host rule as well, with the
    decisions and samples of the tensor path (made to run here by hiding `_hlead`)."""
    from fastercache_kernels.policies.magcache.hooks import MagCacheHooks

    steps = 12
    ratios = [1.0] + [0.96 + 0.01 * (i % 4) for i in range(1, steps)]
    lat, extra = cog_inputs()
    text = extra["encoder_hidden_states"]
    base = tiny_cogvideox(layers=2)
    reads, outs, stats = {}, {}, {}
    real_read = MagCacheHooks._read
    for mode in ("host", "tensor"):
        model = clone(base)
        calls = []

        def counting_read(self, _calls=calls):
            _calls.append(self.engine.call.key)
            return real_read(self)

        monkeypatch.setattr(MagCacheHooks, "_read", counting_read)
        cfg = fk.MagCacheConfig(mag_ratios=ratios, num_inference_steps=steps, threshold=0.1)
        with fk.apply(model, cfg, decide="host") as h:
            if mode == "tensor":
                monkeypatch.setattr(MagCacheHooks, "_hlead", property(lambda self: None, lambda self, v: None),
                                    raising=False)
            x, got = lat.clone(), []
            with torch.no_grad():
                for t in torch.linspace(999, 0, steps):
                    ys = []
                    for branch, enc in (("uncond", text[:1]), ("cond", text[1:])):
                        with model.cache_context(branch):
                            ys.append(model(hidden_states=x, encoder_hidden_states=enc, timestep=t.view(1),
                                            return_dict=False)[0])
                    got.append(torch.cat(ys))
                    x = x - 0.02 * (ys[0] + 6.0 * (ys[1] - ys[0]))
            stats[mode] = h.stats()
        monkeypatch.undo()
        reads[mode], outs[mode] = calls, got
    assert reads["host"] == [] and len(reads["tensor"]) > steps // 2  # the later branch's rule ran on the tensors
    assert 0 < stats["host"]["reused"] == stats["tensor"]["reused"]
    assert all(torch.equal(a, b) for a, b in zip(outs["host"], outs["tensor"]))


def test_deferred_writes_travel_with_each_branch_state():
    """Per-branch calls with diffusers' First-Block-Cache config (each branch on its own indicator: the host rule on
    both): each branch's deferred `pred` / `metric` writes are saved with its state on the switch and made where
    read (`_flush_saved`), giving every step the states, decisions and samples of immediate writes."""
    from diffusers.hooks import FirstBlockCacheConfig as DiffusersFirstBlockCacheConfig


    steps = 14
    lat, extra = cog_inputs()
    text = extra["encoder_hidden_states"]
    base = tiny_cogvideox(layers=2)
    outs, states, deferred = {}, {}, {}
    for defer in (True, False):
        model = clone(base)
        with fk.apply(model, DiffusersFirstBlockCacheConfig(threshold=0.3), decide="host") as h:
            rt, e, x, got, seen, held = h.adaptive, h.engine, lat.clone(), [], [], 0
            with torch.no_grad():
                for i, t in enumerate(torch.linspace(999, 0, steps)):
                    ys = []
                    for branch, enc in (("cond", text[1:]), ("uncond", text[:1])):
                        if i or branch != "cond":
                            rt._defers = defer  # (laid out by the observed first call)
                        with model.cache_context(branch):
                            ys.append(model(hidden_states=x, encoder_hidden_states=enc, timestep=t.view(1),
                                            return_dict=False)[0])
                        seen.append((branch, rt.go))
                    other = rt._flush_saved(e.peek("cond", rt)[0])  # saved by the switch to "uncond"
                    held += i > 0 and rt._due is not None  # (the uncond key's first call: laid out with it)
                    rt._flush()
                    seen.append((bool(rt.state_value(other, "pred")), str(float(rt.state_value(other, "metric"))),
                                 bool(rt.pred), str(float(rt.metric))))  # (str: nan equals nan)
                    got.append(torch.cat(ys))
                    x = x - 0.02 * (ys[1] + 6.0 * (ys[0] - ys[1]))
        outs[defer], states[defer], deferred[defer] = got, seen, held
    assert deferred[True] > steps // 2 and deferred[False] == 0
    assert states[True] == states[False] and {g for _, g in states[True][0::3] + states[True][1::3]} == {True, False}
    assert all(torch.equal(a, b) for a, b in zip(outs[True], outs[False]))


def test_per_key_state_must_be_plain_attributes():
    """The branch switch reads a policy's `local_names` with one attrgetter and writes them with one `__dict__`
    update, which would bypass a property's setter: a policy naming one is refused when the names are first built."""
    lat, extra = cog_inputs()
    model = tiny_cogvideox(layers=2)
    with fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.2), decide="host") as h:
        sample_loop([model], lat, extra, calls=2)
        rt = h.adaptive

        class WithProperty(type(rt)):
            @property
            def derived(self):
                return self.c

            def local_names(self):
                return (*super().local_names(), "derived")

        rt.__class__, rt._state_names = WithProperty, None
        with pytest.raises(TypeError, match="derived"):
            rt.state_names()
