"""``python -m npattn check``, run in-process: the table, the exit status, selection by name and
family, dtypes, backends, blocks, and the refusals of bad options."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from npattn import check_all, cli
from npattn.backend import cupy_available
from npattn.layers import Linear
from npattn.ops import REGISTRY, OpSpec
from npattn.ops.activation import sigmoid_backward, sigmoid_forward


def rows(text):
    """Table rows by name: the columns after the name."""
    return {line.split()[0]: line.split()[1:] for line in text.splitlines()
            if len(line.split()) == 6 and line.split()[4] in ("pass", "FAIL", "ERROR")}


def test_selected_ops_pass(capsys):
    assert check_all.main(["--ops", "relu", "softmax"]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert set(table) == {"relu", "softmax"}
    assert table["relu"][0] == "activation" and table["relu"][3] == "pass"
    assert "2 passed, 0 failed" in out


def test_a_family_selects_its_ops(capsys):
    assert check_all.main(["--ops", "activation", "--mode", "directional"]) == 0
    names = set(rows(capsys.readouterr().out))
    assert names == {n for n, s in REGISTRY.items() if s.family == "activation"}


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_backends_and_dtypes(capsys, backend, dtype):
    argv = ["--ops", "sigmoid", "mul", "--backend", backend, "--dtype", dtype, "--seed", "3"]
    assert check_all.main(argv) == 0
    out = capsys.readouterr().out
    assert f"backend {backend}, dtype {dtype}" in out and set(rows(out)) == {"sigmoid", "mul"}


def test_every_registered_op_and_block_passes(capsys):
    assert check_all.main(["--mode", "directional"]) == 0
    table = rows(capsys.readouterr().out)
    assert set(REGISTRY) <= set(table)
    assert set(check_all._blocks()) <= set(table)


def test_same_seed_same_numbers(capsys):
    check_all.main(["--ops", "conv2d", "--seed", "5"])
    first = rows(capsys.readouterr().out)["conv2d"][1:3]
    check_all.main(["--ops", "conv2d", "--seed", "5"])
    assert rows(capsys.readouterr().out)["conv2d"][1:3] == first


def test_a_wrong_backward_fails_with_its_report(capsys, monkeypatch):
    def wrong_backward(dy, cache):
        return 2.0 * sigmoid_backward(dy, cache)

    monkeypatch.setitem(REGISTRY, "bad_sigmoid", OpSpec(
        "bad_sigmoid", sigmoid_forward, wrong_backward, REGISTRY["sigmoid"].example,
        "activation", "ops/activation.md"))
    assert check_all.main(["--ops", "bad_sigmoid", "relu"]) == 1
    out = capsys.readouterr().out
    assert rows(out)["bad_sigmoid"][3] == "FAIL" and rows(out)["relu"][3] == "pass"
    assert "check_op sigmoid: FAILED" in out and "1 passed, 1 failed" in out


def test_a_crashing_op_is_an_error_row(capsys, monkeypatch):
    def crash(x):
        raise RuntimeError("boom")

    monkeypatch.setitem(REGISTRY, "crash", OpSpec(
        "crash", crash, crash, REGISTRY["relu"].example, "activation", "ops/activation.md"))
    assert check_all.main(["--ops", "crash"]) == 1
    out = capsys.readouterr().out
    assert rows(out)["crash"][3] == "ERROR" and "RuntimeError: boom" in out


def test_blocks_are_checked_as_modules(capsys, monkeypatch):
    spec = SimpleNamespace(make=lambda rng: Linear(3, 2, rng=rng, dtype="float64"),
                           example=lambda rng: rng.standard_normal((2, 3)))
    monkeypatch.setattr(check_all, "_blocks", lambda: {"ToyLinear": spec})
    argv = ["--ops", "ToyLinear", "--backend", "array_api_strict", "--dtype", "float32"]
    assert check_all.main(argv) == 0
    assert rows(capsys.readouterr().out)["ToyLinear"][:1] == ["block"]


def test_through_the_dispatcher(capsys):
    assert cli.main(["check", "--ops", "relu"]) == 0
    assert "relu" in rows(capsys.readouterr().out)


@pytest.mark.parametrize("argv, message", [
    (["--ops", "no_such_op"], "unknown op, block or family: no_such_op"),
    (["--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--mode", "half"], "invalid choice: 'half'"),
    (["--seed", "x"], "invalid int value"),
])
def test_bad_options_exit_2_with_a_message(capsys, argv, message):
    assert check_all.main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_name_lists_the_known_ones(capsys):
    assert check_all.main(["--ops", "relu", "convv2d"]) == 2
    err = capsys.readouterr().err
    assert "convv2d" in err and "conv2d" in err and "families:" in err


@pytest.mark.skipif(cupy_available()[0], reason="CuPy and a GPU are present here")
def test_cupy_without_a_gpu_exits_2(capsys):
    assert check_all.main(["--backend", "cupy", "--ops", "relu"]) == 2
    assert "backend 'cupy' cannot run here" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert check_all.main(["--help"]) == 0
    assert "--backend" in capsys.readouterr().out


def test_convert_keeps_ints_and_structure():
    import array_api_strict as xp
    value = ((np.ones((2, 2)), (2, 3), np.arange(3)), {"w": np.zeros(2), "axis": 1})
    (a, pair, idx), kw = check_all.convert(value, xp, "float32")
    assert a.dtype == xp.float32 and pair == (2, 3) and idx.dtype == xp.int64
    assert kw["w"].dtype == xp.float32 and kw["axis"] == 1
