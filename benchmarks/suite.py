"""The npattn benchmark suite: every op family and block, side by side with PyTorch in one run.

Run it as ``python -m npattn bench`` (or ``python benchmarks/suite.py``); ``--help`` lists the
options.  For each row it measures, interleaved with PyTorch when PyTorch is installed:

* forward and forward+backward time (gradients for x and every weight, a fixed random ``dy``):
  warm-up, then several repeats (more for a fast row, ``--seconds``), the median and the
  spread (interquartile range / median);
* the least bytes the computation must move (every input and output read or written once:
  forward ``x`` and ``y``; forward+backward also ``dy`` and ``dx``), the achieved GB/s, and how
  far the time is above that floor at the copy bandwidth measured at the start of the run;
  FLOPs and GFLOP/s for rows that matrix products dominate, against the measured matmul rate;
* the peak memory of one forward+backward beyond what was held before it: for NumPy the peak
  of ``tracemalloc`` (every NumPy allocation), and for both libraries the process's peak resident
  set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), so the two compare alike.

Results go to ``benchmarks/results/<machine>-<date>.md`` and ``.json``.  No test asserts a time.
On a GPU (``--backend cupy``) clocks are read after synchronising the device, PyTorch runs on
CUDA with TF32 off (CuPy computes float32 in full float32 too), the ceiling is the device's copy
bandwidth, and the peak memory is from each library's allocator: PyTorch's peak statistics, and
for CuPy the pool's used bytes read after every allocation of the run (:func:`peak_cupy_mib`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(HERE.parent))

import npattn.ops as ops  # noqa: E402
from npattn.backend import cupy_available, to_numpy  # noqa: E402

BLOCK_SHAPES = [(8, 64, 56, 56), (16, 256, 28, 28), (8, 512, 14, 14), (32, 256, 56, 56)]
QUADRATIC_SHAPES = [(4, 64, 28, 28), (4, 128, 14, 14)]
SAMPLING_SHAPES = [(8, 64, 28, 28)]
CBAM_FAMILY = ["SE", "ECA", "ChannelAttention", "SpatialAttention", "CBAM"]
#: The blocks of issue 7 beside the CBAM family, at its shapes (Non-local is in "quadratic").
BEYOND_CBAM = ["GlobalContext", "CoordAttention", "SelectiveKernel", "PyramidSpatialAttention",
               "SimAM", "BAM", "TripletAttention"]
#: 3x3 C->C convolutions (conv2d, SelectiveKernel's branches) only up to this N*C*C*H*W, about
#: a second each; SelectiveKernel is left out above it.
CONV_BUDGET = 8 * 512 * 512 * 14 * 14


# ------------------------------------------------------------------------------------ backends

class Device:
    """The array library under test and how to wait for it before reading a clock."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp
            self.sync: Callable[[], None] = lambda: None
        elif name == "array_api_strict":
            import array_api_strict as xp
            self.sync = lambda: None
        elif name == "cupy":
            ok, why = cupy_available()
            if not ok:
                raise SystemExit(f"bench: --backend cupy unavailable: {why}")
            import array_api_compat.cupy as xp
            import cupy
            self.sync = lambda: cupy.cuda.Device().synchronize()
        else:
            raise SystemExit(f"bench: unknown backend {name!r}")
        self.xp = xp

    def asarray(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)


class TorchSide:
    """PyTorch on the matching device, when it is installed."""

    def __init__(self, gpu: bool, threads: int | None):
        import torch
        self.torch = torch
        self.device = "cuda" if gpu else "cpu"
        if gpu:
            if not torch.cuda.is_available():
                raise RuntimeError("this PyTorch sees no CUDA device")
            # Full float32 as CuPy computes it: no TF32 in cuDNN convolutions (on by default)
            # nor in matrix products.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if threads:
            torch.set_num_threads(threads)
        self.sync = torch.cuda.synchronize if gpu else (lambda: None)

    def tensor(self, a: np.ndarray, grad: bool = False):
        t = self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return t.requires_grad_(grad)


# -------------------------------------------------------------------------------------- rows

@dataclass
class Runner:
    """Two closures: ``forward()`` and ``forward_backward()``."""

    forward: Callable[[], Any]
    forward_backward: Callable[[], Any]


@dataclass
class Case:
    name: str
    group: str          # "block", "op", "quadratic", "sampling"
    shape: tuple
    dtype: str
    make: Callable[[Device, str, np.random.Generator], Runner]
    make_torch: Callable[[TorchSide, str, np.random.Generator], Runner] | None
    floor_bytes_fwd: int
    floor_bytes_fb: int
    flops_fb: int = 0   # matrix-product FLOPs of forward+backward, where they dominate
    note: str = ""      # why a row has no PyTorch side, or what it departs from


def _randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _op_runner(fwd, bwd, args_np, kwargs):
    def make(dev: Device, dtype: str, rng: np.random.Generator) -> Runner:
        args = [dev.asarray(a.astype(dtype)) if isinstance(a, np.ndarray) else a for a in args_np]
        y, _ = fwd(*args, **kwargs)
        dy = dev.asarray(_randn(rng, tuple(y.shape), dtype))

        def forward_backward():
            _, cache = fwd(*args, **kwargs)
            return bwd(dy, cache)

        return Runner(lambda: fwd(*args, **kwargs)[0], forward_backward)
    return make


def _torch_op_runner(fn, args_np, grads):
    def make(ts: TorchSide, dtype: str, rng: np.random.Generator) -> Runner:
        args = [ts.tensor(a.astype(dtype), g) if isinstance(a, np.ndarray) else a
                for a, g in zip(args_np, grads)]
        with ts.torch.no_grad():
            y = fn(*args)
        dy = ts.tensor(_randn(rng, tuple(y.shape), dtype))

        def forward():
            with ts.torch.no_grad():
                return fn(*args)

        def forward_backward():
            for a in args:
                if hasattr(a, "grad"):
                    a.grad = None
            fn(*args).backward(dy)

        return Runner(forward, forward_backward)
    return make


def _make_block(blocks, name: str, channels: int, rng):
    cls = getattr(blocks, name)
    if name in ("SpatialAttention", "PyramidSpatialAttention", "TripletAttention"):
        return cls(kernel_size=7, rng=rng)
    if name == "SimAM":
        return cls()
    return cls(channels, rng=rng)  # batch-norm blocks start (and stay) in training mode


def _module_runner(block, shape, dev: Device, dtype: str, rng) -> Runner:
    x = dev.asarray(_randn(rng, shape, dtype))
    dy = dev.asarray(_randn(rng, shape, dtype))

    def forward_backward():
        block.forward(x)
        block.zero_grad()
        return block.backward(dy)

    # The forward alone keeps no cache in the module: a cache held over from it would still
    # occupy memory during the next forward+backward (PyTorch's forward runs under no_grad).
    return Runner(lambda: block._forward(x)[0], forward_backward)


def _torch_block_runner(name: str, channels: int, shape):
    def make(ts: TorchSide, dtype: str, rng: np.random.Generator) -> Runner:
        from benchmarks import torch_reference as tr
        torch = ts.torch
        module = tr.BLOCKS[name](channels).to(ts.device, getattr(torch, dtype))
        x = ts.tensor(_randn(rng, shape, dtype), grad=True)
        dy = ts.tensor(_randn(rng, shape, dtype))

        def forward():
            with torch.no_grad():
                return module(x)

        def forward_backward():
            module.zero_grad(set_to_none=True)
            x.grad = None
            module(x).backward(dy)

        return Runner(forward, forward_backward)
    return make


def _size(shape) -> int:
    return int(np.prod(shape))


def block_cases(names, shapes, dtypes) -> list[Case]:
    cases = []
    for dtype in dtypes:
        item = np.dtype(dtype).itemsize
        for shape in shapes:
            for name in names:
                n = _size(shape)
                if name == "SelectiveKernel" and shape[0] * shape[1] ** 2 * _size(shape[2:]) > CONV_BUDGET:
                    continue

                def make(dev, dt, rng, name=name, shape=shape):
                    import npattn.blocks as blocks
                    block = _make_block(blocks, name, shape[1], rng)
                    block.to(dt)
                    if dev.name == "cupy":
                        block.to("gpu")
                    elif dev.name == "array_api_strict":
                        block.to(dev.xp)
                    return _module_runner(block, shape, dev, dt, rng)

                flops = 0
                if name == "NonLocal":
                    b, c, h, w = shape
                    ci, hw = max(1, c // 2), h * w
                    # theta^T phi and A g: 2 products of 2*hw*hw*ci each, x3 for forward+backward;
                    # the four 1x1 convolutions: 4 * 2*hw*c*ci, x3.
                    flops = 3 * b * (2 * 2 * hw * hw * ci + 4 * 2 * hw * c * ci)
                cases.append(Case(name, "quadratic" if name == "NonLocal" else "block", shape, dtype,
                                  make, _torch_block_runner(name, shape[1], shape),
                                  2 * n * item, 4 * n * item, flops))
    return cases


def _torch_ops():
    import torch
    import torch.nn.functional as F
    return {
        "relu": (torch.relu, (True,)),
        "sigmoid": (torch.sigmoid, (True,)),
        "softmax": (lambda x: torch.softmax(x, dim=1), (True,)),
        "mul": (lambda a, b: a * b, (True, True)),
        "global_avg_pool2d": (lambda x: x.mean(dim=(2, 3), keepdim=True), (True,)),
        "global_max_pool2d": (lambda x: F.adaptive_max_pool2d(x, 1), (True,)),
        "channel_mean": (lambda x: x.mean(dim=1, keepdim=True), (True,)),
        "channel_max": (lambda x: x.amax(dim=1, keepdim=True), (True,)),
        "max_pool2d": (lambda x: F.max_pool2d(x, 2), (True,)),
        "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 1, 1), (True,)),
        "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 7), (True,)),
        "conv2d": (lambda x, w: F.conv2d(x, w, padding=1), (True, True)),
        "conv1d": (lambda x, w: F.conv1d(x, w, padding=2), (True, True)),
        "linear": (lambda x, w, b: F.linear(x, w, b), (True, True, True)),
    }


def _op_table(shape, rng):
    """(name, npattn op name, args as float64 NumPy, kwargs, output shape) at one block shape."""
    n, c, h, w = shape
    x = rng.standard_normal(shape)
    table = [
        ("relu", "relu", (x,), {}),
        ("sigmoid", "sigmoid", (x,), {}),
        ("softmax", "softmax", (x,), {"axis": 1}),
        ("mul", "mul", (x, rng.standard_normal((n, 1, h, w))), {}),
        ("global_avg_pool2d", "global_avg_pool2d", (x,), {}),
        ("global_max_pool2d", "global_max_pool2d", (x,), {}),
        ("channel_mean", "channel_mean", (x,), {}),
        ("channel_max", "channel_max", (x,), {}),
        ("max_pool2d", "max_pool2d", (x,), {"kernel_size": 2}),
        ("avg_pool2d", "avg_pool2d", (x,), {"kernel_size": 3, "stride": 1, "padding": 1}),
        ("adaptive_avg_pool2d", "adaptive_avg_pool2d", (x,), {"output_size": 7}),
        ("conv1d", "conv1d", (rng.standard_normal((n, 1, c * 8)), rng.standard_normal((1, 1, 5))),
         {"padding": 2}),
        ("linear", "linear", (rng.standard_normal((n * 64, c)), rng.standard_normal((c, c)),
                              rng.standard_normal((c,))), {}),
    ]
    if n * c * c * h * w <= 8 * 512 * 512 * 14 * 14:  # 3x3 C->C stays under about a second
        table.append(("conv2d", "conv2d", (x, rng.standard_normal((c, c, 3, 3)) / (3 * math.sqrt(c))),
                      {"padding": 1}))
    return table


def _torch_sampling_ops():
    """grid_sample from PyTorch; deform_conv2d from torchvision, None when it does not import."""
    import torch.nn.functional as F
    table = {"grid_sample": (lambda x, g: F.grid_sample(x, g, mode="bilinear", padding_mode="zeros",
                                                        align_corners=False), (True, True))}
    try:
        from torchvision.ops import deform_conv2d
    except Exception:
        return table
    table["deform_conv2d"] = (lambda x, off, w, b, m: deform_conv2d(x, off, w, b, padding=1, mask=m),
                              (True, True, True, True, True))
    return table


def _sampling_table(shape, rng):
    """grid_sample on a random affine grid (bilinear, zeros) and a modulated 3x3 C->C
    deform_conv2d (padding 1, offsets of a pixel or two, mask in (0, 1)), at one shape."""
    n, c, h, w = shape
    x = rng.standard_normal(shape)
    theta = np.eye(2, 3)[None] + 0.1 * rng.standard_normal((n, 2, 3))
    grid, _ = ops.affine_grid_forward(theta, (n, c, h, w), align_corners=False)
    kh = kw = 3
    return [
        ("grid_sample", "grid_sample", (x, grid),
         {"mode": "bilinear", "padding_mode": "zeros", "align_corners": False}),
        ("deform_conv2d", "deform_conv2d",
         (x, rng.standard_normal((n, 2 * kh * kw, h, w)), rng.standard_normal((c, c, kh, kw)) / (3 * math.sqrt(c)),
          rng.standard_normal((c,)), rng.uniform(0.05, 0.95, (n, kh * kw, h, w))),
         {"padding": 1}),
    ]


def all_op_cases(shapes, dtypes, only=None, table_of=_op_table, group="op") -> list[Case]:
    torch_table = {}
    if _torch_ok():
        torch_table = _torch_ops() if group == "op" else _torch_sampling_ops()
    cases = []
    for dtype in dtypes:
        item = np.dtype(dtype).itemsize
        for shape in shapes:
            table = table_of(shape, np.random.default_rng(0))
            for label, opname, args, kwargs in table:
                if only and label not in only:
                    continue
                fwd = getattr(ops, f"{opname}_forward", None)
                bwd = getattr(ops, f"{opname}_backward", None)
                if fwd is None:
                    continue
                y, _ = fwd(*args, **kwargs)
                in_bytes = sum(a.size for a in args if isinstance(a, np.ndarray)) * item
                out_bytes = y.size * item
                flops = 0
                if opname in ("conv2d", "deform_conv2d"):
                    o, ci, kh, kw = args[1 if opname == "conv2d" else 2].shape
                    flops = 3 * 2 * y.size * ci * kh * kw
                elif opname == "linear":
                    flops = 3 * 2 * y.size * args[1].shape[1]
                torch_fn, grads = torch_table.get(label, (None, None))
                note = ""
                if torch_fn is None and label == "deform_conv2d":
                    note = "torchvision not installed: no PyTorch side"
                cases.append(Case(
                    label, group, tuple(args[0].shape), dtype,
                    _op_runner(fwd, bwd, args, kwargs),
                    _torch_op_runner(torch_fn, args, grads) if torch_fn else None,
                    in_bytes + out_bytes, 2 * (in_bytes + out_bytes), flops, note))
    return cases


_TORCH_OK: bool | None = None


def _torch_ok() -> bool:
    global _TORCH_OK
    if _TORCH_OK is None:
        try:
            import torch  # noqa: F401
            _TORCH_OK = True
        except Exception:
            _TORCH_OK = False
    return _TORCH_OK


# ---------------------------------------------------------------------------------- measuring

def _clock(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


#: The most repeats a fast row gets from ``--seconds``.
MOST_REPEATS = 41


def timed_rounds(fns_syncs, warmup: int, repeats: int, seconds: float = 0.0,
                 in_turn: bool = True) -> list[list[float]]:
    """Time several closures, ``repeats`` calls each after ``warmup`` rounds of all; seconds.

    By default (``in_turn``) the timed calls alternate between the closures, round by round.

    With ``seconds``, a row whose rounds are fast gets more of them, up to
    :data:`MOST_REPEATS`, so that the timed rounds take about ``seconds`` in all (the round's
    time read from the last warm-up round): a call of a few milliseconds moves by tens of
    percent on a shared machine, and 7 medians of it are not a measurement.  With ``in_turn``
    False (``--order runs``), each closure's repeats run back to back after two untimed calls of
    its own: no call starts while the other library's threads still spin from its last one,
    as when a program uses one library at a time.
    """
    round_s = 0.0
    for _ in range(warmup):
        round_s = sum(_clock(fn, sync) for fn, sync in fns_syncs)
    if seconds > 0 and round_s > 0:
        repeats = max(repeats, min(MOST_REPEATS, math.ceil(seconds / round_s)))
    times: list[list[float]] = [[] for _ in fns_syncs]
    if not in_turn:
        for k, (fn, sync) in enumerate(fns_syncs):
            for _ in range(2):
                _clock(fn, sync)
            times[k] = [_clock(fn, sync) for _ in range(repeats)]
        return times
    for _ in range(repeats):
        for k, (fn, sync) in enumerate(fns_syncs):
            times[k].append(_clock(fn, sync))
    return times


def summary(ts: list[float]) -> dict:
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    med = statistics.median(ts)
    return {"median_ms": 1e3 * med, "iqr_pct": 100 * (q[2] - q[0]) / med if med else 0.0,
            "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts)}


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name):
                return int(line.split()[1])
    return -1


def _malloc_trim() -> None:
    """Hand freed heap memory back to the system, so the resident set before a run is honest."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_mib(fn, sync) -> float | None:
    """Peak resident set of one call of ``fn`` above what the process held before, MiB (Linux)."""
    return peak_rss_and_faults(fn, sync)[0]


def peak_rss_and_faults(fn, sync) -> tuple[float | None, int | None]:
    """Peak resident set of one call of ``fn`` (MiB above what was held before, Linux) and the
    minor page faults the process took during it.

    The faults tell where a time goes into the kernel: every fresh page of a large temporary
    that the allocator handed back to the system is faulted in (and zeroed) again on the next
    call, 4 KiB at a time unless the allocation was marked for huge pages (NumPy marks its large
    arrays; PyTorch's CPU allocator does not), see benchmarks/NOTES.md, "page faults".
    """
    try:
        gc.collect()
        _malloc_trim()
        before = _rss_kib("VmRSS:")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        sync()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
        return max(0, _rss_kib("VmHWM:") - before) / 1024, faults
    except OSError:
        return None, None


def peak_tracemalloc_mib(fn) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def peak_torch_cuda_mib(fn, ts: TorchSide) -> float:
    """Peak of PyTorch's CUDA allocator above what it held before one call of ``fn``, MiB."""
    torch = ts.torch
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    ts.sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def peak_cupy_mib(fn, sync) -> float:
    """Peak of CuPy's pool above what it held before one call of ``fn``, MiB.

    The pool keeps no peak, but its used bytes only grow at an allocation, so their largest
    value read right after each allocation is the peak.  An allocator that does that wraps the
    pool for the call (a Python call per allocation: never used while timing).
    """
    import cupy
    pool = cupy.get_default_memory_pool()
    previous = cupy.cuda.get_allocator()
    gc.collect()
    sync()
    base = peak = pool.used_bytes()

    def malloc(nbytes):
        nonlocal peak
        memory = pool.malloc(nbytes)
        peak = max(peak, pool.used_bytes())
        return memory

    cupy.cuda.set_allocator(malloc)
    try:
        fn()
        sync()
    finally:
        cupy.cuda.set_allocator(previous)
    return (peak - base) / 2**20


def measure_ceilings(dev: Device, quick: bool) -> dict:
    """Copy bandwidth (GB/s, bytes read + written) and matrix-product rate (GFLOP/s, 2048^2)."""
    xp = dev.xp
    n = (64 if quick else 256) * 2**20 // 4
    a = xp.ones((n,), dtype=xp.float32)
    b = xp.zeros((n,), dtype=xp.float32)

    def copy():  # into a buffer already faulted in: the bandwidth, not the page faults
        b[...] = a

    t = min(timed_rounds([(copy, dev.sync)], 1, 5)[0])
    out = {"copy_GBps": 2 * n * 4 / t / 1e9}
    for dt in ("float32", "float64"):
        m = xp.asarray(np.random.default_rng(0).standard_normal((2048, 2048)).astype(dt))
        t = min(timed_rounds([(lambda: xp.matmul(m, m), dev.sync)], 1, 3)[0])
        out[f"matmul_{dt}_GFLOPs"] = 2 * 2048**3 / t / 1e9
    return out


# ------------------------------------------------------------------------------------ running

@dataclass
class Result:
    name: str
    group: str
    shape: tuple
    dtype: str
    fwd: dict
    fb: dict
    torch_fwd: dict | None
    torch_fb: dict | None
    ratio_fwd: float | None
    ratio_fb: float | None
    floor_fb_ms: float
    x_floor: float
    gbps: float
    gflops: float | None
    mm_floor_ms: float | None
    peak_mib: float | None
    peak_tracemalloc_mib: float | None
    torch_peak_mib: float | None
    faults: int | None
    torch_faults: int | None
    repeats: int = 0
    notes: list = field(default_factory=list)


def run_case(case: Case, dev: Device, ts: TorchSide | None, ceilings: dict,
             warmup: int, repeats: int, seconds: float = 0.0, in_turn: bool = True) -> Result:
    rng = np.random.default_rng(1)
    runner = case.make(dev, case.dtype, rng)
    pairs = [(runner.forward, dev.sync), (runner.forward_backward, dev.sync)]
    trunner = None
    if ts is not None and case.make_torch is not None:
        trunner = case.make_torch(ts, case.dtype, np.random.default_rng(1))
        pairs += [(trunner.forward, ts.sync), (trunner.forward_backward, ts.sync)]
    times = timed_rounds(pairs, warmup, repeats, seconds, in_turn)
    fwd, fb = summary(times[0]), summary(times[1])
    tfwd = tfb = None
    if trunner is not None:
        tfwd, tfb = summary(times[2]), summary(times[3])
    floor_ms = 1e3 * case.floor_bytes_fb / (ceilings["copy_GBps"] * 1e9)
    gflops = mm_floor = None
    if case.flops_fb:
        gflops = case.flops_fb / (fb["median_ms"] / 1e3) / 1e9
        mm_floor = 1e3 * case.flops_fb / (ceilings[f"matmul_{case.dtype}_GFLOPs"] * 1e9)
    gpu = dev.name == "cupy"
    faults = tfaults = None
    if gpu:
        peak = peak_cupy_mib(runner.forward_backward, dev.sync)
    else:
        peak, faults = peak_rss_and_faults(runner.forward_backward, dev.sync)
    peak_tm = peak_tracemalloc_mib(runner.forward_backward) if dev.name == "numpy" else None
    tpeak = None
    if trunner is not None:
        if gpu:
            tpeak = peak_torch_cuda_mib(trunner.forward_backward, ts)
        else:
            tpeak, tfaults = peak_rss_and_faults(trunner.forward_backward, ts.sync)
    return Result(case.name, case.group, case.shape, case.dtype, fwd, fb, tfwd, tfb,
                  fwd["median_ms"] / tfwd["median_ms"] if tfwd else None,
                  fb["median_ms"] / tfb["median_ms"] if tfb else None,
                  floor_ms, fb["median_ms"] / floor_ms,
                  case.floor_bytes_fb / (fb["median_ms"] / 1e3) / 1e9, gflops, mm_floor,
                  peak, peak_tm, tpeak, faults, tfaults, len(times[0]),
                  [case.note] if case.note else [])


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def markdown(results: list[Result], meta: dict) -> str:
    lines = [f"# npattn benchmark: {meta['machine']}, {meta['date']}", "",
             f"Backend `{meta['backend']}`, PyTorch {meta['torch'] or 'not installed'}, "
             f"NumPy {meta['numpy']}, {meta['threads']}. Repeats: at least {meta['repeats']} after "
             f"{meta['warmup']} warm-up rounds, more for a fast row until its timed rounds take "
             f"about {meta.get('seconds', 0):g} s (at most {MOST_REPEATS}), "
             + ("each side's repeats in a run of their own" if meta.get("order") == "runs" else "interleaved")
             + "; medians, "
             "spread = IQR/median, n = repeats.", "",
             f"Ceilings measured in this run: copy {meta['ceilings']['copy_GBps']:.1f} GB/s; "
             f"matmul float32 {meta['ceilings']['matmul_float32_GFLOPs']:.0f} GFLOP/s, "
             f"float64 {meta['ceilings']['matmul_float64_GFLOPs']:.0f} GFLOP/s.", "",
             "ratio = npattn / PyTorch (below 1: npattn faster). floor = least bytes at copy "
             "bandwidth (or matrix-product FLOPs at the matmul rate); x floor = fwd+bwd / floor.",
             "Peak = peak " + ("device memory (CuPy's pool, PyTorch's allocator)" if meta["backend"] == "cupy"
                               else "resident memory") + " of one forward+backward above what was held before.",
             "Faults = minor page faults of the process during that one forward+backward "
             f"(transparent huge pages: {meta.get('thp', '-')}; glibc malloc settings: "
             f"{meta.get('malloc_env') or 'defaults'}).", "",
             "| row | shape | dtype | fwd ms | torch fwd | ratio | fwd+bwd ms (spread, n) | torch fwd+bwd "
             "| ratio | bytes floor ms | x floor | GB/s | GFLOP/s (mm floor ms) | peak MiB | torch peak MiB "
             "| faults | torch faults |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        shape = "x".join(map(str, r.shape))
        gf = "-" if r.gflops is None else f"{r.gflops:.0f} ({r.mm_floor_ms:.2f})"
        lines.append(
            f"| {r.name} | {shape} | {r.dtype} | {r.fwd['median_ms']:.2f} | "
            f"{_fmt(r.torch_fwd and r.torch_fwd['median_ms'])} | {_fmt(r.ratio_fwd)} | "
            f"{r.fb['median_ms']:.2f} ({r.fb['iqr_pct']:.0f}%, {r.repeats}) | "
            f"{_fmt(r.torch_fb and r.torch_fb['median_ms'])} | **{_fmt(r.ratio_fb)}** | "
            f"{r.floor_fb_ms:.2f} | {r.x_floor:.1f} | {r.gbps:.1f} | {gf} | "
            f"{_fmt(r.peak_mib, '.0f')} | {_fmt(r.torch_peak_mib, '.0f')} | "
            f"{_fmt(r.faults, 'd')} | {_fmt(r.torch_faults, 'd')} |")
    notes = sorted({f"- {r.name}: {note}" for r in results for note in r.notes})
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def _thp_setting() -> str:
    """The kernel's transparent-huge-page mode, e.g. ``madvise`` (the bracketed word)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    return text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()


def machine_name(backend: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os
    slug = "".join(ch if ch.isalnum() else "-" for ch in cpu).strip("-").lower()
    while "--" in slug:
        slug = slug.replace("--", "-")
    if backend == "cupy":
        import cupy
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        slug = name.replace(" ", "-").lower()
    return f"{slug}-{os.cpu_count()}c-{backend}"


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m npattn bench", description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="numpy", choices=["numpy", "array_api_strict", "cupy"])
    p.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--groups", nargs="+", default=["block", "quadratic", "op", "sampling"],
                   choices=["block", "quadratic", "op", "sampling"])
    p.add_argument("--only", nargs="+", help="row names (e.g. CBAM conv2d)")
    p.add_argument("--shapes", nargs="+", help="shapes like 8x64x56x56 (default: the suite's)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--order", choices=["interleaved", "runs"], default="interleaved",
                   help="interleaved: npattn's and PyTorch's calls alternate; runs: each side's "
                        "repeats back to back (no call meets the other library's spinning threads)")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="more repeats for a fast row, until its timed rounds take about this "
                        f"long (at most {MOST_REPEATS}; 0: exactly --repeats)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    p.add_argument("--npattn-threads", type=int, default=None,
                   help="threads of npattn's NumPy fast paths (default: NPATTN_THREADS, else the "
                        "CPUs available, at most 4; 1 for one thread)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--quick", action="store_true", help="smallest shape, 3 repeats: a smoke run")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for .md and .json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from npattn.backend import get_threads, set_threads
    if args.npattn_threads is not None:
        set_threads(args.npattn_threads)
    dev = Device(args.backend)
    ts = None
    if not args.no_torch and _torch_ok():
        try:
            ts = TorchSide(args.backend == "cupy", args.threads)
        except RuntimeError as exc:
            print(f"bench: PyTorch left out: {exc}", flush=True)
    shapes = BLOCK_SHAPES
    qshapes = QUADRATIC_SHAPES
    sshapes = SAMPLING_SHAPES
    if args.shapes:
        shapes = qshapes = sshapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    if args.quick:
        shapes, qshapes, sshapes = shapes[:1], qshapes[:1], sshapes[:1]
        args.repeats, args.warmup, args.seconds = min(args.repeats, 3), 1, 0.0
    import npattn.blocks as blocks
    cases: list[Case] = []
    if "block" in args.groups:
        names = [n for n in CBAM_FAMILY + BEYOND_CBAM
                 if hasattr(blocks, n) and (not args.only or n in args.only)]
        cases += block_cases(names, shapes, args.dtype)
    if "quadratic" in args.groups:
        names = [n for n in ["NonLocal"] if hasattr(blocks, n) and (not args.only or n in args.only)]
        cases += block_cases(names, qshapes, args.dtype)
    if "op" in args.groups:
        cases += all_op_cases(shapes, args.dtype, args.only)
    if "sampling" in args.groups:
        cases += all_op_cases(sshapes, args.dtype, args.only, _sampling_table, "sampling")
    ceilings = measure_ceilings(dev, args.quick)
    print(f"ceilings: {json.dumps({k: round(v, 1) for k, v in ceilings.items()})}", flush=True)
    results = []
    for case in cases:
        r = run_case(case, dev, ts, ceilings, args.warmup, args.repeats, args.seconds,
                     args.order == "interleaved")
        results.append(r)
        print(f"{r.name:>20} {'x'.join(map(str, r.shape)):>14} {r.dtype}  fwd+bwd "
              f"{r.fb['median_ms']:8.2f} ms  torch {_fmt(r.torch_fb and r.torch_fb['median_ms'], '8.2f')}"
              f"  ratio {_fmt(r.ratio_fb)}  x floor {r.x_floor:5.1f}  peak {_fmt(r.peak_mib, '.0f')}"
              f"/{_fmt(r.torch_peak_mib, '.0f')} MiB" + "".join(f"  ({n})" for n in r.notes),
              flush=True)
    import os
    meta = {"machine": machine_name(args.backend), "date": _dt.date.today().isoformat(),
            "backend": args.backend, "numpy": np.__version__,
            "torch": ts.torch.__version__ if ts else None,
            "threads": f"{os.cpu_count()} cores, PyTorch threads {args.threads}, "
                       f"npattn threads {get_threads()}",
            "repeats": args.repeats, "warmup": args.warmup, "seconds": args.seconds,
            "order": args.order,
            "ceilings": ceilings,
            "argv": list(argv or []), "thp": _thp_setting(),
            "malloc_env": " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                                   if k.startswith("MALLOC_"))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{meta['machine']}-{meta['date']}{'-quick' if args.quick else ''}"
    stem.with_suffix(".md").write_text(markdown(results, meta))
    stem.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "results": [asdict(r) for r in results]}, indent=1, default=str))
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
