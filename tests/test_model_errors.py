"""Classes that match the generic patterns but whose output, blocks or inputs do not fit get an error naming the
adapter field to set, never a raw broadcast, shape or dynamo error."""

from __future__ import annotations

import warnings

import pytest
from dit_models import one_thread  # noqa: F401
from model_zoo import SPECS, Case

import fastercache_kernels as fk
from fastercache_kernels.adapters import generic_adapter

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cases(one_thread):  # noqa: F811
    return {n: Case(SPECS[n], 20) for n in ("ltx-video", "hunyuanvideo", "flux")}


def _run(case, config, adapter, per_branch=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fk.apply(case.model, config, adapter=adapter):
            case.run(case.model, per_branch)


def test_packed_output_names_tensor_format(cases):
    case = cases["ltx-video"]
    with pytest.raises(ValueError, match="tensor_format.*'BNC'.*token_grid"):
        _run(case, "latte", generic_adapter(r"^transformer_blocks\.\d+\.attn1$", tensor_format="BCFHW"))
    packed = generic_adapter(r"^transformer_blocks\.\d+\.attn1$", tensor_format="BNC")
    with pytest.raises(ValueError, match="`token_grid`"):
        _run(case, "latte", packed)


def test_unsliced_conditioning_names_batched_args(cases):
    case = cases["hunyuanvideo"]  # pooled_projections and the text mask carry the CFG halves
    adapter = generic_adapter(r"^transformer_blocks\.\d+\.attn$", batched_args=("hidden_states", "timestep",
                                                                                 "encoder_hidden_states"))
    with pytest.raises(RuntimeError, match="batched_args"):
        _run(case, "latte", adapter)


def test_block_outputs_name_block_io(cases):
    case = cases["flux"]  # blocks return (text, image): one name cannot pair two outputs
    adapter = generic_adapter(r"^transformer_blocks\.\d+\.attn$", blocks=(r"^transformer_blocks\.\d+$",),
                              block_io=("hidden_states",))
    with pytest.raises(ValueError, match="`block_io`"):
        _run(case, fk.FirstBlockCacheConfig(), adapter)


def test_equal_stream_shapes_pair_by_identity(cases):
    """Flux's blocks return (text, image) with equal shapes here: the observed pairing (by tensor identity) adds the
    image stream's residual to the image stream; an override that swaps the two streams is refused, naming
    `block_io` (reused with it, the output would be wrong)."""
    case = cases["flux"]
    plain = case.run(case.model, False)
    with fk.apply(case.model, fk.FirstBlockCacheConfig(threshold=0.5)) as h:
        out = case.run(case.model, False)
        assert h.stats()["reused"] > 0
        assert {b.io_names for b in h.adaptive.blocks} == {("encoder_hidden_states", "hidden_states")}
    assert float((out - plain).abs().max() / plain.abs().max()) < 0.1
    adapter = generic_adapter(r"^transformer_blocks\.\d+\.attn$",
                              blocks=(r"^transformer_blocks\.\d+$", r"^single_transformer_blocks\.\d+$"),
                              block_io=("hidden_states", "encoder_hidden_states"))
    with fk.apply(case.model, fk.FirstBlockCacheConfig(threshold=0.5), adapter=adapter), \
            pytest.raises(ValueError, match="`block_io`"):
        case.run(case.model, False)


def test_moreg_on_images_names_the_fix(cases):
    case = cases["flux"]
    with pytest.raises(ValueError, match="moreg=False"):
        _run(case, fk.AdaCacheConfig(num_calls=20), None)
