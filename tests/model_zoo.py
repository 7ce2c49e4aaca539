"""Tiny random instances of diffusers' current model classes (2 blocks each, a few latent frames at 8x8) and a CFG
sampling loop that calls them batched ([uncond, cond] in one call) or once per branch inside
`cache_context("cond" | "uncond")`, with each class's own conditioning inputs (pooled projections, guidance, masks,
token ids, packed token grids)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

F, H, W, L = 2, 8, 8, 6  # latent frames, height, width; text tokens


@dataclass
class Spec:
    name: str
    make: object  # () -> model
    latent: tuple  # one sample's latent shape
    text: tuple  # one sample's text embedding shape (after batch)
    extra: object = None  # (batch, generator) -> extra keyword inputs, batched over the CFG halves where per sample
    fixed: dict = field(default_factory=dict)  # keyword inputs shared by both halves (ids, grid sizes)
    t_scale: float = 1.0  # the model takes timestep * t_scale (Flux and Qwen-Image: 0..1)
    per_sample: tuple = ()  # names in `extra` that are per sample (concatenated over the halves)


def _wan(cls_name):
    def make():
        import diffusers

        return getattr(diffusers, cls_name)(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    return make


def _cogvideox_5b():
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=16, num_layers=2, sample_width=W, sample_height=H, sample_frames=(F - 1) * 4 + 1,
        patch_size=2, max_text_seq_length=L, use_rotary_positional_embeddings=True)


def _hunyuan():
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 2, 4), guidance_embeds=True)


def _hunyuan_extra(b, g):
    return {"encoder_attention_mask": torch.ones(b, L, dtype=torch.bool), "pooled_projections": torch.randn(b, 8,
            generator=g), "guidance": torch.full((b,), 6000.0)}


def _hunyuan15():
    from diffusers import HunyuanVideo15Transformer3DModel

    return HunyuanVideo15Transformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_refiner_layers=1, text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=8, rope_axes_dim=(2, 2, 4),
        target_size=64, task_type="t2v")


def _hunyuan15_extra(b, g):
    return {"encoder_attention_mask": torch.ones(b, L), "encoder_hidden_states_2": torch.randn(b, 3, 8, generator=g),
            "encoder_attention_mask_2": torch.ones(b, 3), "image_embeds": torch.zeros(b, 4, 8)}


def _ltx():
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=2, caption_channels=16)


def _mochi():
    from diffusers import MochiTransformer3DModel

    return MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=4, activation_fn="swiglu", max_sequence_length=L)


def _allegro():
    from diffusers import AllegroTransformer3DModel

    return AllegroTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2,
        cross_attention_dim=16, sample_width=W, sample_height=H, sample_frames=8, caption_channels=16)


def _flux():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(4, 4, 8), guidance_embeds=True)


def _ids(h, w):
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def _qwen():
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))


def _sd3():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=H, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=8, out_channels=4)


# Flux: 16 image tokens and 16 text tokens of one width, so that the two streams of every block have equal shapes
# (the pairing must come from the adapter's block order, never from the shapes).
FLUX_N = 16
SPECS = {
    "wan": Spec("wan", _wan("WanTransformer3DModel"), (4, F, H, W), (L, 16)),
    "skyreels-v2": Spec("skyreels-v2", _wan("SkyReelsV2Transformer3DModel"), (4, F, H, W), (L, 16)),
    "cogvideox-5b": Spec("cogvideox-5b", _cogvideox_5b, (F, 4, H, W), (L, 16)),
    "hunyuanvideo": Spec("hunyuanvideo", _hunyuan, (4, F, H, W), (L, 16), _hunyuan_extra,
                         per_sample=("encoder_attention_mask", "pooled_projections", "guidance")),
    "hunyuanvideo-1.5": Spec("hunyuanvideo-1.5", _hunyuan15, (4, F, H, W), (L, 16), _hunyuan15_extra,
                             per_sample=("encoder_attention_mask", "encoder_hidden_states_2",
                                         "encoder_attention_mask_2", "image_embeds")),
    "ltx-video": Spec("ltx-video", _ltx, (F * H * W, 4), (L, 16),
                      lambda b, g: {"encoder_attention_mask": torch.ones(b, L)},
                      fixed={"num_frames": F, "height": H, "width": W}, per_sample=("encoder_attention_mask",)),
    "mochi": Spec("mochi", _mochi, (4, F, H, W), (L, 16),
                  lambda b, g: {"encoder_attention_mask": torch.ones(b, L, dtype=torch.bool)},
                  per_sample=("encoder_attention_mask",)),
    "allegro": Spec("allegro", _allegro, (4, F, H, W), (L, 16)),
    "flux": Spec("flux", _flux, (FLUX_N, 4), (FLUX_N, 16),
                 lambda b, g: {"pooled_projections": torch.randn(b, 16, generator=g),
                               "guidance": torch.full((b,), 3.5)},
                 fixed={"img_ids": _ids(4, 4), "txt_ids": torch.zeros(FLUX_N, 3)}, t_scale=1e-3,
                 per_sample=("pooled_projections", "guidance")),
    "qwen-image": Spec("qwen-image", _qwen, (16, 16), (L, 16),
                       lambda b, g: {"encoder_hidden_states_mask": torch.ones(b, L)},
                       fixed={"img_shapes": [(1, 4, 4)]}, t_scale=1e-3, per_sample=("encoder_hidden_states_mask",)),
    "sd3": Spec("sd3", _sd3, (4, H, W), (L, 16), lambda b, g: {"pooled_projections": torch.randn(b, 8, generator=g)},
                per_sample=("pooled_projections",)),
}


class Case:
    """One class: the model and the inputs of one video; `run(model, per_branch)` samples it."""

    def __init__(self, spec: Spec, calls: int, seed: int = 0):
        self.spec, self.calls = spec, calls
        torch.manual_seed(seed)
        self.model = spec.make().eval()
        g = torch.Generator().manual_seed(seed)
        self.x0 = torch.randn(1, *spec.latent, generator=g)
        self.pos = torch.randn(1, *spec.text, generator=g)
        self.neg = torch.randn(1, *spec.text, generator=g)
        extra = spec.extra(1, g) if spec.extra else {}
        self.extra_one = extra
        self.scale = 5.0

    def kwargs(self, x, t, text, batch):
        kw = {"hidden_states": x, "timestep": (t * self.spec.t_scale).expand(batch), "encoder_hidden_states": text,
              "return_dict": False, **self.spec.fixed}
        for k, v in self.extra_one.items():
            kw[k] = torch.cat([v] * batch) if k in self.spec.per_sample else v
        if "img_shapes" in kw:
            kw["img_shapes"] = kw["img_shapes"] * batch
        return kw

    def run(self, model, per_branch: bool, calls: int | None = None) -> torch.Tensor:
        n = calls or self.calls
        ts = torch.linspace(999.0, 0.0, n + 1)
        x = self.x0.clone()
        for i in range(n):
            t, dt = ts[i], (ts[i + 1] - ts[i]) / 1000
            with torch.no_grad():
                if per_branch:
                    ctx = {"step_index": i, "num_inference_steps": n}
                    with model.cache_context("cond", **ctx):
                        cond = model(**self.kwargs(x, t, self.pos, 1))[0]
                    with model.cache_context("uncond", **ctx):
                        uncond = model(**self.kwargs(x, t, self.neg, 1))[0]
                else:
                    both = model(**self.kwargs(torch.cat([x, x]), t, torch.cat([self.neg, self.pos]), 2))[0]
                    uncond, cond = both.chunk(2)
            v = uncond + self.scale * (cond - uncond)
            x = x + dt * v[:, : x.shape[1]] if v.shape != x.shape else x + dt * v
        return x
