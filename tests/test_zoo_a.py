"""Smoke test of the diffusers zoo, classes A..K (tests/zoo_a.py): every class of diffusers' transformers whose name
starts with A..K has an entry; every included entry builds, runs one batch-2 call to a finite output of batch 2, and
its truth fields hold: each stack is a ModuleList of >= 2 blocks that runs during the call, its first block returns
as many streams as stream_order names, each named stream comes back with the shape it went in with, the image
stream is continued by the last stack, and cache_context matches the class."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import pytest
import torch
from dit_models import one_thread  # noqa: F401

diffusers = pytest.importorskip("diffusers")
import zoo_a  # noqa: E402  (after the importorskip: it imports diffusers' classes lazily, but model_zoo needs torch)

pytestmark = pytest.mark.usefixtures("one_thread")
LIVE = [e for e in zoo_a.ENTRIES if e.excluded is None]


def _classes(first: str, last: str) -> set[str]:
    """diffusers' transformer ModelMixin classes whose name starts with a letter in first..last."""
    import diffusers.models.transformers as transformers
    from diffusers.models.modeling_utils import ModelMixin

    found = set()
    for info in pkgutil.iter_modules(transformers.__path__):
        module = importlib.import_module(f"{transformers.__name__}.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, ModelMixin) and cls.__module__ == module.__name__ and first <= name[0].upper() <= last:
                found.add(name)
    return found


def test_every_class_has_one_entry():
    names = [e.cls for e in zoo_a.ENTRIES]
    assert len(names) == len(set(names)), "a class has two entries"
    expected = _classes("A", "K")
    assert set(names) == expected, (
        f"diffusers {diffusers.__version__}: missing {sorted(expected - set(names))}, "
        f"unknown {sorted(set(names) - expected)}: add or remove entries in tests/zoo_a.py")


@pytest.mark.parametrize("entry", [e for e in zoo_a.ENTRIES if e.excluded], ids=lambda e: e.cls)
def test_excluded_entry_says_why(entry):
    assert entry.make is None and entry.inputs is None and len(entry.excluded) > 20


@pytest.fixture(scope="module", params=LIVE, ids=lambda e: e.cls)
def built(request):
    entry = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = entry.make()
    assert type(model).__name__ == entry.cls
    return entry, model


def _sample(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    return getattr(out, "sample", out)


def test_call_and_streams(built):
    entry, model = built
    kw = entry.inputs(2, torch.Generator().manual_seed(0))
    for name in entry.per_sample:
        assert len(kw[name]) == 2, f"{name}: per-sample input without batch 2"
    if entry.timestep_arg is not None:
        assert entry.timestep_arg in kw
    seen, hooks = {}, []
    for stack in entry.stacks:
        block = model.get_submodule(stack)[0]
        params = inspect.signature(block.forward).parameters

        def pre(mod, args, kwargs, stack=stack):
            seen[stack] = {"in": inspect.signature(mod.forward).bind_partial(*args, **kwargs).arguments}

        def post(mod, args, kwargs, out, stack=stack):
            seen[stack]["out"] = out if isinstance(out, tuple) else (out,)

        hooks += [block.register_forward_pre_hook(pre, with_kwargs=True),
                  block.register_forward_hook(post, with_kwargs=True)]
        assert set(entry.stream_order[stack]) <= set(params), f"{stack}: stream names not block inputs"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = _sample(model(**kw))
    finally:
        for h in hooks:
            h.remove()
    assert isinstance(sample, torch.Tensor) and sample.shape[0] == 2 and torch.isfinite(sample).all()
    for stack in entry.stacks:
        assert stack in seen, f"{stack} did not run"
        names, out = entry.stream_order[stack], seen[stack]["out"]
        assert len(out) == len(names), f"{stack}: block returns {len(out)} streams, stream_order names {names}"
        for name, tensor in zip(names, out):
            went_in = seen[stack]["in"][name]
            assert getattr(tensor, "shape", None) == getattr(went_in, "shape", None), f"{stack}: {name} out of order"


def test_truth_fields(built):
    entry, model = built
    assert entry.stacks and set(entry.stream_order) == set(entry.stacks)
    for stack in entry.stacks:
        blocks = model.get_submodule(stack)
        assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) >= 2, stack
    assert entry.image_stream in entry.stream_order[entry.stacks[-1]]
    assert hasattr(model, "cache_context") == entry.cache_context
