"""The diffusers zoo, classes A..K: one tiny random instance of every transformer class of diffusers 0.42.1 whose name
starts with A..K, with the keyword inputs of one call (format: tests/zoo_entry.py; smoke test: tests/test_zoo_a.py).

The truth fields (stacks, stream_order, image_stream) are read from each class's forward: the ModuleList its blocks
live in and the order in which a block returns its streams."""

from __future__ import annotations

import torch
from model_zoo import F, H, W, L, _allegro, _cogvideox_5b, _hunyuan15, _hunyuan15_extra, _ids
from zoo_entry import Entry, class_cfg

T_MID = 0.6  # the timestep of the call, as a fraction of the class's t_scale


def _seeded(build):
    """make(): seed, build, eval (the tiny configs below are all fp32)."""

    def make():
        torch.manual_seed(0)
        return build().eval()

    return make


def _rn(g, *shape):
    return torch.randn(*shape, generator=g)


def _t(b, scale=1000.0):
    return torch.full((b,), T_MID * scale)


DUAL = ("encoder_hidden_states", "hidden_states")  # a block returning (encoder_hidden_states, hidden_states)
DUAL_HF = ("hidden_states", "encoder_hidden_states")  # a block returning (hidden_states, encoder_hidden_states)
ONE = ("hidden_states",)
BASE = ("hidden_states", "encoder_hidden_states", "timestep")

ENTRIES: list[Entry] = []


def _add(**kw):
    ENTRIES.append(Entry(**kw))


# --- AceStepTransformer1DModel: 1D audio latents (B, T, C) concatenated with context latents on the channel dim.
def _acestep():
    from diffusers import AceStepTransformer1DModel

    return AceStepTransformer1DModel(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        head_dim=16, in_channels=8, audio_acoustic_hidden_dim=4, patch_size=2, sliding_window=4,
        encoder_hidden_size=16)


_add(cls="AceStepTransformer1DModel", make=_seeded(_acestep),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 16, 4), "timestep": _t(b, 1.0), "timestep_r": _t(b, 1.0),
                          "encoder_hidden_states": _rn(g, b, L, 16), "context_latents": _rn(g, b, 16, 4),
                          "return_dict": False},
     per_sample=BASE + ("timestep_r", "context_latents"), t_scale=1.0,
     stacks=("layers",), stream_order={"layers": ONE},
     note="flow timestep 0..1 (the time embedding multiplies by 1000); timestep_r = timestep for plain sampling")

# --- AllegroTransformer3DModel (tests/model_zoo.py config)
_add(cls="AllegroTransformer3DModel", make=_seeded(_allegro),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, F, H, W), "encoder_hidden_states": _rn(g, b, L, 16),
                          "timestep": _t(b), "return_dict": False},
     per_sample=BASE, stacks=("transformer_blocks",), stream_order={"transformer_blocks": ONE})


# --- AnyFlowTransformer3DModel: Wan-like flow map, latents (B, F, C, H, W), per-frame timesteps (B, F)
def _anyflow():
    from diffusers import AnyFlowTransformer3DModel

    return AnyFlowTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
        freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)


_add(cls="AnyFlowTransformer3DModel", make=_seeded(_anyflow),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, F, 4, H, W), "timestep": torch.full((b, F), T_MID * 1000),
                          "r_timestep": torch.full((b, F), T_MID * 1000), "encoder_hidden_states": _rn(g, b, L, 16),
                          "return_dict": False},
     per_sample=BASE + ("r_timestep",), stacks=("blocks",), stream_order={"blocks": ONE}, cache_context=False,
     note="timestep and r_timestep are per frame, shape (batch, frames)")


# --- AnyFlowFARTransformer3DModel: the causal (frame-autoregressive) AnyFlow; kv_cache=None selects the full-sequence
# rollout path, whose flex-attention block mask runs eagerly on CPU
def _anyflow_far():
    from diffusers import AnyFlowFARTransformer3DModel

    return AnyFlowFARTransformer3DModel(
        patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), full_chunk_limit=3, num_attention_heads=2,
        attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
        rope_max_seq_len=32, chunk_partition=(1, 1))


_add(cls="AnyFlowFARTransformer3DModel", make=_seeded(_anyflow_far),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, F, 4, H, W), "timestep": torch.full((b, F), T_MID * 1000),
                          "r_timestep": torch.full((b, F), T_MID * 1000), "encoder_hidden_states": _rn(g, b, L, 16),
                          "chunk_partition": [1] * F, "return_dict": False},
     per_sample=BASE + ("r_timestep",), stacks=("blocks",), stream_order={"blocks": ONE}, cache_context=False,
     note="kv_cache=None: the full-sequence causal path (flex attention, eager on CPU); the pipeline's KV-cache "
          "path runs chunk by chunk")


# --- AuraFlowTransformer2DModel: MMDiT blocks, then single blocks on [text, image] concatenated
def _auraflow():
    from diffusers import AuraFlowTransformer2DModel

    return AuraFlowTransformer2DModel(
        sample_size=H, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, out_channels=4,
        pos_embed_max_size=64)


_add(cls="AuraFlowTransformer2DModel", make=_seeded(_auraflow),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, H, W), "encoder_hidden_states": _rn(g, b, L, 16),
                          "timestep": _t(b, 1.0), "return_dict": False},
     per_sample=BASE, t_scale=1.0, stacks=("joint_transformer_blocks", "single_transformer_blocks"),
     stream_order={"joint_transformer_blocks": DUAL, "single_transformer_blocks": ONE}, cache_context=False,
     note="single blocks take [register + text, image] concatenated; the pipeline passes t / 1000")


# --- Bria: Flux-like packed tokens (B, N, C) with 2D ids; its time embedding takes 0..1000 (no internal * 1000)
def _bria():
    from diffusers import BriaTransformer2DModel

    return BriaTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=[4, 4, 8])


N_IMG = 16  # packed image tokens of a 4x4 grid (Flux-like classes)


def _flux_like_inputs(b, g, ch=4, t_scale=1000.0):
    return {"hidden_states": _rn(g, b, N_IMG, ch), "encoder_hidden_states": _rn(g, b, L, 16),
            "timestep": _t(b, t_scale), "img_ids": _ids(4, 4), "txt_ids": torch.zeros(L, 3), "return_dict": False}


_add(cls="BriaTransformer2DModel", make=_seeded(_bria), inputs=_flux_like_inputs, per_sample=BASE,
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL, "single_transformer_blocks": DUAL})


# --- BriaFibo: Bria with one projected text-encoder layer per block (text_encoder_layers, a list)
def _bria_fibo():
    from diffusers import BriaFiboTransformer2DModel

    return BriaFiboTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=[4, 4, 8], text_encoder_dim=16)


def _bria_fibo_inputs(b, g):
    kw = _flux_like_inputs(b, g)
    kw["text_encoder_layers"] = [_rn(g, b, L, 16) for _ in range(4)]
    return kw


_add(cls="BriaFiboTransformer2DModel", make=_seeded(_bria_fibo), inputs=_bria_fibo_inputs, per_sample=BASE,
     per_sample_lists=("text_encoder_layers",), stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL, "single_transformer_blocks": ONE}, cache_context=False,
     note="text_encoder_layers (a list, one (batch, text, dim) tensor per block) is per sample too; single blocks "
          "take [text, image] concatenated")


# --- BriaFibo2: noise-refiner blocks on the image tokens, then one stream [gist tokens, image] through the main
# layers; encoder_hidden_states is (B, 1 + len(injection_layer_ids), text, cap_feat_dim)
def _bria_fibo2():
    from diffusers import BriaFibo2Transformer2DModel

    return BriaFibo2Transformer2DModel(
        in_channels=4, patch_size=2, dim=32, n_layers=2, n_refiner_layers=2, n_heads=2, cap_feat_dim=16,
        injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=2, max_num_gist_tokens=4, gist_step=2,
        gist_min_text_len=2, gist_max_text_len=8, axes_dims=(4, 6, 6), axes_lens=(16, 16, 16))


_add(cls="BriaFibo2Transformer2DModel", make=_seeded(_bria_fibo2),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, H, W), "timestep": _t(b, 1.0),
                          "encoder_hidden_states": _rn(g, b, 2, L, 16), "return_dict": False},
     per_sample=BASE, t_scale=1.0, stacks=("noise_refiner", "layers"),
     stream_order={"noise_refiner": ("x",), "layers": ("x",)}, image_stream="x", cache_context=False,
     note="its blocks take the stream as `x`: the image tokens in noise_refiner, [gist, image] in layers; "
          "timestep 0..1 (multiplied by config.t_scale inside); the timestep MLP's fixed 1024-wide middle makes it "
          "~370k parameters, 296k of them there")


# --- Chroma: Flux without pooled projections; modulation from a distilled approximator; timestep 0..1
def _chroma():
    from diffusers import ChromaTransformer2DModel

    return ChromaTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(4, 4, 8), approximator_num_channels=16, approximator_hidden_dim=32,
        approximator_layers=1)


_add(cls="ChromaTransformer2DModel", make=_seeded(_chroma),
     inputs=lambda b, g: _flux_like_inputs(b, g, t_scale=1.0), per_sample=BASE, t_scale=1.0,
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL, "single_transformer_blocks": ONE},
     note="single blocks take [text, image] concatenated")


# --- ChronoEditTransformer3DModel: Wan-like (latents (B, C, F, H, W)), text only here (image_dim=None)
def _chronoedit():
    from diffusers import ChronoEditTransformer3DModel

    return ChronoEditTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
        freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)


_add(cls="ChronoEditTransformer3DModel", make=_seeded(_chronoedit),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b),
                          "encoder_hidden_states": _rn(g, b, L, 16), "return_dict": False},
     per_sample=BASE, stacks=("blocks",), stream_order={"blocks": ONE}, note="image_dim=None: no image embedding")

# --- CogVideoXTransformer3DModel (tests/model_zoo.py config, latents (B, F, C, H, W))
_add(cls="CogVideoXTransformer3DModel", make=_seeded(_cogvideox_5b),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, F, 4, H, W), "encoder_hidden_states": _rn(g, b, L, 16),
                          "timestep": _t(b), "return_dict": False},
     per_sample=BASE, stacks=("transformer_blocks",), stream_order={"transformer_blocks": DUAL_HF})


# --- CogView3Plus / CogView4: SDXL-like size micro-conditioning; blocks return (hidden_states, encoder_hidden_states)
def _cogview(cls_name):
    def build():
        import diffusers

        kw = {"rope_axes_dim": (16, 16)} if cls_name == "CogView4Transformer2DModel" else {}
        return getattr(diffusers, cls_name)(
            patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
            text_embed_dim=16, time_embed_dim=16, condition_dim=8, pos_embed_max_size=8, sample_size=H, **kw)

    return build


def _cogview_inputs(b, g):
    size = torch.tensor([[H * 8, W * 8]] * b, dtype=torch.float32)
    return {"hidden_states": _rn(g, b, 4, H, W), "encoder_hidden_states": _rn(g, b, L, 16), "timestep": _t(b),
            "original_size": size, "target_size": size.clone(), "crop_coords": torch.zeros(b, 2),
            "return_dict": False}


_COGVIEW_PS = BASE + ("original_size", "target_size", "crop_coords")
_add(cls="CogView3PlusTransformer2DModel", make=_seeded(_cogview("CogView3PlusTransformer2DModel")),
     inputs=_cogview_inputs, per_sample=_COGVIEW_PS, stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": DUAL_HF}, cache_context=False)
_add(cls="CogView4Transformer2DModel", make=_seeded(_cogview("CogView4Transformer2DModel")),
     inputs=_cogview_inputs, per_sample=_COGVIEW_PS, stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": DUAL_HF})


# --- ConsisIDTransformer3DModel: CogVideoX with an optional face-identity branch (is_train_face=False here)
def _consisid():
    from diffusers import ConsisIDTransformer3DModel

    return ConsisIDTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=16, num_layers=2, sample_width=W, sample_height=H, sample_frames=(F - 1) * 4 + 1, patch_size=2,
        max_text_seq_length=L, use_rotary_positional_embeddings=True)


_add(cls="ConsisIDTransformer3DModel", make=_seeded(_consisid),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, F, 4, H, W), "encoder_hidden_states": _rn(g, b, L, 16),
                          "timestep": _t(b), "return_dict": False},
     per_sample=BASE, stacks=("transformer_blocks",), stream_order={"transformer_blocks": DUAL_HF},
     cache_context=False, note="is_train_face=False: the face-identity (id_cond) branch is off")

_add(cls="Cosmos3OmniTransformer",
     excluded="packed single-sequence multimodal model: inputs are one unbatched token sequence (input_ids, "
              "position_ids, per-item vision_tokens lists and index tensors), outputs a per-item list; no input has "
              "a batch leading dim, so the CFG batch of a batched call cannot be expressed")


# --- CosmosTransformer3DModel (Cosmos 2 predict): latents (B, C, F, H, W); timestep sigma / (sigma + 1) in 0..1
def _cosmos():
    from diffusers import CosmosTransformer3DModel

    return CosmosTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, mlp_ratio=2.0,
        text_embed_dim=16, adaln_lora_dim=8, max_size=(8, 16, 16), patch_size=(1, 2, 2), concat_padding_mask=False)


_add(cls="CosmosTransformer3DModel", make=_seeded(_cosmos),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b, 1.0),
                          "encoder_hidden_states": _rn(g, b, L, 16), "return_dict": False},
     per_sample=BASE, t_scale=1.0, stacks=("transformer_blocks",), stream_order={"transformer_blocks": ONE},
     cache_context=False, note="concat_padding_mask=False (no padding_mask input); the Cosmos 2 pipelines pass "
                               "sigma / (sigma + 1)")


# --- DiTTransformer2DModel: class-conditional (class_labels), no text; timestep 0..1000
def _dit():
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2, sample_size=H,
        patch_size=2, num_embeds_ada_norm=10)


_add(cls="DiTTransformer2DModel", make=_seeded(_dit),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, H, W), "timestep": _t(b).long(),
                          "class_labels": class_cfg(b), "return_dict": False},
     per_sample=("hidden_states", "timestep", "class_labels"), stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ONE}, cache_context=False,
     note="no text: the CFG batch differs by class_labels, [null class, class] (the null class is "
          "num_embeds_ada_norm; DiTPipeline passes [class, null], the zoo keeps the [uncond, cond] order)")


# --- DreamLiteTransformer2DModel: the spatial transformer inside DreamLite's U-Net (continuous input (B, C, H, W),
# GroupNorm + 1x1 conv in and out, a residual around the whole); with norm_type="layer_norm" no timestep is used
def _dreamlite():
    from diffusers import DreamLiteTransformer2DModel

    return DreamLiteTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=16, num_layers=2, norm_num_groups=4,
        cross_attention_dim=16, ff_mult=2)


_add(cls="DreamLiteTransformer2DModel", make=_seeded(_dreamlite),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 16, H, W), "encoder_hidden_states": _rn(g, b, L, 16),
                          "return_dict": False},
     per_sample=("hidden_states", "encoder_hidden_states"), timestep_arg=None, stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ONE}, cache_context=False,
     note="a U-Net component, not a whole denoiser: the timestep goes to the U-Net's resnets, not here")


# --- EasyAnimateTransformer3DModel: latents (B, C, F, H, W); every block here is an MMDiT block (mmdit_layers)
def _easyanimate():
    from diffusers import EasyAnimateTransformer3DModel

    return EasyAnimateTransformer3DModel(  # head dim 16: its 3D RoPE splits the head dim 1/4, 3/8, 3/8
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, patch_size=2, sample_width=W,
        sample_height=H, num_layers=2, mmdit_layers=2, time_embed_dim=16, text_embed_dim=16)


_add(cls="EasyAnimateTransformer3DModel", make=_seeded(_easyanimate),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b),
                          "encoder_hidden_states": _rn(g, b, L, 16), "return_dict": False},
     per_sample=BASE, stacks=("transformer_blocks",), stream_order={"transformer_blocks": DUAL_HF},
     cache_context=False)


# --- ErnieImageTransformer2DModel: one joint stream [image, text] laid out sequence-first (S, B, D); its blocks take
# it as `x`; text comes as a padded batch (text_bth) with lengths (text_lens)
def _ernie():
    from diffusers import ErnieImageTransformer2DModel

    return ErnieImageTransformer2DModel(
        hidden_size=32, num_attention_heads=2, num_layers=2, ffn_hidden_size=64, in_channels=4, out_channels=4,
        patch_size=2, text_in_dim=16, rope_axes_dim=(4, 6, 6))


_add(cls="ErnieImageTransformer2DModel", make=_seeded(_ernie),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, H, W), "timestep": _t(b), "text_bth": _rn(g, b, L, 16),
                          "text_lens": torch.full((b,), L), "return_dict": False},
     per_sample=("hidden_states", "timestep", "text_bth", "text_lens"), stacks=("layers",),
     stream_order={"layers": ("x",)}, image_stream="x", cache_context=False,
     note="the block stream is sequence-first (tokens, batch, dim): the batch is dim 1 inside the blocks")


# --- Flux / Flux2 / Flux3: packed image tokens (B, N, C) with position ids; timesteps 0..1 (each multiplies by 1000)
def _flux():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(4, 4, 8), guidance_embeds=True)


def _flux_inputs(b, g):
    kw = _flux_like_inputs(b, g, t_scale=1.0)
    kw.update(pooled_projections=_rn(g, b, 16), guidance=torch.full((b,), 3.5))
    return kw


_add(cls="FluxTransformer2DModel", make=_seeded(_flux), inputs=_flux_inputs,
     per_sample=BASE + ("pooled_projections", "guidance"), t_scale=1.0,
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL, "single_transformer_blocks": DUAL})


def _ids4(h, w):
    ids = torch.zeros(h * w, 4)
    ids[:, 1:3] = _ids(h, w)[:, 1:3]
    return ids


def _flux2():
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, timestep_guidance_channels=16, mlp_ratio=2.0, axes_dims_rope=(4, 4, 4, 4))


def _flux2_inputs(b, g):
    kw = _flux_like_inputs(b, g, t_scale=1.0)
    kw.update(img_ids=_ids4(4, 4), txt_ids=torch.zeros(L, 4), guidance=torch.full((b,), 4.0))
    return kw


_add(cls="Flux2Transformer2DModel", make=_seeded(_flux2), inputs=_flux2_inputs,
     per_sample=BASE + ("guidance",), t_scale=1.0, stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL, "single_transformer_blocks": ONE},
     note="single blocks take [text, image] concatenated; ids have 4 axes")


# --- Flux3: per-mode blocks first (text in txt_mode_blocks, image in mode_blocks["image"], each attending within
# itself), then joint single blocks returning (encoder_hidden_states, hidden_states)
def _flux3():
    from diffusers import Flux3Transformer2DModel

    return Flux3Transformer2DModel(
        in_channels=4, cond_in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, timestep_channels=16, mlp_ratio=2.0, axes_dims_rope=(4, 4, 4, 4))


def _flux3_inputs(b, g):
    kw = _flux_like_inputs(b, g, t_scale=1.0)
    kw.update(img_ids=_ids4(4, 4), txt_ids=torch.zeros(L, 4))
    return kw


_add(cls="Flux3Transformer2DModel", make=_seeded(_flux3), inputs=_flux3_inputs, per_sample=BASE, t_scale=1.0,
     stacks=("txt_mode_blocks", "mode_blocks.image", "single_transformer_blocks"),
     stream_order={"txt_mode_blocks": ONE, "mode_blocks.image": ONE, "single_transformer_blocks": DUAL},
     cache_context=False,
     note="txt_mode_blocks carry the text under the block input name hidden_states; mode_blocks.image_cond runs "
          "only with image_cond_hidden_states (reference images)")


# --- GlmImageTransformer2DModel: CogView4-like, plus prior (VQ) tokens of the image grid added to the image tokens;
# the pipeline's unconditional branch drops them (prior_token_drop=True)
def _glm_image():
    from diffusers import GlmImageTransformer2DModel

    return GlmImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        text_embed_dim=16, time_embed_dim=16, condition_dim=8, prior_vq_quantizer_codebook_size=32)


def _glm_inputs(b, g):
    size = torch.tensor([[H * 8, W * 8]] * b, dtype=torch.float32)
    n = (H // 2) * (W // 2)
    return {"hidden_states": _rn(g, b, 4, H, W), "encoder_hidden_states": _rn(g, b, L, 16),
            "prior_token_id": torch.randint(0, 32, (b, n), generator=g),
            "prior_token_drop": torch.zeros(b, n, dtype=torch.bool), "timestep": _t(b), "target_size": size,
            "crop_coords": torch.zeros(b, 2), "return_dict": False}


_add(cls="GlmImageTransformer2DModel", make=_seeded(_glm_image), inputs=_glm_inputs,
     per_sample=BASE + ("prior_token_id", "prior_token_drop", "target_size", "crop_coords"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": DUAL_HF})


# --- HeliosTransformer3DModel: Wan-like (latents (B, C, F, H, W)); history latents (short/mid/long) are optional and
# left out here: then only the noisy tokens go through the blocks
def _helios():
    from diffusers import HeliosTransformer3DModel

    return HeliosTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_dim=(4, 6, 6))


_add(cls="HeliosTransformer3DModel", make=_seeded(_helios),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b),
                          "encoder_hidden_states": _rn(g, b, L, 16), "return_dict": False},
     per_sample=BASE, stacks=("blocks",), stream_order={"blocks": ONE},
     note="no history latents: the pipeline's later chunks prepend history tokens to the block stream")


# --- HiDreamImageTransformer2DModel: MoE feed-forwards; every block reads its own Llama layer, so
# encoder_hidden_states_llama3 is stacked (num_llama_layers, B, text, dim): its batch is dim 1
def _hidream():
    from diffusers import HiDreamImageTransformer2DModel

    return HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, caption_channels=[16, 16], text_emb_dim=16, num_routed_experts=2,
        num_activated_experts=1, axes_dims_rope=(4, 6, 6), max_resolution=(16, 16), llama_layers=[0, 1, 2, 3])


_add(cls="HiDreamImageTransformer2DModel", make=_seeded(_hidream),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, H, W), "timesteps": _t(b),
                          "encoder_hidden_states_t5": _rn(g, b, L, 16),
                          "encoder_hidden_states_llama3": _rn(g, 4, b, L, 16), "pooled_embeds": _rn(g, b, 16),
                          "return_dict": False},
     per_sample=("hidden_states", "timesteps", "encoder_hidden_states_t5", "pooled_embeds"), timestep_arg="timesteps",
     stacks=("double_stream_blocks", "single_stream_blocks"),
     stream_order={"double_stream_blocks": DUAL_HF, "single_stream_blocks": ONE}, cache_context=False,
     note="encoder_hidden_states_llama3 carries the batch in dim 1 (one slice per block), so it is not in "
          "per_sample; single blocks take [image, text, this block's llama text] concatenated; ~425k parameters: "
          "the SwiGLU experts round their width up to a multiple of 256")


# --- HunyuanDiT2DModel: two text encoders (CLIP-like + T5) with masks, SDXL-like image_meta_size and style; the 2D
# RoPE comes from the caller (the pipeline builds it); later blocks take earlier blocks' outputs as long skips
def _hunyuan_dit():
    from diffusers import HunyuanDiT2DModel

    return HunyuanDiT2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, patch_size=2, sample_size=H, hidden_size=32,
        num_layers=4, mlp_ratio=2.0, cross_attention_dim=16, cross_attention_dim_t5=16, pooled_projection_dim=16,
        text_len=L, text_len_t5=4)


def _hunyuan_dit_inputs(b, g):
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    grid = (H // 2, W // 2)
    rope = get_2d_rotary_pos_embed(16, ((0, 0), grid), grid, output_type="pt")
    return {"hidden_states": _rn(g, b, 4, H, W), "timestep": _t(b), "encoder_hidden_states": _rn(g, b, L, 16),
            "text_embedding_mask": torch.ones(b, L), "encoder_hidden_states_t5": _rn(g, b, 4, 16),
            "text_embedding_mask_t5": torch.ones(b, 4),
            "image_meta_size": torch.tensor([[H * 8, W * 8, H * 8, W * 8, 0, 0]] * b, dtype=torch.float32),
            "style": torch.zeros(b, dtype=torch.long), "image_rotary_emb": rope, "return_dict": False}


_add(cls="HunyuanDiT2DModel", make=_seeded(_hunyuan_dit), inputs=_hunyuan_dit_inputs,
     per_sample=BASE + ("text_embedding_mask", "encoder_hidden_states_t5", "text_embedding_mask_t5",
                        "image_meta_size", "style"),
     stacks=("blocks",), stream_order={"blocks": ONE}, cache_context=False,
     note="4 blocks so that one long skip exists (block 3 takes block 0's output as skip=); learn_sigma doubles the "
          "output channels (8); ~280k parameters, 217k in the fixed 6 x 256 size embedding")


# --- HunyuanImage / HunyuanVideo / HunyuanVideo 1.5 / Framepack: text refined by a token refiner
# (context_embedder.token_refiner.refiner_blocks, a small ModuleList of its own, not listed as a stack), then
# double-stream blocks and single-stream blocks that all return (hidden_states, encoder_hidden_states)
def _hunyuan_image():
    from diffusers import HunyuanImageTransformer2DModel

    return HunyuanImageTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=(2, 2), text_embed_dim=16, rope_axes_dim=(8, 8))


_add(cls="HunyuanImageTransformer2DModel", make=_seeded(_hunyuan_image),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, H, W), "timestep": _t(b),
                          "encoder_hidden_states": _rn(g, b, L, 16), "encoder_attention_mask": torch.ones(b, L),
                          "return_dict": False},
     per_sample=BASE + ("encoder_attention_mask",), stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL_HF, "single_transformer_blocks": DUAL_HF})


def _hunyuan_video():
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 2, 4), guidance_embeds=True)


_add(cls="HunyuanVideoTransformer3DModel", make=_seeded(_hunyuan_video),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b),
                          "encoder_hidden_states": _rn(g, b, L, 16),
                          "encoder_attention_mask": torch.ones(b, L, dtype=torch.bool),
                          "pooled_projections": _rn(g, b, 8), "guidance": torch.full((b,), 6000.0),
                          "return_dict": False},
     per_sample=BASE + ("encoder_attention_mask", "pooled_projections", "guidance"),
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL_HF, "single_transformer_blocks": DUAL_HF},
     note="guidance is the distilled guidance scale x 1000, as the pipeline passes it")


def _hunyuan15_inputs(b, g):
    kw = {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b), "encoder_hidden_states": _rn(g, b, L, 16),
          "return_dict": False}
    kw.update(_hunyuan15_extra(b, g))
    return kw


_add(cls="HunyuanVideo15Transformer3DModel", make=_seeded(_hunyuan15), inputs=_hunyuan15_inputs,
     per_sample=BASE + ("encoder_attention_mask", "encoder_hidden_states_2", "encoder_attention_mask_2",
                        "image_embeds"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": DUAL_HF},
     note="tests/model_zoo.py config (t2v: image_embeds are zeros); 4.3M parameters, 4.2M of them in the ByT5 "
          "text projection's fixed 2048-wide hidden layer")


# --- HunyuanVideoFramepackTransformer3DModel: HunyuanVideo plus a projected image embedding before the text, and
# clean / 2x / 4x history latents patchified at three scales and packed before the noisy tokens (its forward needs
# all three: the RoPE of each is read unconditionally)
def _framepack():
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    return HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 2, 4), guidance_embeds=True, has_image_proj=True,
        image_proj_dim=8, has_clean_x_embedder=True)


def _framepack_inputs(b, g):
    # RoPE frame positions (shared by the batch), as the pipeline's inverted anti-drifting layout orders them:
    # [prefix, noisy window, 1x history] for the clean latents, then the 2x and 4x histories
    return {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b), "encoder_hidden_states": _rn(g, b, L, 16),
            "encoder_attention_mask": torch.ones(b, L, dtype=torch.bool), "pooled_projections": _rn(g, b, 8),
            "image_embeds": _rn(g, b, 3, 8), "indices_latents": torch.arange(1, 1 + F),
            "latents_clean": _rn(g, b, 4, 2, H, W), "indices_latents_clean": torch.tensor([0, 1 + F]),
            "latents_history_2x": _rn(g, b, 4, 2, H, W), "indices_latents_history_2x": torch.arange(2 + F, 4 + F),
            "latents_history_4x": _rn(g, b, 4, 4, H, W), "indices_latents_history_4x": torch.arange(4 + F, 8 + F),
            "guidance": torch.full((b,), 6000.0), "return_dict": False}


_add(cls="HunyuanVideoFramepackTransformer3DModel", make=_seeded(_framepack), inputs=_framepack_inputs,
     per_sample=BASE + ("encoder_attention_mask", "pooled_projections", "image_embeds", "latents_clean",
                        "latents_history_2x", "latents_history_4x", "guidance"),
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": DUAL_HF, "single_transformer_blocks": DUAL_HF},
     note="the block stream is [4x, 2x, clean history, noisy] tokens; the indices_* inputs (RoPE frame positions) "
          "are shared by the batch")


# --- Ideogram4Transformer2DModel: one packed stream [text, image] per sample; indicator tags each token's role
# (text / image), segment_ids give block-diagonal attention, position_ids the 3-axis MRoPE coordinates;
# timestep is flow time in 0..1 with 1 = clean (reversed)
def _ideogram4():
    from diffusers import Ideogram4Transformer2DModel

    return Ideogram4Transformer2DModel(
        in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2, intermediate_size=64,
        adaln_dim=16, llm_features_dim=16, mrope_section=(4, 2, 2))


def _ideogram4_inputs(b, g):
    from diffusers.models.transformers.transformer_ideogram4 import (
        IMAGE_POSITION_OFFSET, LLM_TOKEN_INDICATOR, OUTPUT_IMAGE_INDICATOR)

    n_img = 16
    pos = torch.zeros(L + n_img, 3, dtype=torch.long)
    pos[:L] = torch.arange(L)[:, None]
    pos[L:] = _ids(4, 4).long() + IMAGE_POSITION_OFFSET
    indicator = torch.tensor([LLM_TOKEN_INDICATOR] * L + [OUTPUT_IMAGE_INDICATOR] * n_img)
    return {"hidden_states": _rn(g, b, L + n_img, 4), "timestep": _t(b, 1.0),
            "encoder_hidden_states": _rn(g, b, L + n_img, 16), "position_ids": pos.expand(b, -1, -1).clone(),
            "segment_ids": torch.ones(b, L + n_img, dtype=torch.long), "indicator": indicator.expand(b, -1).clone(),
            "return_dict": False}


_add(cls="Ideogram4Transformer2DModel", make=_seeded(_ideogram4), inputs=_ideogram4_inputs,
     per_sample=BASE + ("position_ids", "segment_ids", "indicator"), t_scale=1.0, stacks=("layers",),
     stream_order={"layers": ONE}, cache_context=False,
     note="timestep 0..1 runs noise -> clean (1 is clean); the output covers the whole packed sequence (only "
          "image positions are meaningful); text enters as per-token features added to the stream")


# --- JoyImageEdit / JoyImageEditPlus: double-stream blocks only, returning (hidden_states, encoder_hidden_states)
def _joyimage(cls_name):
    def build():
        import diffusers

        return getattr(diffusers, cls_name)(
            patch_size=[1, 2, 2], in_channels=4, out_channels=4, hidden_size=32, num_attention_heads=2, text_dim=16,
            mlp_width_ratio=2.0, num_layers=2, rope_dim_list=[4, 6, 6])

    return build


_add(cls="JoyImageEditTransformer3DModel", make=_seeded(_joyimage("JoyImageEditTransformer3DModel")),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, 4, F, H, W), "timestep": _t(b),
                          "encoder_hidden_states": _rn(g, b, L, 16), "return_dict": False},
     per_sample=BASE, stacks=("double_blocks",), stream_order={"double_blocks": DUAL_HF}, cache_context=False)


def _joyplus_inputs(b, g):
    # pre-patchified latents (B, patches, C, pt, ph, pw) with each sample's patch grids in shape_list
    n = F * (H // 2) * (W // 2)
    return {"hidden_states": _rn(g, b, n, 4, 1, 2, 2), "timestep": _t(b), "encoder_hidden_states": _rn(g, b, L, 16),
            "encoder_hidden_states_mask": torch.ones(b, L), "shape_list": [[(F, H // 2, W // 2)]] * b,
            "return_dict": False}


_add(cls="JoyImageEditPlusTransformer3DModel", make=_seeded(_joyimage("JoyImageEditPlusTransformer3DModel")),
     inputs=_joyplus_inputs, per_sample=BASE + ("encoder_hidden_states_mask", "shape_list"),
     stacks=("double_blocks",), stream_order={"double_blocks": DUAL_HF}, cache_context=False,
     note="shape_list is a Python list with one entry per sample (the pipeline doubles it for CFG)")


# --- Kandinsky5Transformer3DModel: channels-last latents (B, F, H, W, C); text blocks refine the text first
# (their stream is the block input `x`), then visual blocks (stream `visual_embed`) cross-attend to it; with
# return_dict=False it returns the bare tensor
def _kandinsky5():
    from diffusers import Kandinsky5Transformer3DModel

    return Kandinsky5Transformer3DModel(
        in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=4, patch_size=(1, 2, 2),
        model_dim=32, ff_dim=64, num_text_blocks=2, num_visual_blocks=2, axes_dims=(4, 6, 6))


_add(cls="Kandinsky5Transformer3DModel", make=_seeded(_kandinsky5),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, F, H, W, 4), "encoder_hidden_states": _rn(g, b, L, 16),
                          "timestep": _t(b), "pooled_projections": _rn(g, b, 8),
                          "visual_rope_pos": [torch.arange(F), torch.arange(H // 2), torch.arange(W // 2)],
                          "text_rope_pos": torch.arange(L), "return_dict": False},
     per_sample=BASE + ("pooled_projections",), stacks=("text_transformer_blocks", "visual_transformer_blocks"),
     stream_order={"text_transformer_blocks": ("x",), "visual_transformer_blocks": ("visual_embed",)},
     image_stream="visual_embed", note="visual_rope_pos / text_rope_pos (RoPE positions) are shared by the batch")


# --- Kandinsky6Transformer3DModel: channels-last latents (B, F, H, W, C); the text goes through a video text branch
# and an audio text branch (both always run), then fused blocks carry (vis, aud) (aud is None without audio)
def _kandinsky6():
    from diffusers import Kandinsky6Transformer3DModel

    return Kandinsky6Transformer3DModel(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2),
        model_dim=32, ff_dim=64, num_text_blocks=2, num_visual_blocks=2, axes_dims=(4, 6, 6), visual_cond=False,
        in_audio_dim=4, out_audio_dim=4)


_add(cls="Kandinsky6Transformer3DModel", make=_seeded(_kandinsky6),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, F, H, W, 4), "encoder_hidden_states": _rn(g, b, L, 16),
                          "pooled_projections": _rn(g, b, 8), "timestep": _t(b), "return_dict": False},
     per_sample=BASE + ("pooled_projections",),
     stacks=("video_text_transformer_blocks", "audio_text_transformer_blocks", "visual_transformer_blocks"),
     stream_order={"video_text_transformer_blocks": ("x",), "audio_text_transformer_blocks": ("x",),
                   "visual_transformer_blocks": ("vis", "aud")},
     image_stream="vis", note="no audio_hidden_states: the fused blocks return (vis, None); visual_cond=False")


# --- Kandinsky6SRTransformer3DModel: the super-resolution stage; no text at all (a learned pooled bias); NABLA
# sparse attention over 8x8 token neighbourhoods, so the token grid must be a multiple of 8
def _kandinsky6_sr():
    from diffusers import Kandinsky6SRTransformer3DModel

    return Kandinsky6SRTransformer3DModel(
        in_visual_dim=4, out_visual_dim=4, time_dim=16, patch_size=(1, 1, 1), model_dim=32, ff_dim=64,
        num_visual_blocks=2, axes_dims=(4, 6, 6), nabla_window=(3, 3, 3), tile_sizes=((8, 8),))


_add(cls="Kandinsky6SRTransformer3DModel", make=_seeded(_kandinsky6_sr),
     inputs=lambda b, g: {"hidden_states": _rn(g, b, F, H, W, 9), "timestep": _t(b), "return_dict": False},
     per_sample=("hidden_states", "timestep"), stacks=("visual_transformer_blocks",),
     stream_order={"visual_transformer_blocks": ONE}, cache_context=False,
     note="no text conditioning, so no CFG pair in its pipeline; hidden_states holds 2 * in_visual_dim + 1 "
          "channels: the noisy latent, the upsampled low-res latent and an anchor mask")


# --- Krea2Transformer2DModel: a text-fusion stage (text_fusion.layerwise_blocks across the tapped text-encoder
# layers, text_fusion.refiner_blocks across tokens; no timestep) feeds one joint stream [text, image] through
# transformer_blocks; encoder_hidden_states is (B, text, num_text_layers, text_hidden_dim); timestep t / 1000
def _krea2():
    from diffusers import Krea2Transformer2DModel

    return Krea2Transformer2DModel(
        in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, timestep_embed_dim=16, text_hidden_dim=16, num_text_layers=2, text_num_attention_heads=2,
        text_num_key_value_heads=2, text_intermediate_size=32, num_layerwise_text_blocks=1, num_refiner_text_blocks=1,
        axes_dims_rope=(4, 6, 6))


def _krea2_inputs(b, g):
    pos = torch.cat([torch.zeros(L, 3), _ids(4, 4)])
    return {"hidden_states": _rn(g, b, N_IMG, 4), "encoder_hidden_states": _rn(g, b, L, 2, 16),
            "timestep": _t(b, 1.0), "position_ids": pos, "encoder_attention_mask": torch.ones(b, L, dtype=torch.bool),
            "return_dict": False}


_add(cls="Krea2Transformer2DModel", make=_seeded(_krea2), inputs=_krea2_inputs,
     per_sample=BASE + ("encoder_attention_mask",), t_scale=1.0, stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ONE}, cache_context=False,
     note="the blocks' stream is [text, image] concatenated; position_ids (text at the origin, then the image "
          "grid) is shared by the batch; the text-fusion ModuleLists are a text-only preprocessing stage")
