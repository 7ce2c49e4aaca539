"""Smoke test of the zoo's L..Z half (tests/zoo_b.py): every entry builds, takes a batch-2 call and returns a finite
sample, and its recorded truth (block stacks, cache_context) matches the instance."""

from __future__ import annotations

import pytest
import torch
from dit_models import one_thread  # noqa: F401
from zoo_b import ENTRIES

LIVE = [e for e in ENTRIES if e.excluded is None]


def test_entries_are_unique_and_in_range():
    names = [e.cls for e in ENTRIES]
    assert len(names) == len(set(names)), "a class has two entries"
    assert all("L" <= n[0] <= "Z" for n in names), "zoo_b holds the classes named L..Z only"
    for e in ENTRIES:
        assert (e.make is None) == (e.excluded is not None), f"{e.cls}: give make/inputs or an exclusion reason"


@pytest.fixture(scope="module", params=LIVE, ids=[e.cls for e in LIVE])
def built(request, one_thread):  # noqa: F811
    entry = request.param
    return entry, entry.make()


def _sample(out):
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, tuple):
        out = out[0]
    # classes that take per-sample lists (Z-Image) return one: stack it to see the batch
    return torch.stack(out) if isinstance(out, list) else out


def _batch(value):
    return len(value) if isinstance(value, list) else value.shape[0]


def test_call_batch2(built):
    entry, model = built
    inputs = entry.inputs(2, torch.Generator().manual_seed(0))
    for name in entry.per_sample:
        assert _batch(inputs[name]) == 2, f"{entry.cls}: per-sample input {name} lacks the batch dim"
    if entry.timestep_arg is not None:
        assert entry.timestep_arg in inputs
    with torch.no_grad():
        sample = _sample(model(**inputs))
    assert isinstance(sample, torch.Tensor)
    assert sample.shape[0] == 2
    assert torch.isfinite(sample).all()


def test_truth_matches_instance(built):
    entry, model = built
    assert entry.stacks, f"{entry.cls}: no block stack recorded"
    for path in entry.stacks:
        stack = model.get_submodule(path)
        assert isinstance(stack, torch.nn.ModuleList), f"{entry.cls}.{path} is {type(stack).__name__}"
        assert len(stack) >= 2, f"{entry.cls}.{path} has {len(stack)} block(s); the zoo wants 2"
    assert set(entry.stream_order) <= set(entry.stacks)
    assert hasattr(model, "cache_context") == entry.cache_context
