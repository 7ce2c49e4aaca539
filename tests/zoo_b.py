"""The diffusers zoo, classes L..Z: one tiny random instance per transformer class of diffusers 0.42.1 and the inputs
of one call (format: tests/zoo_entry.py). The truth fields (stacks, stream_order, image_stream) were read from each
class's forward and its blocks' return statements."""

from __future__ import annotations

import model_zoo as mz
import torch
from zoo_entry import Entry, class_cfg

F, H, W, L = mz.F, mz.H, mz.W, mz.L  # latent frames, height, width; text tokens


def _seeded(build):
    """make(): the model built under seed 0, fp32, eval()."""
    def make():
        torch.manual_seed(0)
        return build().float().eval()
    return make


def _diffusers(cls_name, **config):
    def build():
        import diffusers

        return getattr(diffusers, cls_name)(**config)
    return _seeded(build)


def _unzero(build):
    """Refill the parameters a class initialises to zero (its output projection, adaLN) with small random values:
    with them at zero the output is constant and no block's work would show in it."""
    def inner():
        model = build()
        with torch.no_grad():
            for p in model.parameters():
                if not p.any():
                    p.normal_(0.0, 0.1)
        return model
    return inner


def _t(b, scale=1000.0):
    return torch.full((b,), 0.5 * scale)


def _rand(g, *shape):
    return torch.randn(*shape, generator=g)


ENTRIES: list[Entry] = []


def _add(**kw):
    ENTRIES.append(Entry(**kw))


# ---- classes with a tiny config in tests/model_zoo.py ----
_add(cls="LTXVideoTransformer3DModel", make=_seeded(mz._ltx),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, F * H * W, 4), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b), "encoder_attention_mask": torch.ones(b, L), "num_frames": F,
                          "height": H, "width": W},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)})
_add(cls="MochiTransformer3DModel", make=_seeded(mz._mochi),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b), "encoder_attention_mask": torch.ones(b, L, dtype=torch.bool)},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask"),
     stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("hidden_states", "encoder_hidden_states")})
_add(cls="QwenImageTransformer2DModel", make=_seeded(mz._qwen),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 16, 16), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_hidden_states_mask": torch.ones(b, L), "timestep": _t(b, 1.0),
                          "img_shapes": [(1, 4, 4)] * b},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep"), t_scale=1.0,
     stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("encoder_hidden_states", "hidden_states")})
_add(cls="SD3Transformer2DModel", make=_seeded(mz._sd3),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "pooled_projections": _rand(g, b, 8), "timestep": _t(b)},
     per_sample=("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep"),
     stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("encoder_hidden_states", "hidden_states")}, cache_context=False,
     note="the last block is context_pre_only: it returns (None, hidden_states)")


def _wan_inputs(b, g):
    return {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16), "timestep": _t(b)}


_WAN_PS = ("hidden_states", "encoder_hidden_states", "timestep")
_add(cls="SkyReelsV2Transformer3DModel", make=_seeded(mz._wan("SkyReelsV2Transformer3DModel")), inputs=_wan_inputs,
     per_sample=_WAN_PS, stacks=("blocks",), stream_order={"blocks": ("hidden_states",)})
_add(cls="WanTransformer3DModel", make=_seeded(mz._wan("WanTransformer3DModel")), inputs=_wan_inputs,
     per_sample=_WAN_PS, stacks=("blocks",), stream_order={"blocks": ("hidden_states",)})


# ---- L..Z classes outside model_zoo.py ----
_add(cls="LTX2VideoTransformer3DModel",
     make=_diffusers("LTX2VideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                     attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
                     audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
                     num_layers=2, caption_channels=16),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, F * H * W, 4), "audio_hidden_states": _rand(g, b, 4, 4),
                          "encoder_hidden_states": _rand(g, b, L, 16),
                          "audio_encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b), "encoder_attention_mask": torch.ones(b, L),
                          "audio_encoder_attention_mask": torch.ones(b, L), "num_frames": F, "height": H, "width": W,
                          "audio_num_frames": 4},
     per_sample=("hidden_states", "audio_hidden_states", "encoder_hidden_states", "audio_encoder_hidden_states",
                 "timestep", "encoder_attention_mask", "audio_encoder_attention_mask"),
     stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("hidden_states", "audio_hidden_states")},
     note="audio-video model: the output is (video, audio); the video stream is the sample")
_add(cls="LatteTransformer3DModel",
     make=_diffusers("LatteTransformer3DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                     out_channels=8, num_layers=2, sample_size=H, patch_size=2, cross_attention_dim=16,
                     caption_channels=16, video_length=F, norm_type="ada_norm_single"),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b)},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep"),
     stacks=("transformer_blocks", "temporal_transformer_blocks"),
     stream_order={"transformer_blocks": ("hidden_states",), "temporal_transformer_blocks": ("hidden_states",)},
     note="the two stacks interleave: spatial block i, then temporal block i (tokens regrouped per frame / per patch "
          "between them); out_channels 2x in_channels (learned sigma)")
_add(cls="LongCatAudioDiTTransformer",
     make=_seeded(_unzero(lambda: __import__("diffusers").LongCatAudioDiTTransformer(
         dit_dim=16, dit_depth=2, dit_heads=2, dit_text_dim=16, latent_dim=4))),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 8, 4), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_attention_mask": torch.ones(b, L, dtype=torch.bool), "timestep": _t(b, 1.0)},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"), t_scale=1.0,
     stacks=("blocks",), stream_order={"blocks": ("hidden_states",)}, cache_context=False,
     note="audio latents (batch, frames, latent_dim); the zero-initialised output layers are refilled at random")
_add(cls="LongCatImageTransformer2DModel",
     make=_diffusers("LongCatImageTransformer2DModel", patch_size=1, in_channels=4, num_layers=2, num_single_layers=2,
                     attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
                     axes_dims_rope=(4, 4, 8)),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 16, 4), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b, 1.0), "img_ids": mz._ids(4, 4), "txt_ids": torch.zeros(L, 3)},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep"), t_scale=1.0,
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": ("encoder_hidden_states", "hidden_states"),
                   "single_transformer_blocks": ("encoder_hidden_states", "hidden_states")},
     note="Flux-like, but the single blocks keep the two streams apart (they concatenate inside the block only)")
_add(cls="Lumina2Transformer2DModel",
     make=_diffusers("Lumina2Transformer2DModel", sample_size=H, patch_size=2, in_channels=4, hidden_size=32,
                     num_layers=2, num_refiner_layers=2, num_attention_heads=2, num_kv_heads=1, multiple_of=16,
                     axes_dim_rope=(4, 4, 8), axes_lens=(32, 32, 32), cap_feat_dim=16),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_attention_mask": torch.ones(b, L, dtype=torch.bool), "timestep": _t(b, 1.0)},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"), t_scale=1.0,
     stacks=("context_refiner", "noise_refiner", "layers"),
     stream_order={"context_refiner": ("encoder_hidden_states",), "noise_refiner": ("hidden_states",),
                   "layers": ("hidden_states",)}, cache_context=False,
     note="refiners run on the text and the image apart; `layers` then run on one joint [text, image] sequence; "
          "the timestep is reversed (the pipeline passes 1 - t / 1000)")


def _lumina_next_rope():
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    return get_2d_rotary_pos_embed_lumina(16, 16, 16)  # head_dim 16, a 16x16 grid of patches


_add(cls="LuminaNextDiT2DModel",
     make=_diffusers("LuminaNextDiT2DModel", sample_size=H, patch_size=2, in_channels=4, hidden_size=32, num_layers=2,
                     num_attention_heads=2, num_kv_heads=1, multiple_of=16, cross_attention_dim=16),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_mask": torch.ones(b, L), "timestep": _t(b, 1.0),
                          "image_rotary_emb": _lumina_next_rope(), "cross_attention_kwargs": {}},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_mask", "timestep"), t_scale=1.0,
     stacks=("layers",), stream_order={"layers": ("hidden_states",)}, cache_context=False,
     note="the RoPE table is an input; the timestep is reversed (the pipeline passes 1 - t / 1000); learned sigma; "
          "cross_attention_kwargs must be a dict (None raises)")


def _minimax_h3_inputs(b, g):
    nt, nv, na = L, F * (H // 2) * (W // 2), 4  # text, video (2x2 patches), audio rows of the packed sequence
    n = nt + nv + na
    pos = torch.zeros(n, 3, dtype=torch.long)
    grid = torch.stack(torch.meshgrid(torch.arange(F), torch.arange(H // 2), torch.arange(W // 2), indexing="ij"), -1)
    pos[nt:nt + nv] = grid.reshape(-1, 3)
    pos[nt + nv:, 0] = torch.arange(na)
    tags = torch.cat([torch.full((nt,), 1), torch.full((nv,), 0), torch.full((na,), 2)])
    return {"hidden_states": _rand(g, b, nv, 16), "audio_hidden_states": _rand(g, b, na, 4),
            "encoder_hidden_states": _rand(g, b, nt, 16), "timestep": torch.tensor([0.5]),
            "timestep_indices": torch.zeros(n, dtype=torch.long), "token_tags": tags, "position_ids": pos,
            "text_indices": torch.arange(nt), "video_indices": torch.arange(nt, nt + nv),
            "audio_indices": torch.arange(nt + nv, n)}


_add(cls="MiniMaxH3Transformer3DModel",
     make=_diffusers("MiniMaxH3Transformer3DModel", num_attention_heads=2, attention_head_dim=16, hidden_size=32,
                     num_layers=2, num_refiner_layers=2, ffn_dim=32, in_channels=4, audio_in_channels=4, text_dim=16,
                     freq_dim=16, time_embed_hidden_dim=32, time_embed_dim=16, rope_freq_dim=2),
     inputs=_minimax_h3_inputs, per_sample=("hidden_states", "audio_hidden_states", "encoder_hidden_states"),
     t_scale=1.0, stacks=("token_refiner.refiner_blocks", "transformer_blocks"),
     stream_order={"token_refiner.refiner_blocks": ("encoder_hidden_states",),
                   "transformer_blocks": ("hidden_states",)},
     note="one packed [text, video, audio] sequence; `timestep` holds the distinct noise levels (not per sample) and "
          "`timestep_indices` picks one per row; output (video, audio)")
_add(cls="MiniMaxMusic3RVQDepthDecoder",
     make=_diffusers("MiniMaxMusic3RVQDepthDecoder", hidden_size=32, num_layers=2, num_attention_heads=2,
                     intermediate_size=32, audio_vocab_size=8, num_codebooks=8, max_position_embeddings=8),
     inputs=lambda b, g: {"inputs_embeds": _rand(g, b, 8, 32)}, per_sample=("inputs_embeds",), timestep_arg=None,
     stacks=("layers",), stream_order={"layers": ("inputs_embeds",)}, image_stream="inputs_embeds",
     cache_context=False,
     note="not a denoiser: the causal depth LM that predicts the residual RVQ codes of one audio frame; no timestep, "
          "no text; it returns hidden states (batch, steps, hidden)")
_add(cls="MiniMaxMusic3Transformer1DModel",
     make=_diffusers("MiniMaxMusic3Transformer1DModel", in_channels=4, condition_dim=16, num_layers=2,
                     num_attention_heads=2, attention_head_dim=8, ff_inner_dim=32, rotary_dim=4,
                     fourier_embedding_dim=16),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, 8), "encoder_hidden_states": _rand(g, b, 8, 16),
                          "timestep": _t(b, 1.0)},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep"), t_scale=1.0,
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)}, cache_context=False,
     note="1D audio latents (batch, channels, length) with frame-aligned conditioning (the uncond branch passes "
          "zeros); timestep runs 0 (noise) .. 1 (data); the timestep embedding rides as an extra first token")
_add(cls="MotifVideoTransformer3DModel",
     make=_diffusers("MotifVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                     attention_head_dim=16, num_layers=2, num_single_layers=2, mlp_ratio=2.0, text_embed_dim=16,
                     rope_axes_dim=(4, 4, 8)),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_attention_mask": torch.ones(b, L), "timestep": _t(b)},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"),
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": ("hidden_states", "encoder_hidden_states"),
                   "single_transformer_blocks": ("hidden_states", "encoder_hidden_states")})


def _nucleus():
    from diffusers import NucleusMoEImageTransformer2DModel

    model = NucleusMoEImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(8, 4, 4), mlp_ratio=2.0, dense_moe_strategy="leave_first_block_dense",
        num_experts=2, moe_intermediate_dim=16, capacity_factors=2.0)
    # the routed experts' weights are torch.empty (a checkpoint fills them): give them values
    with torch.no_grad():
        for block in model.transformer_blocks:
            experts = getattr(getattr(block, "img_mlp", None), "experts", None)
            for p in (experts.parameters() if experts is not None else ()):
                p.normal_(0.0, 0.2)
    return model


_add(cls="NucleusMoEImageTransformer2DModel", make=_seeded(_nucleus),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 16, 16), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_hidden_states_mask": torch.ones(b, L), "timestep": _t(b, 1.0),
                          "img_shapes": [(1, 4, 4)] * b},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep"), t_scale=1.0,
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)},
     note="packed 2x2 patches like Qwen-Image; block 0 dense, block 1 MoE (2 experts); the blocks return the image "
          "stream only (the text is re-projected in every block)")


def _omnigen_inputs(b, g):
    n = L + 1 + (H // 2) * (W // 2)  # [text tokens, time token, image patches]
    return {"hidden_states": _rand(g, b, 4, H, W), "timestep": _t(b, 1.0),
            "input_ids": torch.randint(1, 32, (b, L), generator=g), "input_img_latents": [], "input_image_sizes": {},
            "attention_mask": torch.ones(b, n, n), "position_ids": torch.arange(n).expand(b, n).clone()}


_add(cls="OmniGenTransformer2DModel",
     make=_diffusers("OmniGenTransformer2DModel", in_channels=4, patch_size=2, hidden_size=32, num_attention_heads=2,
                     num_key_value_heads=2, intermediate_size=32, num_layers=2, pad_token_id=0, vocab_size=32,
                     max_position_embeddings=64, original_max_position_embeddings=64, pos_embed_max_size=8,
                     time_step_dim=16, rope_scaling={"short_factor": [1.0] * 8, "long_factor": [1.0] * 8}),
     inputs=_omnigen_inputs, per_sample=("hidden_states", "timestep", "input_ids", "attention_mask", "position_ids"),
     t_scale=1.0, stacks=("layers",), stream_order={"layers": ("hidden_states",)}, cache_context=False,
     note="the condition is token ids (its own embedding table, the text encoder is the model itself); one joint "
          "[condition, time token, image] sequence with a 3D attention mask")
_add(cls="OvisImageTransformer2DModel",
     make=_diffusers("OvisImageTransformer2DModel", patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                     num_single_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                     axes_dims_rope=(4, 4, 8)),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 16, 4), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b, 1.0), "img_ids": mz._ids(4, 4), "txt_ids": torch.zeros(L, 3)},
     per_sample=("hidden_states", "encoder_hidden_states", "timestep"), t_scale=1.0,
     stacks=("transformer_blocks", "single_transformer_blocks"),
     stream_order={"transformer_blocks": ("encoder_hidden_states", "hidden_states"),
                   "single_transformer_blocks": ("encoder_hidden_states", "hidden_states")},
     note="Flux-like, but the single blocks keep the two streams apart (they concatenate inside the block only)")
_add(cls="PRXTransformer2DModel",
     make=_diffusers("PRXTransformer2DModel", in_channels=4, patch_size=2, context_in_dim=16, hidden_size=32,
                     mlp_ratio=2.0, num_heads=2, depth=2, axes_dim=[8, 8]),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "attention_mask": torch.ones(b, L, dtype=torch.bool), "timestep": _t(b, 1.0)},
     per_sample=("hidden_states", "encoder_hidden_states", "attention_mask", "timestep"), t_scale=1.0,
     stacks=("blocks",), stream_order={"blocks": ("hidden_states",)}, cache_context=False,
     note="the text stream is projected once and read by every block, which returns the image stream only")
_add(cls="PixArtTransformer2DModel",
     make=_diffusers("PixArtTransformer2DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                     out_channels=8, num_layers=2, cross_attention_dim=16, sample_size=H, patch_size=2,
                     caption_channels=16),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_attention_mask": torch.ones(b, L), "timestep": _t(b),
                          "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)}, cache_context=False,
     note="learned sigma (out_channels 2x); the size conditions are off below sample_size 128")
_add(cls="PriorTransformer",
     make=_diffusers("PriorTransformer", num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=16,
                     num_embeddings=L, additional_embeddings=4),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 16), "proj_embedding": _rand(g, b, 16),
                          "encoder_hidden_states": _rand(g, b, L, 16), "attention_mask": torch.ones(b, L),
                          "timestep": _t(b), "return_dict": False},
     per_sample=("hidden_states", "proj_embedding", "encoder_hidden_states", "attention_mask", "timestep"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)}, cache_context=False,
     note="the unCLIP prior: it denoises one CLIP image embedding (batch, dim), not a latent image; the blocks run on "
          "[text, proj, time, x, prd] tokens and the prd token is read out; causal mask")
_add(cls="QwenImage21Transformer2DModel",
     make=_diffusers("QwenImage21Transformer2DModel", patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                     attention_head_dim=16, num_attention_heads=2, context_in_dim=16, mlp_ratio=2,
                     axes_dims_rope=(8, 4, 4)),
     # text-to-image: L text slots, then 4 image slots, each standing for a 2x2 group of the 4x4 target's tokens
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 16, 4), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_hidden_states_mask": torch.ones(b, L, dtype=torch.bool), "timestep": _t(b, 1.0),
                          "img_shapes": [[(1, 4, 4)]] * b,
                          "img_mask": torch.arange(L + 4).expand(b, L + 4) >= L},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep", "img_mask"),
     t_scale=1.0, stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)},
     note="single stream over one joint [text, image] sequence (block-causal); the output covers the whole joint "
          "sequence, the pipeline keeps its last 16 rows; text rows are modulated from t = 0")


def _rfd4_inputs(b, g):
    n = 8  # residues
    return {"bb_ca": _rand(g, b, n, 3), "local_latents": _rand(g, b, n, 4), "bb_ca_time": _t(b, 1.0),
            "local_latents_time": _t(b, 1.0), "padding_mask": torch.ones(b, n, dtype=torch.bool), "return_dict": False,
            "conditioning": {"is_in_context_conditioning": torch.zeros(b, n, dtype=torch.bool),
                             "supports_local_latent": torch.ones(b, n, dtype=torch.bool)}}


_add(cls="RFD4ProteinaTransformer",
     make=_diffusers("RFD4ProteinaTransformer", nlayers=2, token_dim=16, nheads=2, dim_cond=16, pair_repr_dim=8,
                     latent_dim=4, token_type_emb_dim=4, cath_emb_dim=4, t_emb_dim=16, seq_sep_dim=4,
                     xt_pair_dist_dim=4, feats_seq=("xt_bb_ca", "xt_local_latents"),
                     feats_cond_seq=("time_emb_bb_ca", "time_emb_local_latents"),
                     feats_pair_repr=("xt_bb_ca_pair_dists",), tri_mult_c=8, num_sequence_classes=8),
     inputs=_rfd4_inputs, per_sample=("bb_ca", "local_latents", "bb_ca_time", "local_latents_time", "padding_mask"),
     timestep_arg="bb_ca_time", t_scale=1.0, stacks=("transformer_layers",),
     stream_order={"transformer_layers": ("bb_ca",)}, image_stream="bb_ca", cache_context=False,
     note="protein structure flow model, not an image one: two noisy inputs (backbone coordinates, local latents) "
          "with a time each (local_latents_time too); the trunk layers return the token stream built from both; a "
          "pair representation (updated by the ModuleDict pair_update_layers after layer 0) rides alongside; no "
          "text; output (backbone, local_latents, sequence logits, insertion logits)")
_add(cls="SanaTransformer2DModel",
     make=_diffusers("SanaTransformer2DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                     attention_head_dim=8, num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                     cross_attention_dim=16, caption_channels=16, sample_size=H, patch_size=1),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_attention_mask": torch.ones(b, L), "timestep": _t(b)},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)}, cache_context=False,
     note="linear self-attention, a conv feed-forward (GLUMBConv)")
_add(cls="SanaVideoTransformer3DModel",
     make=_diffusers("SanaVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                     attention_head_dim=8, num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                     cross_attention_dim=16, caption_channels=16, sample_size=H, rope_max_seq_len=32),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "encoder_attention_mask": torch.ones(b, L), "timestep": _t(b)},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)}, cache_context=False,
     note="linear self-attention with Wan's RoPE, a temporal conv feed-forward")


def _sana_wm_refiner_inputs(b, g):
    from types import SimpleNamespace

    from diffusers.models.transformers.transformer_sana_wm_refiner import (
        SanaWMLTX2AudioVideoRotaryPosEmbed,
        SanaWMLTX2RefinerTransformer3DModel,
    )

    # the RoPE is an input, built as the pipeline does by the class's own helper, which reads only `self.rope`: a rope
    # configured like the tiny model's (inner dim 16, 2 heads, the class defaults otherwise) stands in for the model
    rope = SanaWMLTX2AudioVideoRotaryPosEmbed(dim=16, causal_offset=1, modality="video", rope_type="interleaved",
                                              num_attention_heads=2)
    cos_sin = SanaWMLTX2RefinerTransformer3DModel.build_rotary_emb_for_absolute_positions(
        SimpleNamespace(rope=rope), b, list(range(F)), H, W, torch.device("cpu"), 24.0)
    n = F * H * W
    return {"hidden_states": _rand(g, b, n, 4), "encoder_hidden_states": _rand(g, b, L, 16),
            "encoder_attention_mask": torch.ones(b, L), "timestep": _t(b)[:, None].expand(b, n).contiguous(),
            "video_rotary_emb": cos_sin}


_add(cls="SanaWMLTX2RefinerTransformer3DModel",
     make=_diffusers("SanaWMLTX2RefinerTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                     attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
                     audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
                     num_layers=2, caption_channels=16),
     inputs=_sana_wm_refiner_inputs,
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"),
     per_sample_lists=("video_rotary_emb",),
     stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)},
     note="SANA-WM's stage-2 AR refiner: LTX-2 blocks run video-only (the audio branch is built but unused); the "
          "timestep is per token (batch, tokens); the RoPE is an input; without kv_cache it is plain full attention")
_add(cls="SanaWMTransformer3DModel",
     make=_diffusers("SanaWMTransformer3DModel", in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2,
                     softmax_every_n=2, linear_head_dim=16, chunk_plucker_channels=4,
                     chunk_plucker_post_attn_blocks=2, image_size=H, caption_channels=16, mlp_ratio=2.0,
                     fp32_attention=True, mixed_precision="fp32"),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, F, H, W), "encoder_hidden_states": _rand(g, b, 1, L, 16),
                          "encoder_attention_mask": torch.ones(b, L), "timestep": _t(b)[:, None, None].expand(b, 1, F)},
     per_sample=("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"),
     stacks=("blocks",), stream_order={"blocks": ("hidden_states",)}, cache_context=False,
     note="camera-controlled world model, run here without camera inputs; per-frame timesteps (batch, 1, frames); "
          "block 0 gated-delta-net linear attention, block 1 softmax attention")


def _stable_audio_inputs(b, g):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    n = 8  # audio latent frames; the global (duration) token is prepended inside
    rope = get_1d_rotary_pos_embed(4, n + 1, use_real=True, repeat_interleave_real=False)  # head_dim // 2
    return {"hidden_states": _rand(g, b, 4, n), "encoder_hidden_states": _rand(g, b, L, 16),
            "global_hidden_states": _rand(g, b, 1, 16), "timestep": _t(b, 1.0), "rotary_embedding": rope}


_add(cls="StableAudioDiTModel",
     make=_diffusers("StableAudioDiTModel", sample_size=8, in_channels=4, num_layers=2, attention_head_dim=8,
                     num_attention_heads=2, num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=16,
                     time_proj_dim=16, global_states_input_dim=16, cross_attention_input_dim=16),
     inputs=_stable_audio_inputs, per_sample=("hidden_states", "encoder_hidden_states", "global_hidden_states",
                                              "timestep"),
     t_scale=1.0, stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)},
     cache_context=False,
     note="1D audio latents (batch, channels, frames); the timestep is the cosine-DPM solver's preconditioned sigma "
          "(0..1); the global (duration + time) token rides as the first token; the RoPE table is an input")
_add(cls="StableAudio3DiTModel",
     make=_diffusers("StableAudio3DiTModel", io_channels=4, patch_size=1, embed_dim=32, depth=2, num_heads=2,
                     cond_token_dim=16, global_cond_dim=16, local_add_cond_dim=4, timestep_features_dim=16,
                     ff_mult=2.0, num_memory_tokens=2),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, 8), "encoder_hidden_states": _rand(g, b, L, 16),
                          "global_hidden_states": _rand(g, b, 16), "encoder_attention_mask": torch.ones(b, L),
                          "timestep": _t(b, 1.0)},
     per_sample=("hidden_states", "encoder_hidden_states", "global_hidden_states", "encoder_attention_mask",
                 "timestep"),
     t_scale=1.0, stacks=("transformer_blocks",), stream_order={"transformer_blocks": ("hidden_states",)},
     cache_context=False,
     note="1D audio latents (batch, channels, frames); differential attention; learned memory tokens are prepended "
          "to the stream inside the blocks' sequence; pre/post 1x1 convs are zero-initialised residuals")
_add(cls="T5FilmDecoder",
     make=_diffusers("T5FilmDecoder", input_dims=4, targets_length=8, d_model=16, num_layers=2, num_heads=2, d_kv=8,
                     d_ff=32),
     inputs=lambda b, g: {"decoder_input_tokens": _rand(g, b, 8, 4), "decoder_noise_time": _t(b, 1.0),
                          "encodings_and_masks": [(_rand(g, b, L, 16), torch.ones(b, L))]},
     per_sample=("decoder_input_tokens", "decoder_noise_time"), per_sample_lists=("encodings_and_masks",),
     timestep_arg="decoder_noise_time", t_scale=1.0,
     stacks=("decoders",), stream_order={"decoders": ("decoder_input_tokens",)},
     image_stream="decoder_input_tokens", cache_context=False,
     note="spectrogram diffusion decoder (batch, frames, mel bins); the condition is a list of (encoding, mask) "
          "pairs, batched inside the list; each layer returns a tuple whose first item is the stream; returns a "
          "bare tensor")
_add(cls="Transformer2DModel",
     make=_diffusers("Transformer2DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                     num_layers=2, sample_size=H, patch_size=2, activation_fn="gelu-approximate",
                     num_embeds_ada_norm=10, norm_type="ada_norm_zero", norm_elementwise_affine=False),
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 4, H, W), "timestep": _t(b),
                          "class_labels": class_cfg(b)},
     per_sample=("hidden_states", "timestep", "class_labels"), stacks=("transformer_blocks",),
     stream_order={"transformer_blocks": ("hidden_states",)}, cache_context=False,
     note="configured as DiT (the patched, class-conditioned form DiTPipeline runs): no text, the condition is a "
          "class label (CFG passes the null class); learned sigma")
_add(cls="TransformerTemporalModel",
     excluded="not a denoiser: the temporal-attention layer inside UNet3DConditionModel-style UNets; its input is "
              "(batch * frames, C, H, W), so the batch is not its leading dim, and its layer-norm blocks ignore the "
              "timestep")

# tests/model_zoo.py's tiny Wan config, as keywords, for the Wan variants that take extra ones
_WAN_TINY = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 4,
             "out_channels": 4, "text_dim": 16, "freq_dim": 16, "ffn_dim": 32, "num_layers": 2,
             "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32}
_add(cls="WanVACETransformer3DModel",
     make=_diffusers("WanVACETransformer3DModel", **_WAN_TINY, vace_layers=[0, 1], vace_in_channels=4),
     inputs=lambda b, g: {**_wan_inputs(b, g), "control_hidden_states": _rand(g, b, 4, F, H, W)},
     per_sample=_WAN_PS + ("control_hidden_states",), stacks=("vace_blocks", "blocks"),
     stream_order={"vace_blocks": (None, "control_hidden_states"), "blocks": ("hidden_states",)},
     note="all VACE blocks run first on the control stream; each returns (hint, control stream), where the hint "
          "(None in stream_order: it continues no input) is added to hidden_states after main block vace_layers[i]")
_WAN_ANIMATE = {**_WAN_TINY, "in_channels": 12, "latent_channels": 4, "image_dim": None,
                "motion_encoder_channel_sizes": {"4": 8, "8": 8}, "motion_encoder_size": 8, "motion_style_dim": 8,
                "motion_dim": 4, "motion_encoder_dim": 8, "face_encoder_hidden_dim": 8, "face_encoder_num_heads": 2,
                "inject_face_latents_blocks": 1, "motion_encoder_batch_size": 8}
_add(cls="WanAnimateTransformer3DModel", make=_diffusers("WanAnimateTransformer3DModel", **_WAN_ANIMATE),
     # [noisy latents, reference/mask latents] on channels (2C + 4); pose latents have one frame fewer; an 8x8 face
     # video of 1 frame (the face encoder's two stride-2 convs map it to 1 motion frame, plus the zero pad frame)
     inputs=lambda b, g: {"hidden_states": _rand(g, b, 12, F, H, W), "encoder_hidden_states": _rand(g, b, L, 16),
                          "timestep": _t(b), "pose_hidden_states": _rand(g, b, 4, F - 1, H, W),
                          "face_pixel_values": _rand(g, b, 3, 1, 8, 8)},
     per_sample=_WAN_PS + ("pose_hidden_states", "face_pixel_values"), stacks=("blocks",),
     stream_order={"blocks": ("hidden_states",)},
     note="after every inject_face_latents_blocks-th block (every block here) a face_adapter cross-attention to the "
          "face-motion tokens adds a residual to hidden_states; in_channels 2C + 4, output C")
_add(cls="WanAnimate2Transformer3DModel",
     excluded="a denoising call (kv_cache_mode='cached') needs a KV cache filled by a prior reference pass "
              "(kv_cache_mode='extract', which ignores the timestep) and a flex-attention block mask built with "
              "create_block_mask(_compile=True), i.e. a torch.compile per shape; its latents and texts are per-sample "
              "lists, not batched tensors")
_add(cls="ZImageTransformer2DModel",
     make=_diffusers("ZImageTransformer2DModel", in_channels=4, dim=32, n_layers=2, n_refiner_layers=2, n_heads=2,
                     n_kv_heads=2, cap_feat_dim=16, axes_dims=[4, 6, 6], axes_lens=[64, 32, 32]),
     inputs=lambda b, g: {"x": [_rand(g, 4, 1, H, W) for _ in range(b)], "t": _t(b, 1.0),
                          "cap_feats": [_rand(g, L, 16) for _ in range(b)]},
     per_sample=("x", "t", "cap_feats"), timestep_arg="t", t_scale=1.0,
     stacks=("noise_refiner", "context_refiner", "layers"),
     stream_order={"noise_refiner": ("x",), "context_refiner": ("cap_feats",), "layers": ("x",)},
     image_stream="x", cache_context=False,
     note="latents and captions are per-sample LISTS (x: b tensors (C, 1, H, W), cap_feats: b tensors (L, D)) and "
          "the sample is a list too; refiners run on the image and the text apart, then `layers` on one joint "
          "[image, text] sequence; the timestep is reversed (the pipeline passes (1000 - t) / 1000); ~390k "
          "parameters: the timestep MLP's hidden width 1024 is fixed in the class")
