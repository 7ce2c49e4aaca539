"""diffusers' FirstBlockCacheConfig on fk's First-Block-Cache runtime (policies/diffusers_compat.py maps the config).

diffusers' hook (hooks/first_block_cache.py, diffusers 0.42) computes every block on the first call of a context's
state and then whenever `mean|r1 - r1_ref| / mean|r1_ref| > threshold`; nothing else is forced. fk's runtime also
forces the last sampler step when the `cache_context` carries `step_index` and `num_inference_steps` (Wan's
pipeline passes both): this runtime keeps only the first call's. diffusers decides every branch on its own
indicator: the later branches of a step do not follow the first one's decision here.
"""

from __future__ import annotations

from .hooks import FirstBlockCacheHooks


class DiffusersFirstBlockCacheHooks(FirstBlockCacheHooks):
    follows_first_branch = False

    def begin_policy(self) -> None:
        # diffusers: only a state without a reference residual computes by force (and, composed with CFG-Cache, a
        # full call after a skip call that computed: docs/algorithms.md section 10)
        if self._hforce is not None:
            self._host_force(self._hc == 1)
        else:
            if self._hc is None:
                self.force.copy_(self.c == 1)
            else:  # (the call count on the host: `c` may not be written, see AdaptiveHooks._keeps_c)
                self.force.fill_(self._hc == 1)
            if self._composed and self.half is None:
                self.force.logical_or_(self.stale)
