import triton
import triton.language as tl

from ._launch import INTERPRETING, cdiv

# Elements of one frame per program: 2048 on a GPU (the earlier frames' chunks are re-read from L1/L2 for the
# differences, so DRAM sees one pass); 64K under the interpreter (~1 ms per program).
MOTION_BLOCK = 1 << 16 if INTERPRETING else 2048


@triton.jit
def motion_partials_kernel(ws_ptr, p_ptr, strides_ptr, frames, frame_size, chunks, num_strides,
                           KP: tl.constexpr, BLOCK: tl.constexpr):
    # Program i: chunk i % chunks of every frame of group i // chunks (the residual viewed as [G, T, F]). Writes
    # its frame sums A_t and, per stride s_k, sum_t |p_t - p_{t - s_k}| (t in frame order) to ws[i].
    item = tl.program_id(0).to(tl.int64)
    g = item // chunks
    offs = (item % chunks) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < frame_size
    base = p_ptr + g * frames * frame_size
    width = frames + num_strides
    ks = tl.arange(0, KP)
    kmask = ks < num_strides
    st = tl.load(strides_ptr + ks, mask=kmask, other=1)
    acc = tl.zeros([KP, BLOCK], tl.float32)
    for t in range(frames):
        x = tl.load(base + t * frame_size + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(ws_ptr + item * width + t, tl.sum(tl.abs(x), axis=0))
        prev = t - st
        m2 = (kmask & (prev >= 0))[:, None] & mask[None, :]
        y = tl.load(base + prev[:, None] * frame_size + offs[None, :], mask=m2, other=0.0).to(tl.float32)
        acc += tl.where(m2, tl.abs(x[None, :] - y), 0.0)
    tl.store(ws_ptr + item * width + frames + ks, tl.sum(acc, axis=1), mask=kmask)


@triton.jit
def motion_finish_kernel(out_ptr, ws_ptr, strides_ptr, items, frames, num_strides, PARTIALS: tl.constexpr,
                         KP: tl.constexpr, WP: tl.constexpr, IB: tl.constexpr):
    # One program: the [items, width] partials summed over items in a fixed order, then per stride s_k:
    # num_k = N_k, den_k = sum_{t >= s_k} A_t + sum_{t <= T-1-s_k} A_t, m_k = num_k / den_k.
    width = frames + num_strides
    cols = tl.arange(0, WP)
    cmask = cols < width
    acc = tl.zeros([IB, WP], tl.float32)
    for start in range(0, items, IB):
        idx = start + tl.arange(0, IB)
        m = (idx < items)[:, None] & cmask[None, :]
        acc += tl.load(ws_ptr + idx.to(tl.int64)[:, None] * width + cols[None, :], mask=m, other=0.0)
    tot = tl.sum(acc, axis=0)
    ks = tl.arange(0, KP)
    kmask = ks < num_strides
    st = tl.load(strides_ptr + ks, mask=kmask, other=1)
    t = cols[None, :]
    frame_sum = tl.where(cols < frames, tot, 0.0)[None, :]
    tail = tl.sum(tl.where((t >= st[:, None]) & (t < frames), frame_sum, 0.0), axis=1)
    head = tl.sum(tl.where(t < frames - st[:, None], frame_sum, 0.0), axis=1)
    den = tail + head
    num = tl.sum(tl.where(t == frames + ks[:, None], tot[None, :], 0.0), axis=1)
    if PARTIALS:
        tl.store(out_ptr + ks * 2, num, mask=kmask)
        tl.store(out_ptr + ks * 2 + 1, den, mask=kmask)
    else:
        tl.store(out_ptr + ks, tl.div_rn(num, den), mask=kmask)


def block_for(frame_size: int, num_strides: int) -> int:
    # Small frames get a block their size (fewer idle lanes on a GPU, less work for the interpreter); many strides
    # a smaller one (the [KP, BLOCK] accumulator stays at MOTION_BLOCK floats).
    kp = triton.next_power_of_2(num_strides)
    return max(16, min(MOTION_BLOCK // kp, triton.next_power_of_2(max(1, frame_size))))


def workspace_numel(groups: int, frames: int, frame_size: int, num_strides: int) -> int:
    return groups * cdiv(frame_size, block_for(frame_size, num_strides)) * (frames + num_strides)


def launch(out, ws, p, strides, groups: int, frames: int, frame_size: int, partials: bool) -> None:
    """out: [K] or [K, 2] fp32; ws: workspace_numel(...) floats; p: the contiguous residual; strides: int64 [K]
    on p's device."""
    k = strides.numel()
    kp = triton.next_power_of_2(k)
    block = block_for(frame_size, k)
    chunks = cdiv(frame_size, block)
    items = groups * chunks
    if items:
        motion_partials_kernel[(items,)](ws, p, strides, frames, frame_size, chunks, k, KP=kp, BLOCK=block,
                                         num_warps=4)
    wp = triton.next_power_of_2(frames + k)
    ib = max(1, 4096 // wp)
    motion_finish_kernel[(1,)](out, ws, strides, items, frames, k, PARTIALS=partials, KP=kp, WP=wp, IB=ib,
                               num_warps=4)


AOT = dict(
    kernel=motion_partials_kernel,
    signature={"ws_ptr": "*fp32", "p_ptr": "*{dtype}", "strides_ptr": "*i64", "frames": "i64", "frame_size": "i64",
               "chunks": "i64", "num_strides": "i32", "KP": "constexpr", "BLOCK": "constexpr"},
    constexprs={"KP": 1, "BLOCK": 2048},
    aligned=("ws_ptr", "p_ptr", "strides_ptr", "frame_size"),
)
