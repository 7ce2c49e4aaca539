"""Runtime of the adaptive policies (AdaCache + MoReg, TeaCache, First-Block-Cache) with decisions on the device.

State lives in 0-d tensors updated in place: the call count `c`, the previous timestep, the compute flag `pred`,
accumulators, rates and the next compute call. The engine's pre-hook (outside compiled graphs) calls `begin`, which
advances the call count and detects a new video on the device (timestep jumped up, or `num_calls` calls done; the
engine's own host-side detection resets it too); the block forwards compute the metric with the fused ops and set
`pred`. With per-branch calls (diffusers' `cache_context("cond" | "uncond")`) every tensor below is kept per
branch by the engine (`save`/`load`), so one branch never reuses the other's residuals.

Two ways to act on `pred` (decide="auto", the default, takes "host" for eager calls and "device" for calls under
torch.compile: the engine observes the first call of each kind, and that call lays out the buffers):
- decide="host": one host read per call (`bool(pred)`: in the pre-hook for AdaCache, whose decision is
  known before the call; in the first block for TeaCache and First-Block-Cache, whose metric comes from this call),
  then plain Python branches.
- decide="device": no host read while traced or captured; every block is `torch.cond(pred, compute, reuse,
  operands)` with functional branches (they return the output and the new residuals; the buffers are written with
  copy_ outside the cond), so `torch.compile(model, fullgraph=True)` builds one graph that serves every call and
  every video, and a CUDA graph captures a whole call. An eager call (not compiling, not capturing, no dispatch
  mode) reads `pred` once instead and runs the chosen branch (`eager_go`): eager torch.cond costs about 0.5 ms per
  block (docs/results.md "Host time per call"); `cond_in_eager = True` on the runtime keeps torch.cond there too.
  It works by runs of blocks (`BlockInfo.run`, the blocks host mode chains): a computed call writes every block's
  residual (for the traced path) and the run's own (last output - first input), a reused one adds the run's
  residual at its first block and the others pass their inputs through, so its samples and its bookkeeping are
  host mode's.

decide="host" (and every call not captured) keeps the call count, previous timestep and reuse streak mirrored on
the host (`_hc`, `_hprev_t`, `_hstreak`), so `begin` updates the 0-d state with a few fills instead of a dozen
tensor ops per call (the same values); a captured call (a CUDA graph replays the pre-hook's ops) takes the tensor
path, which computes the state from the state.

With torch.distributed initialised, the metric's partial sums are all-reduced (SUM) before dividing (docs/algorithms.md
§5).
"""

from __future__ import annotations

import math
import operator
import struct
import sys
import warnings

import torch
import torch.utils._python_dispatch as _python_dispatch

from .. import ops
from ..ops.feature_diff import OP as _FEATURE_DIFF
from ..ops.residual_sum import OP as _RESIDUAL_SUM
from . import parallel
from .blocks import BlockInfo, install_direct_attention, traceable_attention
from .engine import Call, Hooks, Observation, fitting_buffer

_I64, _F32, _F64 = torch.int64, torch.float32, torch.float64
# State stays int64/fp32: torch 2.13 drops in-place writes to fp64 0-d tensors inside torch.compile graphs
# (measured: acc.copy_(...) on a float64 0-d tensor left it 0 under aot_eager; float32 works).


def _several_ranks(group) -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def all_reduce_sum(t: torch.Tensor, group=None, several: bool | None = None) -> torch.Tensor:
    """Sums `t` over the ranks of `group` when torch.distributed is initialised (identity otherwise). `several`:
    whether it spans several ranks, where the caller knows (see `AdaptiveHooks.allocate`)."""
    if _several_ranks(group) if several is None else several:
        t = t.clone()
        dist = torch.distributed
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def metric_value(a: torch.Tensor, b: torch.Tensor, metric: str, group=None, several: bool | None = None
                 ) -> torch.Tensor:
    """feature_diff(a, b, metric) over every rank of `group` (partial sums all-reduced before dividing,
    docs/algorithms.md §5); on one rank the one op itself, bit-identical to the metric of its partials (two op
    calls and the division: about 0.1 ms of host time per call on the tiny model, docs/results.md). `several` as in
    `all_reduce_sum`."""
    if _several_ranks(group) if several is None else several:
        return ops.feature_diff_from_partials(all_reduce_sum(ops.feature_diff_partials(a, b, metric), group, True),
                                              metric)
    if a.shape == b.shape and a.dtype == b.dtype and a.device == b.device:
        # the runtime's own operands (this call's tensor and a buffer laid out from the observed call): the op
        # itself, without the public function's argument checks (five Python calls, about 4 us of a cold call);
        # anything else takes the checked path, which names what does not match
        return _FEATURE_DIFF(a, b, metric, False, checked=True)
    return ops.feature_diff(a, b, metric)


def _operands(ins: list) -> list:
    """torch.cond rejects operands that alias each other; CogVideoX's first block gets video and text as two
    strided views of one tensor: copy strided inputs (later blocks get fresh contiguous outputs). Under
    torch.compile every operand is copied by an fk op: inductor may lay out a reshaped block input (Latte's
    temporal blocks) with other strides than the ones the cond's branches were traced with, and the branch then
    fails its stride assertion (torch 2.13 inductor, also with x.clone(memory_format=torch.contiguous_format), whose
    layout inductor re-plans); a custom op's output keeps the strides its fake gives."""
    if torch.compiler.is_compiling():
        return [ops.residual_sum(x, []) for x in ins]
    return [x if x.is_contiguous() else x.contiguous() for x in ins]


def under_torch_compile() -> bool:
    """Whether this (eager, compiler-disabled) hook runs inside a call of a torch.compile'd function: a frame of
    dynamo's eval_frame.py whose `self` is an OptimizeContext is then on the Python stack (torch 2.13; the
    compiler.disable wrapper around the hook itself is a DisableContext). The engine asks once per call where an
    eval-frame callback is set (an eager call, with none, is known without it: `Engine._model_forward`)."""
    f = sys._getframe(1)
    name = _EVAL_FRAME
    while f is not None:
        # one string comparison per frame, no method call
        if f.f_code.co_filename == name and type(f.f_locals.get("self")).__name__ in (
                "OptimizeContext", "OptimizedModule"):
            return True
        f = f.f_back
    return False


def _eval_frame_file() -> str:
    try:
        from torch._dynamo import eval_frame

        return eval_frame._TorchDynamoContext.__call__.__code__.co_filename
    except (ImportError, AttributeError):  # pragma: no cover (another torch): the file name alone
        return "eval_frame.py"


_EVAL_FRAME = _eval_frame_file()


def _dense(outs: list, ins) -> list:
    """torch.cond's branches must return dense tensors that alias no input: single-stream blocks return slices of
    one tensor (HunyuanVideo, Flux), Mochi's last block returns its text input as it is."""
    return [o.clone() if any(o is x for x in ins) else o.contiguous() for o in outs]


def _host_value(t) -> float | None:
    if isinstance(t, (int, float)):
        return float(t)
    if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel():
        return float(t.reshape(-1)[0])
    return None


_FP32 = struct.Struct("f")


def _f32(x: float) -> float:
    """`x` rounded to fp32 as a Python float (the value a 0-d fp32 tensor of it holds)."""
    try:
        return _FP32.unpack(_FP32.pack(x))[0]
    except OverflowError:  # beyond fp32's range: the tensor holds an infinity
        return math.copysign(math.inf, x)


def _poly(coefficients, x: torch.Tensor) -> torch.Tensor:
    """Horner, highest degree first, in x's dtype (fp64: the reference evaluates with numpy's poly1d)."""
    y = torch.zeros_like(x)
    for a in coefficients:
        y = y * x + a
    return y


class AdaptiveHooks(Hooks):
    """What the three policies share: lifecycle, the call count on the device, plain residual reuse."""

    policy = "adaptive"
    _composed = False  # set by `install`
    forced_tail = 0  # calls N - forced_tail .. N always compute (with num_calls)
    follows_first_branch = True  # the later CFG branches of a step take the first branch's decision

    def __init__(self, config, adapter, blocks: list[BlockInfo], decide: str = "auto", process_group=None,
                 record: bool = False):
        if decide not in ("auto", "host", "device"):
            raise ValueError(f"fk.apply: `decide` must be 'auto', 'host' or 'device', got {decide!r}")
        self.name = self.policy
        self.config, self.adapter = config, adapter
        self.candidates = list(blocks)  # the modules the observed call chooses the blocks from (fk.apply's)
        self.blocks: list[BlockInfo] = []  # the blocks, once a call was observed (module order)
        # "auto": host decisions, or device decisions when the observed call that lays out the buffers runs under
        # torch.compile (the engine observes again when that changes: see `start_observing`)
        self.auto = decide == "auto"
        self.device_mode = decide == "device"
        self.group = self.user_group = process_group
        self.cp = None  # the context-parallel group, when the model is sharded and its metric sums go over it
        self.record = record
        self.n = config.num_calls
        self.order: list[BlockInfo] = []
        self.ready = False
        self.engine = None
        self.host_reads = 0
        self.calls = 0
        self.history: list[dict] = []
        self.batch, self.frames = 0, 1
        self.device = torch.device("cpu")
        self.half: int | None = None  # composed with CFG-Cache: a skip call runs this half of the batch
        self.active = True  # False on a call that does not run the model (a rebuilt CFG branch)
        self.go = True
        self.lead = None  # the pred of the step's first branch, on a later branch's call
        self._hlead = None  # and its decision on the host (host decisions)
        self.others = []  # the other branches' saved state, on a step's first branch
        self.structure = None  # what the first call showed of a model without an adapter (runtime/structure.py)
        self._make_scalars()

    # -- engine protocol -----------------------------------------------------------------------------------------
    def install(self, engine) -> None:
        self.engine = engine
        # composed with FasterCache's CFG-Cache: a skip call runs one half of the batch (see `stale`)
        self._composed = any(p.name == "fastercache" for p in engine.policies)
        self._install_blocks()

    # -- the block stack: observed in the first call of each input signature (runtime/structure.py) -------------
    def needs_structure(self) -> bool:
        return True

    def observer_overrides(self) -> dict:
        """The adapter's `blocks` / `temporal_blocks` (the observer then takes them as the blocks) and `block_io`
        (used where the observed pairing is ambiguous, and checked against it otherwise)."""
        a = self.adapter
        return {"blocks": (*a.blocks, *a.temporal_blocks) or None, "block_io": tuple(a.block_io) or None}

    def structure_known(self, structure) -> None:
        """After the observed call: the candidates that carry the image stream (all that ran, where the adapter
        names `blocks`) become the policy's blocks, in execution order, with the observed pairing (the adapter's
        `block_io` where it sets one: it must agree); what the call kept for their caches becomes what `adopt`
        fills the buffers with."""
        rec, self._rec, self._run = self._rec, {}, []  # (the kept tensors go with `rec` when this returns)
        name = type(self.engine.model).__name__
        specs = {sp.module: sp for sp in structure.blocks}
        declared = bool(self.adapter.blocks or self.adapter.temporal_blocks)
        ours = {b.module for b in self.candidates}
        stray = [sp.name for sp in structure.blocks if sp.image >= 0 and sp.module not in ours]
        if stray:
            raise ValueError(f"fastercache: the observed call shows {stray} carrying the image stream, but they are "
                             f"not children of a torch.nn.ModuleList of {name}; name the blocks with the adapter's "
                             "`blocks`")
        chosen = [b for b in self.candidates if b in rec and (
            declared or (b.module in specs and specs[b.module].image >= 0))]
        if not chosen:
            raise ValueError(f"fastercache: no block stack carrying the image was found in {name} (stacks seen: "
                             f"{structure.stacks}); name the blocks with adapter=fk.adapters.generic_adapter("
                             "blocks=..., block_io=...)")
        twice = [b.name for b in chosen if rec[b].get("twice")]
        if twice:
            raise RuntimeError(f"fastercache: blocks {twice} ran twice in one model call; each patched block must run "
                               "once per call")
        chosen.sort(key=lambda b: rec[b]["n"])
        io = tuple(self.adapter.block_io)
        for b in self.candidates:
            b.order = -1
        count = {"spatial": 0, "temporal": 0}
        for k, b in enumerate(chosen):
            sp = specs.get(b.module)
            if sp is None and not io:
                raise ValueError(f"fastercache: block {b.name!r} (the adapter's `blocks`) is not a block of the "
                                 f"observed stacks {structure.stacks}; set the adapter's `block_io` for it")
            if sp is not None and not declared:
                b.kind = sp.kind
            b.index = count[b.kind]
            count[b.kind] += 1
            seen_io = tuple(sp.io) if sp is not None else io
            wrong = [j for j, n in enumerate(seen_io) if n is not None and j < len(io) and io[j] != n]
            if wrong:
                raise ValueError(f"fastercache: the adapter's `block_io` {list(io)} pairs output {wrong[0]} of block "
                                 f"{b.name!r} with {io[wrong[0]]!r}, but the observed call passes it on as "
                                 f"{seen_io[wrong[0]]!r} (pairing {list(seen_io)}): drop `block_io` from the adapter "
                                 "(the observation gives it) or correct it")
            b.block_io = io or seen_io
            b.image_name = sp.io[sp.image] if sp is not None and sp.image >= 0 else None
            b.order = k
            self._pair_seen(b, rec[b])
        self.order = chosen
        self.blocks = [b for b in self.candidates if b.order >= 0]  # module order
        install_direct_attention(self.engine, self.blocks)
        self.structure = structure
        self._setup_blocks()
        self._chains()
        seen = {}
        if self.residual_names() == ("res",):
            for b in self.order:
                if b.tail is b and self.reuses(b):
                    ins, outs = rec[b.head].get("ins"), rec[b].get("outs")
                    if ins is None or outs is None:
                        raise RuntimeError(f"fastercache: the observed call did not keep the ends of the chain "
                                           f"{b.head.name!r} .. {b.name!r} (it keeps the first two and last two "
                                           "blocks of each run); name the blocks with the adapter's `blocks`")
                    seen[b] = [outs[i] - ins[n] for i, n in zip(b.slots, b.head.io_names)]
                if self.device_mode and b.run_head is b and len(b.run) > 1:  # a run's residual (see `step`)
                    ins, outs = rec[b]["ins"], rec[b.run[-1]]["outs"]
                    self._seen_runs[b] = [outs[i] - ins[n] for i, n in zip(b.run[-1].slots, b.io_names)]
        self._seen = seen
        for b in self.order:
            self.observe_policy(b, rec[b])

    def _pair_seen(self, b: BlockInfo, r: dict) -> None:
        """Output i continues input `b.block_io[i]`, by position (never by shape: dual-stream blocks may return two
        streams of one shape, in either order); None outputs (SD3's last block drops its text stream) are skipped."""
        io = b.block_io
        bad = [k for k in r["kinds"] if k not in ("t", None)]
        if bad or all(k is None for k in r["kinds"]):
            raise TypeError(f"fastercache: block {b.name!r} returned {bad or 'None'}; expected a tensor or a tuple "
                            "of tensors")
        b.tuple_out = r["tuple_out"]
        b.n_out = len(r["kinds"])
        b.slots = tuple(i for i, k in enumerate(r["kinds"]) if k is not None)
        if len(io) < b.n_out:
            raise ValueError(f"fastercache: block {b.name!r} returns {b.n_out} outputs but `block_io` names "
                             f"{list(io)}: set `block_io` to the inputs its outputs mirror, in output order")
        names = [io[i] for i in b.slots]
        missing = [n for n in names if n not in r["in_ids"]]
        if missing:
            raise ValueError(f"fastercache: block {b.name!r}: its outputs mirror {names} (`block_io`, in output "
                             f"order) but {missing} is not a tensor input of the block; set the adapter's `block_io` "
                             "to the inputs its outputs mirror, in output order")
        for n, i in zip(names, b.slots):
            if r["in_shapes"][n] != r["out_meta"][i][0]:
                raise ValueError(f"fastercache: block {b.name!r} maps an input of shape {list(r['in_shapes'][n])} to "
                                 f"{list(r['out_meta'][i][0])}; residual reuse needs equal shapes (check the "
                                 "adapter's `block_io`: the inputs its outputs mirror, in output order)")
        b.io, b.io_names = [b.locs[n] for n in names], tuple(names)
        image = b.image_name or "hidden_states"  # observed, else diffusers' name
        b.primary = names.index(image) if image in names else 0
        b.shapes = [r["out_meta"][i] for i in b.slots]
        b.in_ids = tuple(r["in_ids"][n] for n in names)
        b.out_ids = tuple(r["out_ids"][i] for i in b.slots)

    def _setup_blocks(self) -> None:
        pass

    def _candidate(self, b: BlockInfo) -> None:
        """Before install: what the policy needs of a candidate block to observe it (AdaCache: its capture)."""

    def _install_blocks(self) -> None:
        engine = self.engine
        for b in self.candidates:
            self._candidate(b)
            b.orig = engine.inner_forward(b.module)
            if b.capture is not None and getattr(b.orig, "__self__", None) is not b.module:
                raise ValueError(f"fastercache: block {b.name!r} has a replaced forward; AdaCache needs the block's "
                                 "own forward method to capture its attention residual (use residual='block')")
            engine.replace_forward(b.module, self._block_forward(b))

    def _block_forward(self, b: BlockInfo):
        rt = self

        def forward(*args, **kwargs):
            if rt.passing and b.passes:  # a reused host call, inside a chain: the head added the chain's residual
                return b.passthrough(args, kwargs)
            if rt.engine.observing:
                return rt.observe(b, args, kwargs)
            if not rt.ready or b.order < 0 or not rt.active:
                return b.orig(*args, **kwargs)
            if not torch.is_grad_enabled():  # the usual case (pipelines sample under no_grad): no context to enter
                return rt.run(b, args, kwargs)
            with torch.no_grad():  # cache reuse is inference-only (the fused ops define no backward)
                return rt.run(b, args, kwargs)

        # the block's own signature (inspect.signature follows __wrapped__): the observer names inputs by it
        forward.__wrapped__ = b.orig
        return forward

    def start_observing(self) -> None:
        self.passing = False
        if self.auto:  # the buffer layout follows the calls to come: chains for host decisions, one per block else
            self.device_mode = bool(self.engine.compiled)
            if self.device_mode:
                self.engine.static_shapes = True  # as decide="device" (see the engine's `_begin`)
        for b in self.candidates:
            b.order = -1
            b.passes = False
        self.order = []
        self._rec: dict = {}  # candidate -> what its run in the observed call showed (see `observe`)
        self._run: list = []  # the records of the run of candidates each taking the previous one's outputs
        self._firsts: set = set()  # the lists whose first child ran
        self._depth = 0
        self._seen: dict = {}  # block -> what its cache holds after the observed call (adopted after)
        self._seen_runs: dict = {}  # device decisions: a run's first block -> the run's residual in that call

    def allocate(self, call: Call, probe: Observation) -> None:
        if not self.order:
            raise ValueError(f"fastercache: no block of {type(self.engine.model).__name__} ran in a model call; "
                             f"blocks found: {[b.name for b in self.blocks][:4]}...")
        cp = parallel.cp_group(self.engine.model)  # diffusers' context-parallel group when the model is sharded
        self.group = cp if self.user_group is None else self.user_group  # (None: the world)
        self.cp = cp if self.group is cp else None
        # whether the metrics are all-reduced: known when the buffers are laid out (a launcher initialises
        # torch.distributed before the model's first call), not asked per call: the check took about 20 us of a
        # per-branch call on the tiny Wan by the line timer (cold c10d code), 0.8 us in a tight loop
        self.reduces = _several_ranks(self.group)
        self._allocate(probe.batch, probe.frames, probe.device)
        self._guarded = self._has_guards()  # (the config is frozen: read once, not per call)
        self._keeps_c = bool(self.device_mode or self.record or self.reads_c or getattr(self, "fc_order", 0))
        self._defers = not (self.device_mode or self.record or self._composed or getattr(self, "fc_order", 0))
        self.ready = True

    def local_names(self) -> tuple:
        """Per-key state: every 0-d scalar but the counters over every key (`computed`, `videos`: one tensor each,
        shared) and the policy's own buffers (block residuals are per block), and a host rule's writes not made yet
        (`_due`: they go to this key's `pred` and `metric`)."""
        return (*[n for n in self.scalars() if n not in ("computed", "videos")], "go", "_hc", "_hprev_t", "_hstreak",
                "_run_fresh", "_due")

    _state_names = None
    _at: dict = {}  # name -> position in a saved state (set with `_state_names`)

    def state_names(self) -> tuple:
        """`local_names()`, built once: the same every call, and the engine's branch switch saves and loads them on
        each per-branch call, as a list of values in this order (one attrgetter; loaded by one dict update, so none
        of them may be a property): with the blocks' buffers, 6.2 us a switch where a dict of names took 9.3 (warm,
        First-Block-Cache on the 2-block tiny Wan)."""
        names = self._state_names
        if names is None:
            cls = type(self)
            bad = [n for n in self.local_names() if hasattr(getattr(cls, n, None), "__set__")]
            if bad:
                raise TypeError(f"{cls.__name__}: per-key state {bad} must be plain attributes, not descriptors")
            names = self._state_names = self.local_names()
            self._read_state = operator.attrgetter(*names)
            self._at = {n: i for i, n in enumerate(names)}
        return names

    def _own_state(self) -> list:
        self.state_names()
        return list(self._read_state(self))

    def state_value(self, state: list, name: str):
        """`name` in a saved state (`save()[0]`, or `engine.peek(key, policy)[0]`)."""
        self.state_names()
        return state[self._at[name]]

    def save(self):
        # (no flush: a deferred write travels with its key, `_due`, and is made where it is read: `_flush`,
        # `_flush_saved`; on per-branch calls the switch saves on every call). The blocks' buffers: only those of
        # the blocks that hold any (`_keyed`, the chains' tails); `held` is scratch of one call, never switched.
        return self._own_state(), [b.bufs for b in self._keyed]

    def load(self, state) -> None:
        mine, blocks = state
        self.__dict__.update(zip(self._state_names, mine))
        for b, bufs in zip(self._keyed, blocks):
            b.bufs = bufs

    def _flush_saved(self, state: list) -> list:
        """Another key's saved state with its deferred writes made (`_flush`): its `pred` and `metric` are about to
        be read."""
        at = self._at
        due = state[at["_due"]]
        if due is not None:
            state[at["_due"]] = None
            state[at["metric"]].copy_(due[0])
            state[at["pred"]].fill_(due[1])
        return state

    def fresh(self) -> None:
        totals = self.computed, self.videos  # counters over every key and video: shared, not per key
        self._make_scalars()
        self.computed, self.videos = totals
        self.go = True
        for b in self.blocks:
            b.bufs, b.held = {}, None
        self._fresh_policy()
        if self.ready and self.engine is not None and self.engine.observation is not None:
            p = self.engine.observation
            self._allocate(p.batch, p.frames, p.device)

    def _fresh_policy(self) -> None:
        pass

    def drop_buffers(self) -> None:
        for b in self.blocks:
            b.bufs, b.held = {}, None
        self._fresh_policy()

    # -- 0-d state ---------------------------------------------------------------------------------------------
    def scalars(self) -> dict:
        """name -> (initial value, dtype, reset with the video)."""
        return {"c": (0, _I64, True), "prev_t": (math.inf, _F32, False), "pred": (True, torch.bool, True),
                "force": (True, torch.bool, True), "metric": (math.nan, _F32, True),
                "computed": (0, _I64, False), "videos": (0, _I64, False), "streak": (0, _I64, True),
                "stale": (False, torch.bool, True)}

    def _make_scalars(self) -> None:
        for name, (v, dt, _) in self.scalars().items():
            setattr(self, name, torch.full((), v, dtype=dt, device=self.device))
        self._hc, self._hprev_t, self._hstreak = 0, math.inf, 0
        self._run_fresh = False
        self._due = None

    # decide="host" (and eager device calls): `c`, `prev_t` and `streak` mirrored on the host (`_hc`, `_hprev_t`,
    # `_hstreak`, None when not known), so `begin` decides a new video and the forced calls in Python and writes the
    # 0-d tensors with a few fills instead of a dozen tensor ops per call; `c` stays exact (the policies' device
    # arithmetic reads it), `prev_t` and `streak` are written when the tensor path, which alone reads them, takes
    # over.
    # `_hforce`: this call's forced flag on the host (None where only the tensor knows it), so a policy that reads
    # its metric on the host decides in Python (First-Block-Cache: `FirstBlockCacheHooks.run`)
    _hc: int | None = None
    _hprev_t: float | None = None
    _hstreak: int | None = None
    _hforce: bool | None = None
    _force_due = False  # `_hforce` is not written to the `force` tensor yet (see `_host_force`)
    # whether `_begin_host` writes `c` on every call: device decisions, `record`, and the policies whose rules or
    # forecasts read the tensor (`reads_c`); otherwise the mirror `_hc` alone counts, and `c` is written where the
    # tensor path takes over (one fill fewer per call)
    _keeps_c = True
    reads_c = True
    _guarded = True  # `_has_guards()`, set with the buffers
    # decide="device" run eagerly: the runs' residuals (`BlockInfo.bufs["run"]`) hold the last eager computed call's
    # (no traced, captured or CFG-skip call since), so a reused eager call adds them as host decisions do
    _run_fresh = False
    # a host rule's decision and metric not yet written to `pred` and `metric` (`_defer`, `_flush`)
    _due: tuple | None = None
    _defers = False
    host_indicator: float | None = None  # this call's indicator where a host path read it (the summary's log)

    def reset(self) -> None:
        """Start a new video (host call: buffers are kept)."""
        self._due = None
        for name, (v, _, _) in self.scalars().items():
            if name not in ("computed", "videos"):
                getattr(self, name).fill_(v)
        self._hc, self._hprev_t, self._hstreak = 0, math.inf, 0

    def _reset_where(self, new: torch.Tensor) -> None:
        for name, (v, _, per_video) in self.scalars().items():
            if per_video:
                getattr(self, name).masked_fill_(new, v)  # one in-place op per scalar (no temporaries)

    # -- per call (pre-hook / post-hook, outside graphs; no host read but the one in `_read`) -------------------
    reads_in_forward = False  # decide="host" reads the decision inside the first block's forward

    def begin(self, call: Call) -> None:
        self.active = not call.skips_model
        if not self.active:
            return
        self._go_read = self.passing = False
        self._hforce = self.host_indicator = None
        self._force_due = False
        if self.reads_in_forward and not self.device_mode and self.engine.compiled:  # (the engine looked)
            # a host read inside a compiled forward: fullgraph cannot trace it, and without fullgraph the graph
            # breaks around it gave wrong videos (First-Block-Cache on the trained demo CogVideoX: 38.3 dB eager,
            # 33.9 dB under aot_eager), so refuse instead
            raise RuntimeError(
                f"fastercache: {type(self.config).__name__} with decide='host' reads its decision on the host inside "
                "the model's forward, which torch.compile cannot run correctly; apply it with decide='device' (one "
                "graph, no host read) or the default decide='auto' to compile the model, or run it eagerly")
        self.half = call.half
        self.calls += 1
        t = call.t_tensor
        by_steps = call.step is not None and call.num_steps is not None  # the context or pipeline says where we are
        if by_steps:
            self.by_steps = True
        n = self.n
        if n is not None and self._falling(call) and not by_steps and call.c == n + 1:  # (_falling keeps the last t)
            self._warn_calls(f"the timestep still fell at call {call.c}")
        # the host mirrors serve device decisions too, unless the call is captured (a CUDA graph replays the
        # pre-hook's tensor ops, which must then compute the state from the state)
        if self._hc is not None and (t is None or call.t is not None) and not (self.device_mode and self._captured()):
            self._begin_host(call, by_steps)
            self.begin_policy()
            return
        self._flush()
        if self._hc is not None:  # leaving the mirrors: c and prev_t as they kept them
            self.c.fill_(self._hc)
            if self._hprev_t is not None:
                self.prev_t.fill_(self._hprev_t)
        self._sync_streak()
        self._hc = self._hstreak = None  # the mirrors are not kept on this path
        new = self.c == 0
        if n is not None and not by_steps:
            new = new | (self.c >= n)
        if t is not None:
            t = (t if isinstance(t, torch.Tensor) else torch.as_tensor(t)).reshape(-1)[0].to(self.device, _F32)
            new = new | (t > self.prev_t)
            self.prev_t.copy_(t)
        self._reset_where(new)
        if call.pos == 0:  # per-branch calls: a video is counted once, on the first branch's calls
            self.videos.add_(new)
        self._branch_links(call)
        self.c.add_(1)
        self._eager_go = None  # decide="device" run eagerly: this call's decision, read once (see `eager_go`)
        force = self.c == 1
        if by_steps:
            if call.step + 1 >= call.num_steps - self.forced_tail:  # the last calls of the sampler
                force = torch.ones_like(force)
        elif n is not None:
            force = force | (self.c >= n - self.forced_tail)
        self.force.copy_(force | self._guards() if self._guarded else force)
        if self._composed and call.half is None:
            self.force.logical_or_(self.stale)
        self.begin_policy()

    def _begin_host(self, call: Call, by_steps: bool) -> None:
        """`begin`'s state update with the call count and timestep known on the host (the same values)."""
        n, c = self.n, self._hc
        new = c == 0 or (n is not None and not by_steps and c >= n)
        if call.t_tensor is not None:
            t = _f32(call.t)
            new = new or t > self._hprev_t
            self._hprev_t = t  # prev_t itself is written when the tensor path takes over (begin), its only reader
        if new:
            self._due = None
            for name, (v, _, per_video) in self.scalars().items():
                if per_video:
                    getattr(self, name).fill_(v)
            c = 0
            self._hstreak = 0
            if call.pos == 0:
                self.videos.add_(1)
        self._branch_links(call)
        self._eager_go = None
        c += 1
        self._hc = c
        if self._keeps_c:
            self.c.fill_(c)  # (a fill: a third of add_'s host time)
        if by_steps:
            force = c == 1 or call.step + 1 >= call.num_steps - self.forced_tail
        else:
            force = c == 1 or (n is not None and c >= n - self.forced_tail)
        if self._guarded:
            cfg, streak = self.config, self._hstreak
            cap = getattr(cfg, "max_consecutive_reuse", None)
            if streak is None:  # (the tensor path ran since the last video started)
                self.c.fill_(c)
                self.force.copy_(self._guards() | force)
            else:
                self._host_force(force or c <= getattr(cfg, "warmup", 0) or (cap is not None and streak >= cap))
        else:
            self._host_force(force)
        if self._composed and call.half is None:
            self._sync_force()
            self.force.logical_or_(self.stale)
            self._hforce = None  # `stale` is a tensor

    def _defer(self, metric: torch.Tensor, go: bool) -> None:
        """A host rule's decision (`go`) and indicator (`metric`, this call's 0-d tensor): written to `pred` and
        `metric` now, or, for host decisions with nothing else reading them per call (no device decisions, no
        record, no CFG-Cache, no forecasting), when something does (`_flush`: the tensor paths; `_flush_saved`:
        another branch reading this key's saved state, which carries them): two tensor ops fewer per call."""
        if self._defers:
            self._due = (metric, go)
        else:
            self.metric.copy_(metric)
            self.pred.fill_(go)

    def _flush(self) -> None:
        if self._due is not None:
            metric, go = self._due
            self._due = None
            self.metric.copy_(metric)
            self.pred.fill_(go)

    def _host_force(self, force: bool) -> None:
        """This call's forced flag, known on the host (`_hforce`): the `force` tensor is written where device
        decisions read it, else only when a tensor rule asks for it (`decide`, `_sync_force`): a host rule decides
        from `_hforce` alone (one fill fewer per call)."""
        self._hforce = force
        if self.device_mode:
            self.force.fill_(force)
        else:
            self._force_due = True

    def _sync_force(self) -> None:
        if self._force_due:
            self._force_due = False
            self.force.fill_(self._hforce)

    def _sync_streak(self) -> None:
        """The `streak` tensor from its host mirror, which host decisions keep alone (the tensor is read only where
        a call takes the tensor path)."""
        if self._hstreak is not None:
            self.streak.fill_(self._hstreak)

    def _branch_links(self, call: Call) -> None:
        """docs/algorithms.md section 10: the later branches of a step follow the first one's decision, so
        classifier-free guidance never mixes a reused branch with a computed one; the first branch decides on every
        branch's indicator (its own now, the others' as of their last call)."""
        if not self.follows_first_branch or (call.leader is None and not self.engine.branch_keys):
            # one call per step (the usual batched CFG call), or every branch decides alone (diffusers' config)
            self.lead, self.others, self._hlead = None, [], None
            return
        lead = self.engine.peek(call.leader, self) if call.leader is not None else None
        if lead is not None:
            lead = self._flush_saved(lead[0])
        self.lead = None if lead is None else lead[self._at["pred"]]
        # with host decisions the first branch's decision is known on the host too (its `go`, set by every call
        # that ran: `_decided` or `_read`), so a later branch decides without reading `lead`
        self._hlead = None if lead is None or self.device_mode else lead[self._at["go"]]
        peek = self.engine.peek
        self.others = [] if call.pos else [
            self._flush_saved(st[0]) for st in (peek(k, self) for k in self.engine.branch_keys if k != call.key)
            if st is not None]

    def _guards(self) -> torch.Tensor:
        """The config's warmup and cap on consecutive reused calls, as a 0-d bool (no host read)."""
        cfg = self.config
        hit = self.c <= getattr(cfg, "warmup", 0)
        cap = getattr(cfg, "max_consecutive_reuse", None)
        if cap is not None:
            hit = hit | (self.streak >= cap)
        return hit

    def _has_guards(self) -> bool:
        """Whether `_guards` can be hit (no warmup and no cap: never, as c >= 1; its ops are then skipped)."""
        cfg = self.config
        return getattr(cfg, "warmup", 0) > 0 or getattr(cfg, "max_consecutive_reuse", None) is not None

    def begin_policy(self) -> None:
        pass

    by_steps = False  # a context or the pipeline gave the step index and count (num_calls is not used)
    _warned_calls = False

    def video_ended(self, calls: int) -> None:
        if self.n is not None and not self.by_steps and calls != self.n and calls > 1:
            self._warn_calls(f"the video had {calls} calls")

    def _warn_calls(self, what: str) -> None:
        if not self._warned_calls:
            self._warned_calls = True
            warnings.warn(f"fastercache: {type(self.config).__name__}(num_calls={self.n}) but {what}: its schedule "
                          "(a new video every num_calls calls, the forced last calls) does not fit the sampler; set "
                          "num_calls to the number of calls per video, or apply fk to the pipeline (its scheduler "
                          "gives the step count)", stacklevel=6)

    def _falling(self, call) -> bool:
        """Whether this call's timestep is below the previous one's, where reading it is free (a CPU tensor or a
        number; the engine's own host value otherwise)."""
        t = call.t if call.t is not None else _host_value(call.t_tensor)
        prev, self._prev_host_t = getattr(self, "_prev_host_t", None), t
        return t is not None and prev is not None and t < prev

    def across(self, value: torch.Tensor, name: str, pick=torch.maximum, reused_only: bool = False,
               since: torch.Tensor | None = None) -> torch.Tensor:
        """`value` combined with the other branches' `name` as of their last call (finite values only; with
        `reused_only`, only where that call reused: a computed call refreshed the reference the value was measured
        against), on the step's first branch; `value` itself otherwise. With `since` (this branch's value at its
        last call, the step of the others' last calls), another branch's value is carried to now by this branch's
        change since: the later branch changes as the first did, which its value one step old misses."""
        at = self._at
        for other in self.others:
            v = other[at[name]]
            if since is not None:
                v = v + (value - since)
            keep = v.isfinite() & ~other[at["pred"]] if reused_only else v.isfinite()
            value = pick(value, torch.where(keep, v, value))
        return value

    def decide(self, own: torch.Tensor) -> torch.Tensor:
        """This call's decision from the policy's own rule (`own`: compute), or the step's first branch's."""
        if self._force_due:  # (host decisions only: never set in a traced call)
            self._sync_force()
        return self.force | (own if self.lead is None else self.lead)

    _eager_go = None
    cond_in_eager = False  # True: decide="device" runs torch.cond in eager calls as well (no host read at all)

    def _captured(self) -> bool:
        """A dispatch mode (CUDA-graph capture of torch.cond) or a capturing CUDA stream."""
        return bool(_python_dispatch._is_in_torch_dispatch_mode or (
            self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()))

    def _traced(self) -> bool:
        """decide="device": this call's blocks are traced or captured (they run torch.cond, no host read)."""
        return self.cond_in_eager or torch.compiler.is_compiling() or self._captured()

    def eager_go(self) -> bool | None:
        """decide="device" outside torch.compile, CUDA-graph capture and dispatch modes (an eager call): this call's
        decision read on the host, once per call (counted in host_reads), so the blocks run the chosen branch
        directly instead of eager torch.cond (about 0.5 ms per block, docs/results.md "Host time per call");
        None where the call is traced or captured (or `cond_in_eager` is set), which then makes no host read and
        runs torch.cond."""
        go = self._eager_go
        if go is not None:  # read by an earlier block of this eager call (begin clears it each call)
            return go
        if self._traced():
            return None
        self._eager_go = bool(self.pred)
        self.passing = not self._eager_go
        self.host_reads += 1
        return self._eager_go

    def _read(self) -> None:
        """The one host read per call (decide='host')."""
        if self.engine.adopting:  # the observed call computed every block (call 1 of a video): nothing to read
            self.go = True
            return
        if not self.device_mode:
            if torch.compiler.is_compiling():
                raise RuntimeError(
                    f"fastercache: {type(self.config).__name__} with decide='host' reads its decision on the host "
                    "inside the model's forward, which torch.compile cannot trace correctly; apply it with "
                    "decide='device' (one graph, no host read) or the default decide='auto' to compile the model, "
                    "or run it eagerly")
            self._decided(bool(self.pred))

    def _decided(self, go: bool) -> None:
        """This call's decision, known on the host (`_read`'s one read, or a policy's host rule, which also writes
        `pred`): the blocks branch on `go` (a reused call passes a chain's inner blocks through), `end` counts from
        it."""
        self.go, self._go_read, self.passing = go, True, not go
        self.host_reads += 1

    _go_read = False  # this call's pred was read into `go` (decide="host"): `end` updates the counters by it
    # a reused host call: the blocks inside a chain (`BlockInfo.passes`) return their inputs straight from their
    # forward, before the policy's `run` (four Python calls fewer per block: -3 us per block on the tiny CogVideoX)
    passing = False

    def end(self, call: Call) -> None:
        self.passing = False
        if not self.active:
            self.active = True
            return
        if self._go_read:  # the same updates, on the host (each tensor op costs microseconds in a call)
            if self.go:
                self._hcomputed += 1  # (added to the tensor's count where it is read: `computed_calls`)
                self._hstreak = 0
            elif self._hstreak is None:
                self.streak.add_(1)  # reused calls in a row
            else:
                self._hstreak += 1
        else:
            self._flush()
            self._sync_streak()
            self._hstreak = None
            self.computed.add_(self.pred)
            self.streak.add_(1).masked_fill_(self.pred, 0)  # reused calls in a row
        if self._composed:
            # a CFG-skip call that computed refreshed its half's residuals only: the other half's are stale until
            # a full call computes, so the next full call does (docs/algorithms.md section 10; without it the demo
            # CogVideoX with CFG-Cache + MagCache 0.12 fell to 13.4 dB, with it 43.9 dB)
            if self.half is None:
                self.stale.logical_and_(~self.pred)
            else:
                self.stale.logical_or_(self.pred)
        if self.device_mode:  # the runs' residuals: written by an eager computed call, kept by a reused one
            go = True if self.engine.adopting else self._eager_go  # (the observed call ran eagerly, adopted)
            if go is None or self.half is not None:
                self._run_fresh = False
            elif go:
                self._run_fresh = True
        if self.record:
            self.history.append({"key": call.key, **{k: getattr(self, k).clone() for k in self.recorded()}})
        self.half = None

    def recorded(self) -> tuple:
        return ("c", "pred", "metric")

    def block_ran(self, module) -> bool:
        """Whether the block `module` ran in the call just made (host decisions only)."""
        b = next((b for b in self.blocks if b.module is module), None)
        return b is None or b.order < 0 or self.go or not self.reuses(b)

    # -- probing and buffers -----------------------------------------------------------------------------------
    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """A buffer as this call sees it: the computed half of the batch on a composed CFG-skip call (a forecast ring,
        marked `_fk_ring`, holds its slots on dim 0 and the batch on dim 1)."""
        if self.half is None:
            return t
        return t.chunk(2, dim=1 if getattr(t, "_fk_ring", False) else 0)[self.half]

    def observe(self, b: BlockInfo, args, kwargs):
        """A candidate's run in an observed call: it runs as it is; what it shows is recorded (its place in the
        call, its tensor inputs and outputs by identity, their shapes), and the tensors a cache could need are kept
        until the structure is known (`structure_known`): with one residual per chain (decide="host"), only the
        first two and the last two records of each run of candidates that take the previous one's outputs as they
        are (a chain's ends: the first block may not reuse, the last may drop a stream); every record otherwise
        (one residual per block: as much as the cache holds). A candidate running inside another one, or again, is
        not a block (the observer's rule) and runs as it is."""
        rec = self._rec
        if self._depth or b in rec:
            if b in rec:
                rec[b]["twice"] = True
            return b.orig(*args, **kwargs)
        b.locate(args, kwargs)
        ins = {n: v for n in b.locs if isinstance(v := b.get(args, kwargs, n), torch.Tensor)}
        self._depth += 1
        try:
            with torch.no_grad():
                out = self.observe_run(b, args, kwargs)
        finally:
            self._depth -= 1
        tuple_out = isinstance(out, tuple)
        outs = out if tuple_out else (out,)
        is_t = [isinstance(o, torch.Tensor) for o in outs]
        r = {"n": len(rec), "tuple_out": tuple_out,
             "kinds": tuple("t" if t else None if o is None else type(o).__name__ for o, t in zip(outs, is_t)),
             "in_ids": {n: id(v) for n, v in ins.items()}, "in_shapes": {n: tuple(v.shape) for n, v in ins.items()},
             "out_ids": tuple(id(o) if t else None for o, t in zip(outs, is_t)),
             "out_meta": tuple((tuple(o.shape), o.dtype) if t else None for o, t in zip(outs, is_t)),
             "ins": {n: v.detach() for n, v in ins.items()},
             "outs": [o.detach() if t else None for o, t in zip(outs, is_t)], "mids": self._take_mids()}
        parent = b.name.rpartition(".")[0]
        if parent not in self._firsts:  # a list's first child: the policies' indicators read its call
            self._firsts.add(parent)
            r["call"] = (args, kwargs, out)
        rec[b] = r
        if self._chaining():
            run = self._run
            shapes = [m for m in r["out_meta"] if m is not None]
            # a run continues as `_chains` links blocks: the previous one's outputs, as they are, of equal shapes
            if run and shapes == [m for m in run[-1]["out_meta"] if m is not None] and all(
                    i in r["in_ids"].values() for i in run[-1]["out_ids"] if i is not None):
                run.append(r)
                if len(run) >= 5:  # neither end of the run: its tensors are the neighbours' (dropped)
                    run[-3]["ins"] = run[-3]["outs"] = None
            else:
                self._run = [r]
        return out

    def _take_mids(self):
        return None

    def _chaining(self) -> bool:
        return not self.device_mode and self.residual_names() == ("res",)

    def adopt(self, call: Call, output) -> None:
        """The observed call computed every block: its residuals (and the policy's own state) fill the buffers."""
        seen, self._seen = self._seen, {}
        runs, self._seen_runs = self._seen_runs, {}
        if not self.active:
            return
        for b in self.order:
            if b.tail is b and b in seen and "res" in b.bufs:
                for buf, r in zip(map(self.rows, b.bufs["res"]), seen[b]):
                    buf.copy_(r)
            for buf, r in zip(b.bufs.get("run", ()), runs.get(b, ())):
                buf.copy_(r)
        self.adopt_policy(seen)
        self.go = True

    def adopt_policy(self, seen: dict) -> None:
        pass

    def _first_call(self, b: BlockInfo, r: dict) -> tuple:
        """(args, kwargs, output) of the first block's run in the observed call."""
        if "call" not in r:
            raise RuntimeError(f"fastercache: the first block {b.name!r} is not the first child of its list that ran "
                               "in the observed call; name the blocks with the adapter's `blocks`")
        return r["call"]

    def observe_run(self, b, args, kwargs):
        """The block's one run in an observed call (each module must run once per call)."""
        return b.orig(*args, **kwargs)

    def observe_policy(self, b: BlockInfo, r: dict) -> None:
        """After the observed call, per block (execution order): the policy's own state from its record."""

    def residual_names(self) -> tuple:
        return ("res",)

    def _allocate(self, batch: int, frames: int, device) -> None:
        self.batch, self.frames = batch, frames
        if self.device_mode:
            for b in self.blocks:
                b.overrides = traceable_attention(b.module)
        if torch.device(device) != self.device:
            self.device = torch.device(device)
            for name in self.scalars():
                setattr(self, name, getattr(self, name).to(self.device))
        self._chains()
        for b in self.blocks:
            if b.order < 0 or not self.reuses(b) or b.tail is not b:
                b.bufs = {}
                continue
            names = self.residual_names()
            if self.device_mode and b.run_head is b and len(b.run) > 1:
                names = (*names, "run")  # the run's residual for eager reused calls (see `step`)
            for key in names:
                old = b.bufs.get(key) or []
                old = old if len(old) == len(b.shapes) else [None] * len(b.shapes)
                b.bufs[key] = [self._buffer(t, s, d) for t, (s, d) in zip(old, b.shapes)]
        self._run_fresh = False
        self.allocate_policy()
        # the blocks whose buffers are per key (the same for every key: one layout per observed shape)
        self._keyed = [b for b in self.blocks if b.bufs]

    _keyed: list = []  # (set with the buffers)
    reduces: bool | None = None  # the metrics are all-reduced over several ranks (set in `allocate`; None: ask)

    def allocate_policy(self) -> None:
        pass

    def reuses(self, b: BlockInfo) -> bool:
        return True

    def _chains(self) -> None:
        """Links blocks into chains (see BlockInfo); only for one residual per output and host decisions (a block
        passing its input through would alias it, which torch.cond forbids). With device decisions, the same runs
        of blocks (`run_head`, `run`) serve eager calls only: a reused eager call adds the run's per-block
        residuals at its first block."""
        for b in self.blocks:
            b.head = b.tail = b.run_head = b
            b.run = [b]
            b.held = None
            b.passes = False
            b.link()
        if self.device_mode and self.residual_names() == ("res",) and self._runs():
            prev = None
            for b in self.order:
                if prev is not None and self._links(prev, b):
                    b.run_head = prev.run_head
                    prev.run_head.run.append(b)
                    b.passes = True  # (an eager reused call: see `passing`)
                prev = b
        if not self._chaining():
            return
        prev = None
        for b in self.order:
            if prev is not None and self._links(prev, b):
                b.head = prev.head
            prev = b
        for b in self.order:
            b.head.tail = b  # the last block of each chain, in execution order
        for b in self.order:
            b.tail = b.head.tail
            b.passes = b.head is not b

    def _runs(self) -> bool:
        """Whether eager device calls reuse by runs (plain reuse; a forecast is per block: ForecastReuse)."""
        return True

    def _links(self, prev: BlockInfo, b: BlockInfo) -> bool:
        """Whether `b` takes `prev`'s outputs as they are, both reusing: one chain (run)."""
        return self.reuses(prev) and self.reuses(b) and b.in_ids == prev.out_ids and b.shapes == prev.shapes

    def _buffer(self, old: torch.Tensor | None, shape, dtype) -> torch.Tensor:
        return fitting_buffer(old, shape, dtype, self.device)

    def buffers(self) -> list:
        return [t for b in self.blocks for ts in b.bufs.values() for t in ts if t is not None]

    # -- block calls -----------------------------------------------------------------------------------------
    def run(self, b: BlockInfo, args, kwargs):
        return self.step(b, args, kwargs)

    def step(self, b: BlockInfo, args, kwargs):
        """Compute (refresh the residuals) or reuse (inputs + residuals), one residual per output."""
        if self.device_mode:
            ins = b.inputs(args, kwargs)
            go = self.eager_go()
            if go is not None:  # an eager call: the branch itself
                head = b.run_head
                if not go:
                    if head is not b:
                        return b.pack(ins)  # inside a run: its first block added the run's residual
                    if self._run_fresh and self._hc is not None and self.half is None and "run" in b.bufs:
                        # the run's residual as host decisions keep it (last output - first input, written by the
                        # last eager computed call): one add per stream, host mode's bits
                        return b.pack([torch.add(x, r) for x, r in zip(ins, b.bufs["run"])])
                    # (the per-block residuals were written since by a traced or captured call) one op per stream
                    # for the whole run, the sum in fp32 in block order (bit-identical to the per-block adds in
                    # fp32); the residuals are this runtime's buffers, shaped as the run's inputs: the op's
                    # per-argument check is skipped
                    return b.pack([_RESIDUAL_SUM(x, [blk.bufs["res"][i] for blk in b.run], checked=True)
                                   for i, x in enumerate(ins)])
                out = b.orig(*args, **kwargs)  # (eager: the attention overrides are for torch.cond)
                outs = b.outs(out)
                if len(head.run) == 1 or self.half is not None:
                    for buf, o, x in zip(b.bufs["res"], outs, ins):
                        torch.sub(o, x, out=buf)
                    return out
                if head is b:
                    head.held = []  # the run's inputs and outputs, block by block, written at its last block
                head.held.append((ins, outs))
                if b is head.run[-1]:
                    self._write_run(head)
                return out
            k = len(ins)
            res = b.bufs["res"]

            def compute(*xs):
                outs = _dense(b.outs(b.call(args, kwargs, xs[:k])), xs[:k])
                return (*outs, *(o - x for o, x in zip(outs, xs[:k])))

            def reuse(*xs):
                return (*(ops.residual_sum(x, [r]) for x, r in zip(xs[:k], xs[k:])), *(r.clone() for r in xs[k:]))

            got = torch.cond(self.pred, compute, reuse, (*_operands(ins), *res))
            for buf, r in zip(res, got[k:]):
                buf.copy_(r)
            return b.pack(list(got[:k]))
        if self.go:  # (the block forwards run `run` under no_grad: nothing here is tracked, nothing to detach)
            if b.head is b:
                b.held = b.inputs(args, kwargs)
            out = b.call(args, kwargs) if b.overrides else b.orig(*args, **kwargs)
            if b.tail is b:
                for buf, o, x in zip(map(self.rows, b.bufs["res"]), b.outs(out), b.head.held):
                    torch.sub(o, x, out=buf)
                b.head.held = None
            return out
        ins = b.inputs(args, kwargs)
        if b.head is not b:
            return b.pack(ins)  # inside a reused chain: the head added the chain's residual
        # torch's add rounds the fp32 sum once, as residual_sum of one residual does (1.3 us against its 7.6 us on
        # the tiny CogVideoX's [1, 8, 16], 20000-call loop)
        return b.pack([torch.add(x, self.rows(r)) for x, r in zip(ins, b.tail.bufs["res"])])

    def _write_run(self, head: BlockInfo) -> None:
        """An eager computed call with device decisions, at a run's last block: every block's residual (the traced
        path's layout, out - in per block, the same bits as one sub per block) with two foreach ops per stream
        instead of one op per block and stream (2 x 16 subs on the 16-block tiny CogVideoX), and the run's residual
        as host decisions keep it (last output - first input), which a reused eager call adds."""
        seen, head.held = head.held, None
        for i, r in enumerate(head.bufs["run"]):
            dst = [blk.bufs["res"][i] for blk in head.run]
            torch._foreach_copy_(dst, [outs[i] for _, outs in seen])
            torch._foreach_sub_(dst, [ins[i] for ins, _ in seen])
            torch.sub(seen[-1][1][i], seen[0][0][i], out=r)

    _hcomputed = 0  # computed calls counted on the host (host decisions), beside the `computed` tensor's

    def computed_calls(self) -> int:
        """Computed calls over every key and video: the tensor's count (device decisions, traced calls) and the
        host's."""
        return int(self.computed) + self._hcomputed

    def zero_counts(self) -> None:
        """Counters from zero (a benchmark counts its timed video only)."""
        self.computed.zero_()
        self._hcomputed = self.calls = self.host_reads = 0

    def stats(self) -> dict:
        computed = self.computed_calls()
        return {"policy": self.policy, "calls": self.calls, "videos": int(self.videos),
                "call_in_video": self._hc if self._hc is not None else int(self.c), "computed": computed,
                "reused": self.calls - computed, "host_reads": self.host_reads,
                "blocks": len(self.order), "cache_bytes": self.cache_bytes(),
                "block_stack": ("observed", self.structure.describe()) if self.structure is not None else
                ("adapter", sorted({b.name.rsplit(".", 1)[0] for b in self.blocks}))}
