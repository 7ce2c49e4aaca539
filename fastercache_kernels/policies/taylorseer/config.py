"""TaylorSeer (docs/algorithms.md section 13): configuration. Its hooks on the engine: hooks.py."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from .._common import check_num_calls

MODES = ("lite", "attention", "residual")
# the modules each mode forecasts (re.fullmatch on the name in the model, as diffusers matches them): lite, diffusers'
# _PROJ_OUT_IDENTIFIERS; attention, the attention modules of the blocks of the demo models and Wan (attn1, attn2)
DEFAULT_MODULES = {"lite": ("proj_out",), "attention": (r"[^.]*blocks\.\d+\.attn\d*",), "residual": ()}


def _int(owner: str, name: str, v, minimum: int, what: str = "") -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{owner}: `{name}` must be an int >= {minimum}{what}, got {v!r}")


@dataclass(frozen=True)
class TaylorSeerConfig:
    """TaylorSeer (Liu et al., 2025, "From Reusing to Forecasting: Accelerating Diffusion Models with TaylorSeers",
    arXiv 2503.06923): on a fixed schedule most steps do not run the model's expensive modules; their outputs are
    forecast by a Taylor series at the step index, with derivatives from divided differences of the last computed
    outputs (`max_order` + 1 of them; docs/algorithms.md section 9, rule "taylorseer").

    The schedule is diffusers' TaylorSeerCacheConfig's (0.42.1), per CFG branch, with s the step index (from 0): s
    computes when s < `disable_cache_before_step`, or (s - disable_cache_before_step - 1) % `cache_interval` == 0,
    or s >= `disable_cache_after_step` (when set); every other step forecasts. Defaults are diffusers': interval 5,
    3 warm-up steps, order 1. Unlike diffusers, the first step of a video always computes (diffusers raises there
    when disable_cache_before_step is 0).

    `mode` (which modules are forecast, as diffusers' hook):
    - "lite" (diffusers' use_lite_mode): the model's output projection ("proj_out") is forecast and the
      transformer blocks are skipped on forecast steps; the rest of the model (embeddings, final norm) runs.
    - "attention" (diffusers' per-module mode with cache_identifiers naming the blocks' attention modules): every
      attention module of the blocks (attn1, attn2, ...) is forecast; the rest of each block (norms, MLP) runs.
      Host decisions only, and not composable with FasterCache (which patches the same modules).
    - "residual" (fk's, not diffusers'): the blocks are skipped as in "lite", but what is forecast is the residual
      of the block stack (its output minus its input), added to the call's own stack input; the final norm and the
      output projection then run (section 11's forecasting reuse on TaylorSeer's schedule and weights).
    `modules`: regular expressions (re.fullmatch on the module names) of the forecast modules instead of the mode's
    (DEFAULT_MODULES); each module's outputs (a tensor or a tuple of tensors) are forecast.

    Factors are not stored: the last max_order + 1 computed outputs are (fp32 weights over them, summed by
    fk.ops.forecast in the output's dtype), the same forecast as diffusers' recursive factors in fp32
    (taylor_factors_dtype=torch.float32) up to rounding. `num_calls`: fk's lifecycle without a pipeline
    (docs/algorithms.md section 5).
    """

    cache_interval: int = 5
    disable_cache_before_step: int = 3
    disable_cache_after_step: int | None = None
    max_order: int = 1
    mode: str = "lite"
    modules: tuple | None = None
    num_calls: int | None = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        owner = "TaylorSeerConfig"
        _int(owner, "cache_interval", self.cache_interval, 1, " (1: every step computes)")
        _int(owner, "disable_cache_before_step", self.disable_cache_before_step, 0)
        if self.disable_cache_after_step is not None:
            _int(owner, "disable_cache_after_step", self.disable_cache_after_step, 0, " or None")
        _int(owner, "max_order", self.max_order, 0, " (0: reuse the last output)")
        if self.max_order > 2:
            raise ValueError(f"{owner}: `max_order` must be 0, 1 or 2 (fk.ops.forecast reads at most 3 computed "
                             f"outputs for order 2), got {self.max_order!r}")
        if self.mode not in MODES:
            raise ValueError(f"{owner}: `mode` must be one of {MODES} ('lite': forecast the output projection and "
                             "skip the blocks; 'attention': forecast every attention module; 'residual': forecast "
                             f"the blocks' residual), got {self.mode!r}")
        if self.mode == "residual" and self.modules is not None:
            raise ValueError(f"{owner}: mode 'residual' forecasts the blocks' residual and takes no `modules`")
        mods = self.modules
        if isinstance(mods, str):
            mods = (mods,)
        if mods is not None:
            mods = tuple(mods)
            for m in mods:
                try:
                    re.compile(m)
                except (TypeError, re.error) as e:
                    raise ValueError(f"{owner}: `modules` must be regular expressions of module names (re.fullmatch, "
                                     f"e.g. 'proj_out'), got {m!r}: {e}") from None
            if not mods:
                raise ValueError(f"{owner}: `modules` is empty; give None (the mode's modules) or patterns")
            object.__setattr__(self, "modules", mods)
        check_num_calls(owner, self.num_calls, 2)

    @property
    def patterns(self) -> tuple:
        """The forecast modules' name patterns (`modules`, or the mode's)."""
        return self.modules if self.modules is not None else DEFAULT_MODULES[self.mode]

    @property
    def forecast_order(self) -> int:
        """The order of the forecast (runtime/forecasting.py's name for it)."""
        return self.max_order

    def computes(self, step: int) -> bool:
        """Whether step `step` (from 0) runs the forecast modules (the schedule above)."""
        before, after = self.disable_cache_before_step, self.disable_cache_after_step
        return (step == 0 or step < before or (step - before - 1) % self.cache_interval == 0
                or (after is not None and step >= after))

    def hooks_class(self):
        from .hooks import TaylorSeerHooks, TaylorSeerResidualHooks

        return TaylorSeerResidualHooks if self.mode == "residual" else TaylorSeerHooks

    def replace(self, **changes) -> TaylorSeerConfig:
        return dataclasses.replace(self, **changes)
