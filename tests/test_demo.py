"""The demo: the whole network's gradients (attention loss included), a loss that falls, the CLI."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from npattn import demo
from npattn.data import box_masks, make_dataset
from npattn.demo import DemoNet, Objective, attention_scores
from npattn.gradcheck import check_module
from npattn.optim import Adam


def small_objective(backend, weight, cbam=True, n=2, size=8, seed=0):
    """A float64 objective on ``n`` random ``size`` x ``size`` images, labels and box masks set."""
    rng = np.random.default_rng(seed)
    net = DemoNet(cbam=cbam, seed=seed, dtype="float64").to(backend.xp)
    objective = Objective(net, weight)
    objective.labels = backend.asarray(rng.integers(0, 4, n))
    masks = np.zeros((n, 1, size // 4, size // 4))
    masks[:, :, 0, 1] = 1.0
    objective.masks = backend.asarray(masks)
    return objective, backend.asarray(rng.standard_normal((n, 3, size, size)))


# ------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_whole_network_gradients(backend, weight):
    """Every parameter and the input, through CE and (weight 1) the map's BCE, by directions."""
    objective, x = small_objective(backend, weight)
    report = check_module(objective, x, mode="directional", rng=np.random.default_rng(1))
    report.raise_if_failed()
    assert len(objective.params) == 11      # 3 convs and a linear, weight and bias; CBAM 3


def test_map_loss_gradient_in_more_directions(backend):
    """The spatial kernel and x, which the map's own loss path reaches, along ten directions."""
    objective, x = small_objective(backend, 1.0, seed=5)
    check_module(objective, x, mode="directional", n_directions=10,
                 inputs=["x", "net.cbam.sa.conv.weight"],
                 rng=np.random.default_rng(3)).raise_if_failed()


def test_attention_loss_gradient_reaches_features_and_cbam(backend):
    """The map's loss changes the gradients of the CBAM weights and the features, not the head."""
    grads = {}
    for weight in (0.0, 1.0):
        objective, x = small_objective(backend, weight)
        objective.forward(x)
        objective.backward(backend.asarray(np.asarray(1.0)))
        grads[weight] = {k: backend.to_numpy(v) for k, v in objective.grads.items()}
    changed = {k for k in grads[0.0] if not np.allclose(grads[0.0][k], grads[1.0][k])}
    assert "net.cbam.sa.conv.weight" in changed and "net.features.0.weight" in changed
    assert not any(k.startswith("net.head") for k in changed)


def test_plain_net_gradients(backend):
    objective, x = small_objective(backend, 1.0, cbam=False)   # no map: the weight is unused
    check_module(objective, x, mode="directional", rng=np.random.default_rng(2)).raise_if_failed()


# -------------------------------------------------------------------------------- training

def test_a_few_steps_lower_the_loss(backend):
    """Eight Adam steps on one batch lower both terms of the loss (weights of one seed)."""
    ds = make_dataset(16, 0, size=16)
    net = DemoNet(seed=0).to(backend.xp)
    objective = Objective(net, 1.0)
    objective.labels = backend.asarray(ds.labels)
    objective.masks = backend.asarray(box_masks(ds.boxes, 16, 4))
    opt = Adam(objective, lr=1e-2)
    x, one = backend.asarray(ds.images), backend.asarray(np.float32(1.0))
    parts = []
    for _ in range(8):
        opt.zero_grad()
        loss = objective.forward(x)
        parts.append([float(loss)] + [float(p) for p in objective.parts])
        objective.backward(one)
        opt.step()
    first, last = parts[0], parts[-1]
    assert last[0] < 0.93 * first[0] and last[1] < first[1] and last[2] < first[2], parts
    assert net.params["features.0.weight"].dtype == backend.dtype("float32")


def test_same_seed_same_nets_and_shared_start():
    a, b, plain = DemoNet(seed=3), DemoNet(seed=3), DemoNet(cbam=False, seed=3)
    for name, p in a.params.items():
        np.testing.assert_array_equal(p, b.params[name])
        if not name.startswith("cbam"):
            np.testing.assert_array_equal(p, plain.params[name])


# ---------------------------------------------------------------------------------- scores

def test_attention_scores_by_hand():
    masks = np.zeros((2, 1, 2, 2))
    masks[:, 0, 0, 0] = 1.0
    maps = np.array([[[[0.8, 0.2], [0.2, 0.2]]], [[[0.1, 0.1], [0.4, 0.1]]]])
    s = attention_scores(maps, masks)
    np.testing.assert_allclose(s["lift"], [4.0, 0.5])
    np.testing.assert_array_equal(s["hit"], [True, False])
    np.testing.assert_allclose(s["chance"], [0.25, 0.25])
    tie = attention_scores(np.full((1, 1, 2, 2), 0.5), masks[:1])      # first maximum: cell 0
    assert tie["hit"][0] and tie["lift"][0] == 1.0


# -------------------------------------------------------------------------- command line

TINY = ["--epochs", "1", "--train-size", "24", "--test-size", "8", "--batch-size", "8"]


def test_cli_tiny_run_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert demo.main(TINY + ["--out", str(out), "--attention-loss", "0.5",
                             "--attention-warmup", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_accuracy_cbam", "test_accuracy_plain", "lift_median", "pointing",
                "attention_loss", "epochs", "seed", "seconds"):
        assert key in summary
    assert summary["attention_loss"] == 0.5 and summary["epochs"] == 1
    assert summary["history"]["cbam"][0]["weight"] == 0.5
    assert summary["history"]["cbam"][0]["bce"] > 0.0
    assert 0.0 <= summary["test_accuracy_plain"] <= 1.0
    text = capsys.readouterr().out
    assert "SUPERVISED" in text and "epoch  1/1" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install" in text and not (out / "attention.png").exists()
    else:
        assert (out / "attention.png").stat().st_size > 0


def test_cli_without_matplotlib_says_how_to_get_the_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib -> ImportError
    assert demo.main(TINY + ["--out", str(tmp_path), "--no-baseline"]) == 0
    assert (tmp_path / "summary.json").exists() and not (tmp_path / "attention.png").exists()
    assert "pip install 'npattn[viz]'" in capsys.readouterr().out


def test_cli_same_seed_same_numbers_and_no_baseline(tmp_path):
    runs = []
    for name in ("a", "b"):
        assert demo.main(TINY + ["--out", str(tmp_path / name), "--no-baseline", "--seed", "4"]) == 0
        runs.append(json.loads((tmp_path / name / "summary.json").read_text()))
    assert runs[0]["test_accuracy_plain"] is None
    for key in ("test_accuracy_cbam", "lift_median", "pointing"):
        assert runs[0][key] == runs[1][key]
    assert runs[0]["history"]["cbam"][0]["loss"] == runs[1]["history"]["cbam"][0]["loss"]


def test_cli_array_api_strict_tiny(tmp_path):
    args = ["--epochs", "1", "--train-size", "8", "--test-size", "4", "--batch-size", "8"]
    assert demo.main(args + ["--backend", "array_api_strict", "--no-baseline",
                             "--out", str(tmp_path)]) == 0
    assert (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--backend", "torch"], "unknown backend 'torch'"),
    (["--epochs", "0"], "expected an int >= 1, got 0"),
    (["--attention-loss", "-1"], "expected a finite number >= 0"),
    (["--attention-loss", "nan"], "expected a finite number >= 0"),
    (["--attention-warmup", "-1"], "expected an int >= 0, got -1"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, args, message):
    assert demo.main(args + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_cli_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert demo.main(TINY + ["--out", os.path.join(str(blocker), "out")]) == 2
    assert "cannot write to --out" in capsys.readouterr().err
