"""TeaCache (docs/algorithms.md §5): configuration and the published presets. Its hooks on the engine: hooks.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .._common import (_for_model, check_forecast_metric, check_forecast_order, check_guards, check_num_calls,
                       check_threshold)

INDICATORS = ("auto", "timestep_embedding", "modulated_input", "block_input")

# docs/algorithms.md §5: rescaling polynomials, highest degree first.
OPENSORA_COEFFICIENTS = (2.17546007e02, -1.18329252e02, 2.68662585e01, -4.59364272e-02, 4.84426240e-02)
COGVIDEOX_2B_COEFFICIENTS = (-3.10658903e01, 2.54732368e01, -5.92380459e00, 1.75769064e00, -3.61568434e-03)


@dataclass(frozen=True)
class TeaCacheConfig:
    """TeaCache: every call measures `rel = mean|u - u_prev| / mean|u_prev|` on an indicator `u` (u_prev updated
    every call), accumulates `acc += max(poly(rel), 0)` (`coefficients`, highest degree first; clamping at 0 is this
project's deviation from the reference, whose polynomial can go negative, so that `threshold=0` computes every call)
and reuses the residual of
    the whole block stack while `acc < threshold`; otherwise it computes and sets `acc = 0`. The first call of a
    video, and the last one when `num_calls` is given, always compute.

    `indicator`: "timestep_embedding" (the first block's `temb` input: CogVideoX), "modulated_input" (the first
    block's modulated norm output, the input of its self-attention: Latte, Open-Sora), "block_input" (the first
    block's hidden-state input) or "auto" (the adapter's choice). `num_calls`: calls per video (optional; with it
    a video also ends after that many calls, without it a new video starts when the timestep jumps up).

    Guards (defaults leave the published rule unchanged): the first `warmup` calls of a video always compute, and
    after `max_consecutive_reuse` reused calls in a row the next one computes (None: no cap).

    `forecast_order`: 0 reuses the last computed residual as it is (the published rule); 1 or 2 forecast it at the
    current step from the last 2 or 3 computed residuals (the polynomial through them over the step index,
    docs/algorithms.md section 11), one fused op per reused call. Costs `forecast_order` more residuals of memory.
    `forecast_metric` (with forecast_order n > 0): the indicator is `max(poly(rel), 0)` with
    `rel = mean|u - u_hat| / mean|u_hat|`, u_hat the forecast of u at this call from u of the last n + 1 computed
    calls (the same polynomial over the step index), not accumulated: the threshold bounds how far u strays from its
    forecast, the input-side image of how far the forecast residual is off (section 11). Costs n + 1 indicators of
    memory instead of one. Meant for an indicator that carries the sample: the timestep embedding is a fixed function
    of the step, whose forecast error says nothing of the residual's (on the demo CogVideoX it lost 14-21 dB).
    """

    threshold: float = 0.1
    coefficients: tuple = COGVIDEOX_2B_COEFFICIENTS
    indicator: str = "auto"
    num_calls: int | None = None
    warmup: int = 0
    max_consecutive_reuse: int | None = None
    forecast_order: int = 0
    forecast_metric: bool = False
    name: str = field(default="custom", compare=False)

    @staticmethod
    def hooks_class():
        from .hooks import TeaCacheHooks

        return TeaCacheHooks

    def __post_init__(self):
        owner = "TeaCacheConfig"
        check_threshold(owner, self.threshold)
        check_guards(owner, self.warmup, self.max_consecutive_reuse)
        check_forecast_order(owner, self.forecast_order)
        check_forecast_metric(owner, self.forecast_metric, self.forecast_order)
        co = tuple(self.coefficients)
        if not co or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                             for c in co):
            raise ValueError(f"{owner}: `coefficients` must be a non-empty sequence of finite numbers (highest "
                             f"degree first), got {self.coefficients!r}")
        object.__setattr__(self, "coefficients", tuple(float(c) for c in co))
        if self.indicator not in INDICATORS:
            raise ValueError(f"{owner}: `indicator` must be one of {INDICATORS}, got {self.indicator!r}")
        check_num_calls(owner, self.num_calls, 2)

    @classmethod
    def preset(cls, name: str, **overrides) -> TeaCacheConfig:
        """A published operating point (TEACACHE_PRESETS; "<name>-fast" is the larger threshold). Sources, all in
        ali-vilab/TeaCache at commit 7c10efc4: "cogvideox-2b", "opensora": docs/algorithms.md section 5;
        "wan2.1-*": TeaCache4Wan2.1/teacache_generate.py (coefficients, 5 warm-up steps) and its README
        (thresholds); "hunyuanvideo", "ltx-video", "mochi", "flux": the TeaCache4<model> scripts (coefficients and
        the thresholds in their comments); "cogvideox-5b", "cogvideox1.5-*": TeaCache4CogVideoX1.5/
        teacache_sample_video.py. The coefficients fit the sampler, steps and resolution their scripts use."""
        key = name.lower()
        if key not in TEACACHE_PRESETS:
            raise ValueError(f"unknown TeaCache preset {name!r}; choose one of {', '.join(TEACACHE_PRESETS)}")
        return cls(**{**TEACACHE_PRESETS[key], "name": key, **overrides})

    @classmethod
    def for_model(cls, model, **overrides) -> TeaCacheConfig:
        """The preset of the model's class (its adapter's `teacache_preset`), else the defaults."""
        return _for_model(cls, model, "teacache_preset", overrides)

    def replace(self, **changes) -> TeaCacheConfig:
        return dataclasses.replace(self, **changes)


# Coefficients TeaCache published for more families, as its scripts set them (ali-vilab/TeaCache at commit
# 7c10efc4702c6b619f47805f7abe4a7a08085aa0). Each was fitted on its model's own sampler and inputs:
# - Wan 2.1 (TeaCache4Wan2.1/teacache_generate.py, the `use_ret_steps` set: the indicator is e0, the projected timestep
#   embedding that diffusers passes to every block as `temb`; the first 5 steps per branch always compute): fitted
#   with Wan2.1's generate.py, 50 steps for T2V and 40 for I2V, 832x480 (1.3B, 480P) or 1280x720 (14B, 720P).
WAN21_T2V_1_3B_COEFFICIENTS = (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02)
WAN21_T2V_14B_COEFFICIENTS = (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01)
WAN21_I2V_480P_COEFFICIENTS = (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01)
WAN21_I2V_720P_COEFFICIENTS = (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02)
# - HunyuanVideo (TeaCache4HunyuanVideo/teacache_sample_video.py): the first double block's modulated image input,
#   HunyuanVideo's own sampler (its default 50 steps).
HUNYUANVIDEO_COEFFICIENTS = (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02)
# - LTX-Video (TeaCache4LTX-Video/teacache_ltx.py): first block's modulated input, diffusers' LTXPipeline, 50 steps.
LTX_VIDEO_COEFFICIENTS = (2.14700694e01, -1.28016453e01, 2.31279151e00, 7.92487521e-01, 9.69274326e-03)
# - Mochi (TeaCache4Mochi/teacache_mochi.py): first block's modulated input, diffusers' MochiPipeline, 64 steps.
MOCHI_COEFFICIENTS = (-3.51241319e03, 8.11675948e02, -6.09400215e01, 2.42429681e00, 3.05291719e-03)
# - FLUX.1 (TeaCache4FLUX/teacache_flux.py): first block's modulated input, diffusers' FluxPipeline, 28 steps.
FLUX_COEFFICIENTS = (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01)
# - CogVideoX-5B and 1.5-5B (TeaCache4CogVideoX1.5/teacache_sample_video.py, `coefficients_dict`): the timestep
#   embedding, diffusers' CogVideoX pipelines.
COGVIDEOX_5B_COEFFICIENTS = (-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02)
COGVIDEOX_15_5B_COEFFICIENTS = (2.50210439e02, -1.65061612e02, 3.57804877e01, -7.81551492e-01, 3.58559703e-02)
COGVIDEOX_15_5B_I2V_COEFFICIENTS = (1.22842302e02, -1.04088754e02, 2.62981677e01, -3.06009921e-01, 3.71213220e-02)


def _wan(coefficients, slow: float, fast: float) -> tuple[dict, dict]:
    common = dict(coefficients=coefficients, indicator="timestep_embedding", warmup=5)
    return dict(common, threshold=slow), dict(common, threshold=fast)


# TeaCache's published operating points: threshold 0.1 (slow) and 0.2 (fast) for CogVideoX-2B and Open-Sora; the
# others as their scripts and READMEs give them (slow: the smaller threshold, fast: the larger one).
TEACACHE_PRESETS: dict[str, dict] = {
    "cogvideox-2b": dict(coefficients=COGVIDEOX_2B_COEFFICIENTS, indicator="timestep_embedding", threshold=0.1),
    "cogvideox-2b-fast": dict(coefficients=COGVIDEOX_2B_COEFFICIENTS, indicator="timestep_embedding", threshold=0.2),
    "opensora": dict(coefficients=OPENSORA_COEFFICIENTS, indicator="modulated_input", threshold=0.1),
    "opensora-fast": dict(coefficients=OPENSORA_COEFFICIENTS, indicator="modulated_input", threshold=0.2),
}

# Wan 2.1: the thresholds of TeaCache4Wan2.1/README.md's use_ret_steps rows (slow, fast).
for _name, _co, _slow, _fast in (("wan2.1-t2v-1.3b", WAN21_T2V_1_3B_COEFFICIENTS, 0.05, 0.10),
                                 ("wan2.1-t2v-14b", WAN21_T2V_14B_COEFFICIENTS, 0.10, 0.20),
                                 ("wan2.1-i2v-14b-480p", WAN21_I2V_480P_COEFFICIENTS, 0.20, 0.30),
                                 ("wan2.1-i2v-14b-720p", WAN21_I2V_720P_COEFFICIENTS, 0.20, 0.30)):
    TEACACHE_PRESETS[_name], TEACACHE_PRESETS[_name + "-fast"] = _wan(_co, _slow, _fast)
# The scripts' comments: HunyuanVideo 0.1 (1.6x) / 0.15 (2.1x); LTX-Video 0.03 (1.6x) / 0.05 (2.1x); Mochi 0.06
# (1.5x) / 0.09 (2.1x); FLUX 0.25 (1.5x) / 0.6 (2.0x); CogVideoX-5B and 1.5: 0.1 (1.3x) / 0.2 (1.8x).
for _name, _co, _ind, _slow, _fast in (
        ("hunyuanvideo", HUNYUANVIDEO_COEFFICIENTS, "modulated_input", 0.10, 0.15),
        ("ltx-video", LTX_VIDEO_COEFFICIENTS, "modulated_input", 0.03, 0.05),
        ("mochi", MOCHI_COEFFICIENTS, "modulated_input", 0.06, 0.09),
        ("flux", FLUX_COEFFICIENTS, "modulated_input", 0.25, 0.6),
        ("cogvideox-5b", COGVIDEOX_5B_COEFFICIENTS, "timestep_embedding", 0.1, 0.2),
        ("cogvideox1.5-5b", COGVIDEOX_15_5B_COEFFICIENTS, "timestep_embedding", 0.1, 0.2),
        ("cogvideox1.5-5b-i2v", COGVIDEOX_15_5B_I2V_COEFFICIENTS, "timestep_embedding", 0.1, 0.2)):
    TEACACHE_PRESETS[_name] = dict(coefficients=_co, indicator=_ind, threshold=_slow)
    TEACACHE_PRESETS[_name + "-fast"] = dict(coefficients=_co, indicator=_ind, threshold=_fast)
