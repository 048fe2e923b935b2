"""``python -m npattn check``: every registered op (and block) against finite differences.

Runs :func:`npattn.gradcheck.check_op` on each op of :data:`npattn.ops.REGISTRY` with its
example arguments, and :func:`npattn.gradcheck.check_module` on each block of
``npattn.blocks.BLOCK_REGISTRY`` when that package provides one.  One table row each: name,
family, max absolute and relative error, result, time.  The full report of every failure
follows the table.  Exit status 0 when all pass, 1 when any fails, 2 for bad usage.

Options::

    --ops NAME ...        op or block names, or families (default: all)
    --dtype float64|float32
    --backend numpy|array_api_strict|cupy
    --mode full|directional
    --seed N              the examples, cotangents and directions (default 0)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
import zlib
from types import ModuleType
from typing import Any, Callable

import numpy as np

from .backend import cupy_available, to_numpy
from .gradcheck import GradcheckReport, call_args, check_module, check_op, format_table

__all__ = ["main", "collect", "convert"]

BACKENDS = ("numpy", "array_api_strict", "cupy")
DTYPES = ("float64", "float32")


class UsageError(Exception):
    """Bad options: reported with exit status 2."""


def _namespace(backend: str) -> ModuleType:
    """The array namespace of a backend, or a UsageError saying why it cannot run."""
    if backend == "numpy":
        import array_api_compat.numpy as xp
        return xp
    if backend == "array_api_strict":
        try:
            import array_api_strict as xp
        except ImportError as exc:
            raise UsageError(f"backend 'array_api_strict' is not installed ({exc}); "
                             f"pip install array-api-strict") from None
        return xp
    ok, why = cupy_available()
    if not ok:
        raise UsageError(f"backend 'cupy' cannot run here: {why}")
    import array_api_compat.cupy as xp
    return xp


def convert(value: Any, xp: ModuleType, dtype: str) -> Any:
    """An example's value for backend ``xp``: floating NumPy arrays cast to ``dtype``, other
    NumPy arrays (indices) kept exact; tuples, lists and dicts converted entry by entry."""
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.floating):
            return xp.asarray(value.astype(dtype))
        return xp.asarray(value)
    if isinstance(value, (tuple, list)):
        return type(value)(convert(v, xp, dtype) for v in value)
    if isinstance(value, dict):
        return {k: convert(v, xp, dtype) for k, v in value.items()}
    return value


def _blocks() -> dict[str, Any]:
    """``npattn.blocks.BLOCK_REGISTRY`` if that package exists and has one, else empty."""
    try:
        module = importlib.import_module("npattn.blocks")
    except ModuleNotFoundError as exc:
        if exc.name == "npattn.blocks":
            return {}
        raise
    return dict(getattr(module, "BLOCK_REGISTRY", {}))


def collect(selection: list[str] | None) -> list[tuple[str, str, str, Any]]:
    """``(kind, name, family, spec)`` for every op and block matching ``selection`` (names or
    families; all when ``None``), ops first, in registration order."""
    from .ops import REGISTRY
    entries = [("op", name, spec.family, spec) for name, spec in REGISTRY.items()]
    entries += [("block", name, getattr(spec, "family", "block"), spec)
                for name, spec in _blocks().items()]
    if not selection:
        return entries
    known = {e[1] for e in entries} | {e[2] for e in entries}
    unknown = [s for s in selection if s not in known]
    if unknown:
        raise UsageError(f"unknown op, block or family: {', '.join(unknown)}\n"
                         f"  names: {', '.join(e[1] for e in entries)}\n"
                         f"  families: {', '.join(sorted({e[2] for e in entries}))}")
    return [e for e in entries if e[1] in selection or e[2] in selection]


def _rng(seed: int, name: str) -> np.random.Generator:
    """One stream per (seed, name): ``--ops NAME`` reproduces that row of a full run."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _check_entry(kind: str, spec: Any, xp: ModuleType, dtype: str, mode: str,
                 rng: np.random.Generator) -> GradcheckReport:
    if kind == "op":
        args, kwargs = convert(spec.example(rng), xp, dtype)
        args, kwargs = call_args(spec.forward, *args, **kwargs)
        return check_op(spec.forward, spec.backward, *args, mode=mode, rng=rng, **kwargs)
    module = spec.make(rng)
    # The module protocol: params and grads are live mappings whose entries can be replaced.
    for store in (module.params, module.grads):
        for key in list(store):
            store[key] = convert(to_numpy(store[key]), xp, dtype)
    return check_module(module, convert(to_numpy(spec.example(rng)), xp, dtype), mode=mode, rng=rng)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m npattn check",
        description="Check every registered op and block against central finite differences "
                    "in float64; exit 1 if any fails.")
    parser.add_argument("--ops", nargs="+", metavar="NAME",
                        help="op or block names, or families (default: all)")
    parser.add_argument("--dtype", choices=DTYPES, default="float64")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy")
    parser.add_argument("--mode", choices=("full", "directional"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(options: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Check the selected entries and print the table; 0 if all pass, 1 otherwise."""
    xp = _namespace(options.backend)
    entries = collect(options.ops)
    rows, failures = [], []
    start = time.perf_counter()
    for kind, name, family, spec in entries:
        t0 = time.perf_counter()
        try:
            report = _check_entry(kind, spec, xp, options.dtype, options.mode,
                                  _rng(options.seed, name))
        except Exception:  # a crashing op is a failure to show, not the end of the run
            ms = 1e3 * (time.perf_counter() - t0)
            rows.append([name, family, "-", "-", "ERROR", f"{ms:.0f}"])
            failures.append(f"{kind} {name} raised:\n{traceback.format_exc().rstrip()}")
            continue
        ms = 1e3 * (time.perf_counter() - t0)
        rows.append([name, family, f"{report.max_abs_err:.1e}", f"{report.max_rel_err:.1e}",
                     "pass" if report.passed else "FAIL", f"{ms:.0f}"])
        if not report.passed:
            failures.append(str(report))
    out(f"npattn check: {len(entries)} entries, backend {options.backend}, dtype "
        f"{options.dtype}, mode {options.mode}, seed {options.seed}")
    out(format_table(["name", "family", "max abs err", "max rel err", "result", "ms"], rows, ""))
    for text in failures:
        out("")
        out(text)
    out(f"\n{len(entries) - len(failures)} passed, {len(failures)} failed "
        f"in {time.perf_counter() - start:.1f} s")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m npattn check [options]``; returns the exit status."""
    try:
        options = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # --help (0) or an argparse error (2), already printed
        return int(exc.code or 0)
    try:
        return run(options)
    except UsageError as exc:
        print(f"npattn check: {exc}", file=sys.stderr)
        return 2
