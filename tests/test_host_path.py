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


def test_eager_device_reuse_by_runs_is_the_per_block_cond():
    """decide="device" run eagerly adds a run's per-block residuals in one op on a reused call: in fp32 the same
    bits as the per-block torch.cond the traced path runs (cond_in_eager), with the same decisions."""
    lat, extra = cog_inputs()
    outs, stats = {}, {}
    base = tiny_cogvideox(layers=4)
    for mode in ("runs", "cond"):
        model = clone(base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.2), decide="device") as h:
                h.adaptive.cond_in_eager = mode == "cond"
                outs[mode] = [o[0] for o in sample_loop([model], lat, extra, calls=12)]
                stats[mode] = h.stats()
                runs = [len(b.run) for b in h.adaptive.order if b.run_head is b]
    assert runs == [1, 3]  # the first block decides, the other three form one run
    assert 0 < stats["runs"]["reused"] == stats["cond"]["reused"] < 11
    assert all(torch.equal(a, b) for a, b in zip(outs["runs"], outs["cond"]))


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


def test_compile_check_is_cheap_in_eager_and_still_sees_compile(monkeypatch):
    """`under_torch_compile` answers an eager hook call from torch.compiler.disable's wrapper, without the stack walk
    (the walk is made to answer "compiled" for this test's frames, and is not asked), and still sees torch.compile:
    the default decide="auto" lays out host chains for the eager calls and device decisions for the compiled ones."""
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
        assert seen == [False, False] and not h.adaptive.device_mode
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        sample_loop([compiled], lat, extra, calls=2)
        assert seen[2:] == [True, True] and h.adaptive.device_mode
    torch._dynamo.reset()
