"""Hand-written gradients against finite differences: :func:`check_op`, :func:`check_adjoint`,
:func:`check_module`.

Each check draws a random cotangent ``u`` (never all ones, which cannot tell a permuted output
from the right one), asks the hand-written backward for the gradient of ``<u, f(...)>`` and
compares it with central differences of the same scalar::

    report = check_op(conv2d_forward, conv2d_backward, x, w, None, padding=1)
    print(report)              # a table: per input, errors, the worst entry, pass or FAIL
    report.raise_if_failed()   # GradcheckError (an AssertionError) carrying that table

The finite differences are always taken in float64: a float32 call keeps its analytic gradient
in float32 (with tolerances to match) and is re-run in float64 for the differences.  Arrays of
any library work: the checker holds NumPy float64 copies, perturbs those, and hands the op
arrays of the input's own library and device.  The caller's arrays are never modified.

Two modes:

* ``"full"``: every entry of every input (two forwards per entry; for small inputs).
* ``"directional"``: a few random unit directions ``v`` per input; ``<analytic, v>`` against the
  central difference along ``v``.  Two forwards per direction, whatever the size.

The derivation of the tolerances and of the report's numbers is in ``docs/gradcheck.md``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj

from .backend import to_numpy
from .checks import argument_error

__all__ = [
    "check_op",
    "check_adjoint",
    "check_module",
    "GradcheckReport",
    "InputCheck",
    "AdjointReport",
    "AdjointCheck",
    "GradcheckError",
    "format_table",
    "call_args",
    "TOLERANCES",
    "STEPS",
    "ADJOINT_RTOL",
]

MODES = ("full", "directional")

#: (atol, rtol) by the bits of the analytic gradient; finite differences in float64.
TOLERANCES = {64: (1e-6, 1e-5), 32: (1e-4, 1e-3)}
#: (atol, rtol) when the finite differences themselves could only be taken in float32.
FD32_TOLERANCES = (1e-2, 1e-2)
#: Step ``eps`` of the central differences, by the bits they are taken in.
STEPS = {64: 1e-6, 32: 5e-3}
#: rtol of the dot-product test, by bits, relative to ``sum|u (f(x) - f(0))| + sum|g x|``.
ADJOINT_RTOL = {64: 1e-9, 32: 1e-3}


class GradcheckError(AssertionError):
    """A gradient check failed; the message is the report's table."""


# ------------------------------------------------------------------------------------ reports

def format_table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """Left-aligned plain-text columns (reports and ``python -m npattn check`` use it)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header, *rows])


def _e(v: float) -> str:
    return f"{v:.1e}"


def _g(v: float) -> str:
    return f"{v:.6g}"


@dataclass
class InputCheck:
    """The comparison for one input.

    Attributes
    ----------
    name : str
        The forward's parameter (``"x"``), a dict entry (``"params['conv.weight']"``), or a
        module's ``"x"`` and parameter names.
    shape : tuple of int
    dtype : str
        The input's dtype (the analytic gradient is computed in it).
    passed : bool
    max_abs_err, max_rel_err : float
        Over the entries (full) or directions (directional); the relative error of an entry is
        ``|a - n| / max(|a|, |n|, atol_eff)``.
    worst_index : tuple of int, int or None
        The entry (full) or the direction number (directional) that is furthest outside its
        tolerance, or closest to it when all pass; ``None`` when nothing could be compared.
    analytic_at_worst, numeric_at_worst : float
        Both values there.
    n_out_of_tol, n_checked : int
        Entries (or directions) outside the tolerance, and compared.
    analytic, numeric : numpy.ndarray or None
        Full mode: both gradients (float64).  Directional mode: ``<analytic, v_k>`` and the
        directional difference, one per direction.
    atol_eff : float
        The absolute tolerance after scaling: ``atol * max(1, scale)``.
    note : str
        What the numbers do not say: no gradient returned (compared with zero), or a gradient
        of the wrong shape (not compared) or dtype (compared, but failed).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    passed: bool
    max_abs_err: float = float("nan")
    max_rel_err: float = float("nan")
    worst_index: tuple[int, ...] | int | None = None
    analytic_at_worst: float = float("nan")
    numeric_at_worst: float = float("nan")
    n_out_of_tol: int = 0
    n_checked: int = 0
    analytic: np.ndarray | None = field(default=None, repr=False)
    numeric: np.ndarray | None = field(default=None, repr=False)
    atol_eff: float = float("nan")
    note: str = ""

    @property
    def frac_out_of_tol(self) -> float:
        """The fraction of entries (or directions) outside the tolerance."""
        return self.n_out_of_tol / self.n_checked if self.n_checked else 0.0

    def row(self, mode: str) -> list[str]:
        where = "-" if self.worst_index is None else (
            f"direction {self.worst_index}" if mode == "directional" else str(self.worst_index))
        return [self.name, str(self.shape), self.dtype, _e(self.max_abs_err), _e(self.max_rel_err),
                f"{self.n_out_of_tol}/{self.n_checked} ({100 * self.frac_out_of_tol:.1f}%)", where,
                _g(self.analytic_at_worst), _g(self.numeric_at_worst),
                "ok" if self.passed else "FAIL"]


_HEADER = ["input", "shape", "dtype", "max abs err", "max rel err", "out of tol", "worst at",
           "analytic", "numeric", "result"]


class _Verdict:
    """What both reports share: ``passed``, ``report[input_name]``, ``raise_if_failed()``.

    A subclass has ``name``, ``inputs`` (checks with ``.name`` and ``.passed``) and ``problems``.
    """

    name: str
    inputs: list[Any]
    problems: list[str]

    @property
    def passed(self) -> bool:
        """Every input passed and no problem (an input or ``dy`` modified) was seen."""
        return not self.problems and all(c.passed for c in self.inputs)

    def __getitem__(self, name: str) -> Any:
        for c in self.inputs:
            if c.name == name:
                return c
        raise KeyError(f"{self.name}: no checked input {name!r} "
                       f"(checked: {', '.join(c.name for c in self.inputs)})")

    def raise_if_failed(self) -> Any:
        """Raise :class:`GradcheckError` with ``str(self)`` unless it passed; return ``self``."""
        if not self.passed:
            raise GradcheckError(str(self))
        return self


@dataclass
class GradcheckReport(_Verdict):
    """What :func:`check_op` or :func:`check_module` found.

    ``str(report)`` is a table, one row per input; ``report["weight"]`` is that input's
    :class:`InputCheck`; ``report.passed`` is true when every input passed and no problem
    (an input or ``dy`` modified) was seen; ``raise_if_failed()`` raises
    :class:`GradcheckError` with the table.
    """

    name: str
    kind: str
    mode: str
    dtype: str
    fd_dtype: str
    eps: float
    atol: float
    rtol: float
    inputs: list[InputCheck]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cotangent: np.ndarray | None = field(default=None, repr=False)

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.inputs), default=float("nan"))

    @property
    def max_rel_err(self) -> float:
        return max((c.max_rel_err for c in self.inputs), default=float("nan"))

    def __str__(self) -> str:
        rule = ("an entry fails when |analytic - numeric| > atol * max(1, max|numeric|) + "
                "rtol * |numeric|" if self.mode == "full" else
                "direction v (unit norm) fails when |<analytic, v> - numeric| > atol * "
                "max(1, rms(analytic)) + rtol * |numeric|")
        lines = [f"{self.kind} {self.name}: {'passed' if self.passed else 'FAILED'}",
                 f"  mode {self.mode}; analytic gradient in the input's dtype, finite differences "
                 f"in {self.fd_dtype} (eps {self.eps:.0e}); {rule}; atol {self.atol:.0e}, "
                 f"rtol {self.rtol:.0e}",
                 format_table(_HEADER, [c.row(self.mode) for c in self.inputs])]
        lines += [f"  {c.name}: {c.note}" for c in self.inputs if c.note]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class AdjointCheck:
    """The dot-product test for one input: ``lhs = <u, f(x) - f(x_k = 0)>``, ``rhs = <g_k, x_k>``."""

    name: str
    passed: bool
    lhs: float = float("nan")
    rhs: float = float("nan")
    abs_err: float = float("nan")
    rel_err: float = float("nan")
    note: str = ""

    def row(self) -> list[str]:
        return [self.name, _g(self.lhs), _g(self.rhs), _e(self.abs_err), _e(self.rel_err),
                "ok" if self.passed else "FAIL"]


@dataclass
class AdjointReport(_Verdict):
    """What :func:`check_adjoint` found; ``str``, ``passed``, ``report[name]`` and
    ``raise_if_failed`` as for :class:`GradcheckReport`."""

    name: str
    rtol: float
    inputs: list[AdjointCheck]
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"check_adjoint {self.name}: {'passed' if self.passed else 'FAILED'}",
                 f"  <u, f(x) - f(x with the input zeroed)> against <backward(u)[input], input>; "
                 f"rel err = |lhs - rhs| / (sum|u (f(x) - f(0))| + sum|g x|), rtol {self.rtol:.0e}",
                 format_table(["input", "lhs", "rhs", "abs err", "rel err", "result"],
                              [c.row() for c in self.inputs])]
        lines += [f"  {c.name}: {c.note}" for c in self.inputs if c.note]
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


# ------------------------------------------------------------------------------ array helpers

def _is_float_array(v: Any) -> bool:
    return is_array_api_obj(v) and array_namespace(v).isdtype(v.dtype, "real floating")


def _bits(a: Any) -> int:
    return int(array_namespace(a).finfo(a.dtype).bits)


def _dtype_name(a: Any) -> str:
    return str(a.dtype).rsplit(".", 1)[-1]


def _like(values: np.ndarray, ref: Any, bits: int) -> Any:
    """``values`` as an array of ``ref``'s library and device, in float``bits``."""
    xp = array_namespace(ref)
    return xp.asarray(values, dtype=getattr(xp, f"float{bits}"), device=device(ref))


def _host64(a: Any) -> np.ndarray:
    """A float64 NumPy copy of any array."""
    return np.array(to_numpy(a), dtype=np.float64, copy=True)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and entries, NaN equal to NaN."""
    if a.shape != b.shape:
        return False
    if np.issubdtype(a.dtype, np.inexact):
        return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
    return bool(np.all(a == b))


def _rng(rng: Any) -> np.random.Generator:
    """``None`` is seed 0 (a check reproduces); an int is a seed; a Generator is used as is."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)


def _cotangent(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws: never all ones, so a permuted or summed output cannot hide."""
    return np.asarray(rng.standard_normal(shape), dtype=np.float64)


def _pairing(u64: np.ndarray, y: Any) -> float:
    """``<u, y>`` in float64."""
    return float(np.sum(u64 * to_numpy(y).astype(np.float64)))


def _tolerances(analytic_bits: int, fd_bits: int, eps: float | None, atol: float | None,
                rtol: float | None) -> tuple[float, float, float]:
    default_atol, default_rtol = (TOLERANCES[64 if analytic_bits >= 64 else 32] if fd_bits >= 64
                                  else FD32_TOLERANCES)
    return (STEPS[64 if fd_bits >= 64 else 32] if eps is None else float(eps),
            default_atol if atol is None else float(atol),
            default_rtol if rtol is None else float(rtol))


# ------------------------------------------------------------------------- inputs of a forward

@dataclass
class _Slot:
    """One differentiable input: a parameter of the forward, or an entry of a dict parameter."""

    label: str
    param: str
    key: Any
    value: Any
    position: int


def _slots(op: str, sig: inspect.Signature, bound: inspect.BoundArguments,
           inputs: Iterable[str] | str | None) -> list[_Slot]:
    names = list(sig.parameters)
    found: list[_Slot] = []
    for name, value in bound.arguments.items():
        position = names.index(name)
        if _is_float_array(value):
            found.append(_Slot(name, name, None, value, position))
        elif isinstance(value, Mapping):
            found += [_Slot(f"{name}[{k!r}]", name, k, v, position)
                      for k, v in value.items() if _is_float_array(v)]
    if inputs is not None:
        wanted = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        labels = [s.label for s in found] + sorted({s.param for s in found if s.key is not None})
        for w in wanted:
            if w not in labels:
                raise argument_error(op, "inputs", f"names of floating-array inputs ({', '.join(labels)})",
                                     repr(w))
        found = [s for s in found if s.label in wanted or s.param in wanted]
    if not found:
        raise argument_error(op, "args", "at least one floating-point array argument to check",
                             "none", TypeError)
    return found


def _call(forward: Callable[..., Any], sig: inspect.Signature, bound: inspect.BoundArguments,
          slots: list[_Slot], values: Mapping[str, Any]) -> Any:
    """Call ``forward`` with the slots named in ``values`` replaced; return its output ``y``."""
    arguments = dict(bound.arguments)
    for s in slots:
        if s.label in values:
            if s.key is None:
                arguments[s.param] = values[s.label]
            else:
                arguments[s.param] = {**arguments[s.param], s.key: values[s.label]}
    call = sig.bind_partial()
    call.arguments.update(arguments)
    return forward(*call.args, **call.kwargs)[0]


def _aligned(result: Any, slot: _Slot) -> tuple[np.ndarray | None, str, bool]:
    """The gradient the backward returned for ``slot``: (float64 NumPy copy or ``None``, a note,
    whether it may pass).

    ``None`` (or a tuple too short to reach the slot) claims that the output does not depend on
    the input: it is compared as zeros, so it passes exactly when the numeric gradient is zero
    (batch norm's running statistics in training mode) and fails otherwise.
    """
    grads = list(result) if isinstance(result, (tuple, list)) else [result]
    g = grads[slot.position] if slot.position < len(grads) else None
    where = f"position {slot.position} of the backward's result"
    if slot.key is not None and g is not None:
        if not isinstance(g, Mapping):
            return None, f"expected a dict of gradients at {where}, got {type(g).__name__}", False
        g, where = g.get(slot.key), f"key {slot.key!r} at {where}"
    if g is None:
        return np.zeros(tuple(slot.value.shape)), f"no gradient returned ({where}): compared with zero", True
    if not is_array_api_obj(g):
        return None, f"the backward returned a {type(g).__name__} ({where}), not an array", False
    if tuple(g.shape) != tuple(slot.value.shape):
        return None, f"gradient of shape {tuple(g.shape)}, expected {tuple(slot.value.shape)}", False
    if _dtype_name(g) != _dtype_name(slot.value):
        return _host64(g), (f"gradient of dtype {_dtype_name(g)}, expected "
                            f"{_dtype_name(slot.value)} (the input's)"), False
    return _host64(g), "", True


def call_args(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The same call with every argument that can be positional made positional.

    For forwards whose own parameters share a name with a checker option (``mode`` of
    ``interpolate``, ``eps`` of ``batch_norm2d``): ``a, k = call_args(f, x, mode="bilinear")``,
    then ``check_op(f, b, *a, **k)`` leaves no such name among the keywords.  Defaults are
    filled in; keyword-only parameters stay keywords.
    """
    bound = inspect.signature(forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.args, bound.kwargs


# ---------------------------------------------------------------------------- the comparison

def _compare(label: str, shape: tuple[int, ...], dtype: str, analytic: np.ndarray,
             numeric: np.ndarray, atol_eff: float, rtol: float, note: str, ok: bool,
             unravel: bool) -> InputCheck:
    """Entry-wise comparison; ``unravel`` gives the worst entry as a multi-index."""
    err = np.abs(analytic - numeric)
    tol = atol_eff + rtol * np.abs(numeric)
    out = ~(err <= tol)  # NaN counts as out of tolerance
    n = int(err.size)
    if n == 0:
        return InputCheck(label, shape, dtype, ok, 0.0, 0.0, note=note or "empty: nothing to compare")
    ratio = np.where(np.isnan(err) | np.isnan(tol), np.inf, err / tol).reshape(-1)
    k = int(np.argmax(ratio))
    rel = err / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), atol_eff)
    worst = tuple(int(i) for i in np.unravel_index(k, analytic.shape)) if unravel else k
    return InputCheck(label, shape, dtype, ok and not out.any(), float(np.max(err)),
                      float(np.max(rel)), worst, float(analytic.reshape(-1)[k]),
                      float(numeric.reshape(-1)[k]), int(out.sum()), n, analytic, numeric,
                      atol_eff, note)


def _numeric_full(objective: Callable[[dict[str, np.ndarray]], float], label: str,
                  base: np.ndarray, eps: float) -> np.ndarray:
    """Central differences entry by entry; ``base`` is in the dtype the forward runs in, and the
    step is measured after rounding to it."""
    x = base.copy()
    flat = x.reshape(-1)
    out = np.empty(x.size)
    for i in range(x.size):
        old = flat[i]
        flat[i] = old + eps
        hi, f_hi = float(flat[i]), objective({label: x})
        flat[i] = old - eps
        lo, f_lo = float(flat[i]), objective({label: x})
        flat[i] = old
        out[i] = (f_hi - f_lo) / (hi - lo)
    return out.reshape(x.shape)


def _numeric_directional(objective: Callable[[dict[str, np.ndarray]], float], label: str,
                         base: np.ndarray, eps: float,
                         directions: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Central differences along each unit direction; returns them and the directions as the
    forward really saw them (after rounding ``base +- eps v`` to its dtype)."""
    numeric, seen = [], []
    x64 = base.astype(np.float64)
    for v in directions:
        hi = (x64 + eps * v).astype(base.dtype)
        lo = (x64 - eps * v).astype(base.dtype)
        numeric.append((objective({label: hi}) - objective({label: lo})) / (2 * eps))
        seen.append((hi.astype(np.float64) - lo.astype(np.float64)) / (2 * eps))
    return np.asarray(numeric), seen


def _check_slots(targets: list[tuple[str, tuple[int, ...], str, np.ndarray | None, str, bool]],
                 objective: Callable[[dict[str, np.ndarray]], float], base: dict[str, np.ndarray],
                 mode: str, eps: float, atol: float, rtol: float, n_directions: int,
                 rng: np.random.Generator) -> list[InputCheck]:
    """Compare each target's analytic gradient (float64 NumPy, or ``None``) with the numeric one.

    ``targets``: (label, shape, dtype, analytic, note, ok) with the last three from
    :func:`_aligned`; ``base``: label -> the point, in the dtype the forward is evaluated in.
    """
    checks = []
    for label, shape, dtype, analytic, note, ok in targets:
        if analytic is None:
            checks.append(InputCheck(label, shape, dtype, False, note=note))
            continue
        if mode == "full":
            numeric = _numeric_full(objective, label, base[label], eps)
            scale = float(np.max(np.abs(numeric), initial=0.0))
            checks.append(_compare(label, shape, dtype, analytic, numeric,
                                   atol * max(1.0, scale if np.isfinite(scale) else 1.0), rtol,
                                   note, ok, unravel=True))
            continue
        directions = []
        for _ in range(n_directions):
            v = rng.standard_normal(shape)
            directions.append(v / max(float(np.linalg.norm(v)), 1e-300))
        numeric, seen = _numeric_directional(objective, label, base[label], eps, directions)
        projected = np.asarray([np.sum(analytic * v) for v in seen])
        rms = float(np.sqrt(np.mean(analytic ** 2))) if analytic.size else 0.0
        checks.append(_compare(label, shape, dtype, projected, numeric,
                               atol * max(1.0, rms if np.isfinite(rms) else 1.0), rtol, note,
                               ok, unravel=False))
    return checks


def _alignment_notes(result: Any, slots: list[_Slot], sig: inspect.Signature) -> list[str]:
    """A hint when the backward's result cannot reach every checked input's position."""
    n = len(result) if isinstance(result, (tuple, list)) else 1
    reach = max(s.position for s in slots) + 1
    if n >= reach:
        return []
    params = ", ".join(list(sig.parameters)[:reach])
    return [f"the backward returned {n} gradient(s) but the checked inputs reach position "
            f"{reach - 1} of ({params}): its result must be aligned with the forward's parameters "
            f"in signature order, None where a parameter has no gradient"]


def _check_mode(op: str, mode: str, n_directions: int, forward: Any = None) -> None:
    if mode not in MODES:
        hint = ""
        if forward is not None and "mode" in inspect.signature(forward).parameters:
            hint = (f" ({_op_name(forward)} has its own 'mode': pass it positionally, "
                    f"e.g. a, k = call_args(forward, *args, **kwargs); check_op(forward, "
                    f"backward, *a, **k))")
        raise argument_error(op, "mode", "'full' or 'directional'", repr(mode) + hint)
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise argument_error(op, "n_directions", "an int >= 1", repr(n_directions))


def _op_name(forward: Callable[..., Any]) -> str:
    name = getattr(forward, "__name__", type(forward).__name__)
    return name[: -len("_forward")] if name.endswith("_forward") else name


def _snapshots(arguments: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """NumPy copies of every array argument (and dict entry), to detect a modified input."""
    out = {}
    for name, value in arguments.items():
        if is_array_api_obj(value):
            out[name] = np.array(to_numpy(value), copy=True)
        elif isinstance(value, Mapping):
            out.update({f"{name}[{k!r}]": np.array(to_numpy(v), copy=True)
                        for k, v in value.items() if is_array_api_obj(v)})
    return out


def _modified(before: dict[str, np.ndarray], arguments: Mapping[str, Any], who: str) -> list[str]:
    return [f"{who} modified its input '{name}'" for name, now in _snapshots(arguments).items()
            if name in before and not _same(before[name], now)]


# ------------------------------------------------------------------------- the analytic side

def _bind(op: str, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
          inputs: Iterable[str] | str | None) -> tuple[inspect.Signature, inspect.BoundArguments, list[_Slot]]:
    sig = inspect.signature(forward)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise argument_error(op, "args", f"arguments accepted by {_op_name(forward)}{sig}",
                             str(exc), TypeError) from None
    return sig, bound, _slots(op, sig, bound, inputs)


def _pull_back(op: str, name: str, y: Any, rng: np.random.Generator,
               backward: Callable[[Any], Any]) -> tuple[np.ndarray, Any, list[str]]:
    """Draw the cotangent ``u`` for output ``y``, run ``backward(u)``; return ``u`` (float64
    NumPy), the backward's result, and a problem if it modified ``u``."""
    if not _is_float_array(y):
        raise argument_error(op, "forward", "a forward whose output is a floating array",
                             type(y).__name__, TypeError)
    u64 = _cotangent(rng, tuple(y.shape))
    u = _like(u64, y, _bits(y))
    u_before = np.array(to_numpy(u), copy=True)
    result = backward(u)
    return u64, result, [] if _same(u_before, to_numpy(u)) else [f"{name} backward modified dy"]


def _op_pull_back(op: str, name: str, forward: Callable[..., Any], backward: Callable[..., Any],
                  bound: inspect.BoundArguments, rng: np.random.Generator) -> tuple[Any, np.ndarray, Any, list[str]]:
    """One forward and one backward of a pure pair, in the caller's dtype; also reports a
    modified input."""
    before = _snapshots(bound.arguments)
    y, cache = forward(*bound.args, **bound.kwargs)
    u64, result, problems = _pull_back(op, name, y, rng, lambda u: backward(u, cache))
    return y, u64, result, _modified(before, bound.arguments, f"{name} (forward or backward)") + problems


# ------------------------------------------------------------------------------------ check_op

def check_op(forward: Callable[..., Any], backward: Callable[..., Any], *args: Any,
             mode: str = "full", inputs: Iterable[str] | str | None = None, rng: Any = None,
             eps: float | None = None, atol: float | None = None, rtol: float | None = None,
             n_directions: int = 3, **kwargs: Any) -> GradcheckReport:
    """Check ``backward`` against central differences of ``forward``.

    Parameters
    ----------
    forward : callable
        ``forward(*args, **kwargs) -> (y, cache)``, ``y`` a floating array.
    backward : callable
        ``backward(dy, cache)``: the bare gradient of the first parameter, or a tuple aligned
        with the forward's parameters in signature order (``None`` where there is none).  A
        parameter that is a dict of arrays (a block's ``params``) gets a dict of gradients.
    *args, **kwargs
        The forward's arguments.  Floating arrays (and floating arrays in dict arguments) are
        the differentiable inputs.  Keyword arguments named like this function's own options
        (``mode``, ``eps``, ...) go to the checker: pass such forward arguments positionally.
    mode : {"full", "directional"}
        Every entry, or ``n_directions`` random unit directions per input.
    inputs : str or iterable of str, optional
        Check only these inputs (parameter names, or ``"params['key']"`` for dict entries).
    rng : numpy.random.Generator or int, optional
        Draws the cotangent and the directions; ``None`` means seed 0.
    eps, atol, rtol : float, optional
        Step and tolerances; defaults by dtype in :data:`STEPS` and :data:`TOLERANCES`.
    n_directions : int
        Directions per input in directional mode.

    Returns
    -------
    GradcheckReport
        Per input: max absolute and relative error, the worst entry with both values there,
        the fraction out of tolerance, pass or fail.  Also fails when the forward or backward
        modified its inputs or ``dy``, or a gradient has the wrong shape or dtype.
    """
    op = "check_op"
    _check_mode(op, mode, n_directions, forward)
    rng = _rng(rng)
    name = _op_name(forward)
    sig, bound, slots = _bind(op, forward, args, kwargs, inputs)

    # The analytic gradient, in the caller's dtype and library.
    y, u64, result, problems = _op_pull_back(op, name, forward, backward, bound, rng)
    targets = [(s.label, tuple(s.value.shape), _dtype_name(s.value), *_aligned(result, s))
               for s in slots]

    # Finite differences in float64: every floating input re-made in float64.
    every = _slots(op, sig, bound, None)
    base = {s.label: _host64(s.value) for s in every}
    fixed = {s.label: _like(base[s.label], s.value, 64) for s in every}
    by_label = {s.label: s for s in every}

    def objective(values: dict[str, np.ndarray]) -> float:
        swapped = {k: _like(v, by_label[k].value, 64) for k, v in values.items()}
        return _pairing(u64, _call(forward, sig, bound, every, {**fixed, **swapped}))

    y64 = _call(forward, sig, bound, every, fixed)
    notes = _alignment_notes(result, slots, sig)
    if _bits(y64) < 64:
        notes.append(f"the float64 re-run returned {_dtype_name(y64)}: the finite differences "
                     f"are no more accurate than that")
    eps_, atol_, rtol_ = _tolerances(min(_bits(s.value) for s in slots), 64, eps, atol, rtol)
    checks = _check_slots(targets, objective, base, mode, eps_, atol_, rtol_, n_directions, rng)
    return GradcheckReport(name, "check_op", mode, ", ".join(sorted({c.dtype for c in checks})),
                           "float64", eps_, atol_, rtol_, checks, problems, notes, u64)


# ------------------------------------------------------------------------------- check_adjoint

def check_adjoint(forward: Callable[..., Any], backward: Callable[..., Any], *args: Any,
                  inputs: Iterable[str] | str | None = None, rng: Any = None,
                  rtol: float | None = None, **kwargs: Any) -> AdjointReport:
    """The dot-product test, for an op linear or affine in each checked input.

    For each input ``x_k``: ``<u, f(x) - f(x with x_k = 0)> == <backward(u)[k], x_k>`` up to
    ``rtol * (sum|u (f(x) - f(0))| + sum|g_k x_k|)``.  Exact (no step), cheap at any size, and
    run in the caller's dtype.  Arguments as for :func:`check_op`; ``rtol`` defaults by dtype
    in :data:`ADJOINT_RTOL`.
    """
    op = "check_adjoint"
    rng = _rng(rng)
    name = _op_name(forward)
    sig, bound, slots = _bind(op, forward, args, kwargs, inputs)
    y, u64, result, problems = _op_pull_back(op, name, forward, backward, bound, rng)
    y_host = _host64(y)
    rtol_ = ADJOINT_RTOL[64 if min(_bits(s.value) for s in slots) >= 64 else 32] if rtol is None else float(rtol)
    checks = []
    for s in slots:
        g64, note, ok = _aligned(result, s)
        if g64 is None:
            checks.append(AdjointCheck(s.label, False, note=note))
            continue
        zero = array_namespace(s.value).zeros_like(s.value)
        diff = y_host - _host64(_call(forward, sig, bound, slots, {s.label: zero}))
        x64 = _host64(s.value)
        lhs, rhs = float(np.sum(u64 * diff)), float(np.sum(g64 * x64))
        scale = float(np.sum(np.abs(u64 * diff)) + np.sum(np.abs(g64 * x64)))
        err = abs(lhs - rhs)
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        checks.append(AdjointCheck(s.label, ok and rel <= rtol_, lhs, rhs, err, rel, note))
    return AdjointReport(name, rtol_, checks, problems)


# -------------------------------------------------------------------------------- check_module

def _module_copy(module: Any) -> Any:
    """A deep copy to perturb, or the module itself when it cannot be copied."""
    try:
        return copy.deepcopy(module)
    except Exception:  # a module holding something uncopyable: work on it and restore it
        return module


def check_module(module: Any, x: Any, mode: str = "full", rng: Any = None,
                 eps: float | None = None, atol: float | None = None, rtol: float | None = None,
                 n_directions: int = 3, inputs: Iterable[str] | str | None = None) -> GradcheckReport:
    """Check a stateful module's ``backward`` for its input and every floating parameter.

    The module protocol: ``module.params`` (a live mapping name -> array; assigning an entry
    replaces that parameter), ``module.forward(x) -> y``, ``module.backward(dy) -> dx``, which
    fills ``module.grads`` (same keys), and ``module.zero_grad()``.

    The analytic gradients come from one ``zero_grad``, ``forward``, ``backward`` on a deep copy
    of the module, in its own dtype.  The finite differences perturb the entries of another
    copy's ``params``, turned to float64 together with ``x``; a module that does not compute in
    float64 that way is differenced in its own dtype with looser tolerances
    (:data:`FD32_TOLERANCES`), and the report says so.  The caller's module is left as it was
    (when it cannot be deep-copied, it is used and its params and grads restored exactly).

    Parameters
    ----------
    module : module object
    x : floating array
        The input.
    mode, rng, eps, atol, rtol, n_directions
        As for :func:`check_op`.
    inputs : str or iterable of str, optional
        Check only these: ``"x"`` and parameter names.
    """
    op = "check_module"
    _check_mode(op, mode, n_directions)
    rng = _rng(rng)
    if not _is_float_array(x):
        raise argument_error(op, "x", "a floating-point array", type(x).__name__, TypeError)
    name = type(module).__name__
    keys = [k for k, v in module.params.items() if _is_float_array(v)]
    originals = {"x": x, **{k: module.params[k] for k in keys}}
    wanted = list(originals)
    if inputs is not None:
        wanted = [inputs] if isinstance(inputs, str) else list(inputs)
        for w in wanted:
            if w not in originals:
                raise argument_error(op, "inputs", f"'x' or parameter names ({', '.join(keys)})", repr(w))
    saved_params = dict(originals)
    saved_grads = {k: array_namespace(g).asarray(g, copy=True) for k, g in module.grads.items()}
    x_before = np.array(to_numpy(x), copy=True)
    work = _module_copy(module)
    try:
        # The analytic gradients, in the module's dtype.
        work.zero_grad()
        u64, dx, problems = _pull_back(op, name, work.forward(x), rng, work.backward)
        if not _same(x_before, to_numpy(x)):
            problems.append(f"{name} modified its input 'x'")
        found = {"x": dx, **{k: work.grads[k] for k in keys}}
        targets = []
        for label in [w for w in originals if w in wanted]:
            ref = originals[label]
            targets.append((label, tuple(ref.shape), _dtype_name(ref),
                            *_aligned((found[label],), _Slot(label, label, None, ref, 0))))

        # Finite differences: float64 if the module computes in it when given float64 arrays.
        fd = _module_copy(module) if work is not module else module
        notes: list[str] = []
        bits = 64
        try:
            y64 = _module_eval(fd, originals, {}, 64)
            if _bits(y64) < 64:
                raise TypeError(f"its output stayed {_dtype_name(y64)}")
        except Exception as exc:  # any failure of the float64 re-run: fall back, and say so
            bits = _bits(x)
            notes.append(f"{name} does not compute in float64 when its params and input are "
                         f"replaced by float64 arrays ({type(exc).__name__}: {exc}); finite "
                         f"differences taken in {_dtype_name(x)} with looser tolerances")
        dtype = np.float64 if bits >= 64 else np.float32
        base = {k: _host64(v).astype(dtype) for k, v in originals.items()}

        def objective(values: dict[str, np.ndarray]) -> float:
            return _pairing(u64, _module_eval(fd, originals, {**base, **values}, bits))

        eps_, atol_, rtol_ = _tolerances(min(_bits(originals[w]) for w in wanted), bits, eps, atol, rtol)
        checks = _check_slots(targets, objective, base, mode, eps_, atol_, rtol_, n_directions, rng)
    finally:
        if work is module:
            for k in keys:
                module.params[k] = saved_params[k]
            for k, g in saved_grads.items():
                module.grads[k] = g
    return GradcheckReport(name, "check_module", mode, ", ".join(sorted({c.dtype for c in checks})),
                           "float64" if bits >= 64 else _dtype_name(x), eps_, atol_, rtol_, checks,
                           problems, notes, u64)


def _module_eval(module: Any, originals: dict[str, Any], values: dict[str, np.ndarray],
                 bits: int) -> Any:
    """``module.forward`` with its params and ``x`` replaced by ``values`` (NumPy) in float``bits``;
    entries absent from ``values`` are the originals cast to float``bits``."""
    made = {k: _like(values[k] if k in values else _host64(v), v, bits) for k, v in originals.items()}
    for k, v in made.items():
        if k != "x":
            module.params[k] = v
    return module.forward(made["x"])
