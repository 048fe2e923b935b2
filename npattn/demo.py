"""``python -m npattn demo``: train a small CNN with and without CBAM, on npattn's own gradients.

Both nets learn the synthetic task of :mod:`npattn.data` (name the colour of the plus among
four distractors) end to end through the hand-written backward passes: no autograd anywhere.
The demo then asks what CBAM's spatial attention map learned: its *lift* (the map's mean inside
the target box over its mean outside) and its *pointing* rate (how often its argmax falls in
the box, beside chance).  With ``--attention-loss WEIGHT`` the map is also supervised with the
box (binary cross-entropy against the box mask at the map's 8 x 8 resolution), and the output
says so.  The findings are in ``docs/attention-map.md``; one training step, shape by shape, in
``docs/training-step.md``.

Outputs, under ``--out DIR``: ``summary.json``, and with matplotlib (the ``viz`` extra)
``attention.png``: test images with their target box, the spatial map over them, and the
channel weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from . import ops
from .backend import cupy_available, namespace, to_numpy
from .blocks._base import prefixed
from .blocks.cbam import CBAM, CBAMCache, cbam_backward, cbam_forward
from .blocks.channel_attention import channel_attention_backward
from .blocks.spatial_attention import SpatialAttentionCache, spatial_attention_backward
from .data import COLOUR_NAMES, Dataset, batches, box_masks, make_splits
from .layers import Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU, Sequential
from .losses import (bce_backward, bce_forward, softmax_cross_entropy_backward,
                     softmax_cross_entropy_forward)
from .module import Module
from .optim import Adam

__all__ = ["DemoNet", "Objective", "cbam_backward_with_map", "attention_scores", "main"]

IMAGE_SIZE = 32
MAP_SIZE = 8                 # the spatial map lives on the 8 x 8 feature map
LABELS_ONLY_EPOCHS = 10
SUPERVISED_EPOCHS = 30       # the default with --attention-loss > 0 (docs/attention-map.md)
SUPERVISED_WARMUP = 2        # epochs of labels only before the map's loss starts
BACKENDS = ("numpy", "array_api_strict", "cupy")
FIGURE_IMAGES = 6


# ------------------------------------------------------------------------------ the network

def _spatial_map_backward(dmap: Any, sa: SpatialAttentionCache) -> tuple[Any, dict[str, Any]]:
    """The gradient that a loss on the spatial map ``M_s`` sends into the block's input.

    ``M_s = sigmoid(conv([mean_c(y1); max_c(y1)]))``: the same ops as
    :func:`~npattn.blocks.spatial_attention_backward`, entered at the sigmoid instead of at the
    product ``y1 * M_s``.  Returns ``(dy1, {"conv.weight": ..., ["conv.bias": ...]})``.
    """
    dz = ops.sigmoid_backward(dmap, sa.gate)
    df, dw, db = ops.conv2d_backward(dz, sa.conv)
    dy1 = (ops.channel_mean_backward(df[:, 0:1, ...], sa.mean)
           + ops.channel_max_backward(df[:, 1:2, ...], sa.max))
    return dy1, {"conv.weight": dw, **({} if db is None else {"conv.bias": db})}


def cbam_backward_with_map(dy: Any, dmap: Any, cache: CBAMCache) -> tuple[Any, dict[str, Any]]:
    """:func:`~npattn.blocks.cbam_backward` with an extra gradient ``dmap`` on the spatial map.

    The spatial map feeds two consumers here: the product ``y = y1 * M_s`` (whose gradient
    ``spatial_attention_backward`` returns) and a loss on the map itself (``dmap``, shape
    (N, 1, H, W)).  The two gradients into ``y1`` and into the convolution's weight are summed
    where they meet, then channel attention's backward runs on the total.  ``dmap=None`` is
    plain :func:`cbam_backward`.
    """
    if dmap is None:
        return cbam_backward(dy, cache)
    dy1_product, d_sa = spatial_attention_backward(dy, cache.sa)
    dy1_map, d_map = _spatial_map_backward(dmap, cache.sa)
    dy1 = dy1_product + dy1_map                                     # y1 feeds both paths
    d_sa = {name: g + d_map[name] if name in d_map else g for name, g in d_sa.items()}
    dx, d_ca = channel_attention_backward(dy1, cache.ca)
    return dx, {**prefixed("ca", d_ca), **prefixed("sa", d_sa)}


class DemoNet(Module):
    """The demo's CNN, with or without CBAM.

    ``features``: conv 3->16 (3x3, padding 1), ReLU, max-pool 2, conv 16->32, ReLU, max-pool 2;
    ``cbam``: CBAM(32, reduction 4, 7x7 spatial kernel) on the 8 x 8 map (absent in the plain
    net); ``head``: conv 32->32, ReLU, global average pool, flatten, linear 32->4.

    Two outputs: ``forward(x)`` returns ``(logits, attention)``, logits (N, 4) and ``attention``
    the pair ``(M_c, M_s)`` of shapes (N, 32, 1, 1) and (N, 1, 8, 8) (``None`` for the plain
    net); ``backward((dlogits, dmap))`` takes a gradient for each, ``dmap`` (N, 1, 8, 8) or
    ``None``.

    Parameters
    ----------
    cbam : bool
        Whether the CBAM block is there.
    seed : int
        The parts draw from three streams of it (features, CBAM, head), so the plain and the
        CBAM net of one seed start from the same features and head.
    dtype : {"float32", "float64"}
    """

    def __init__(self, cbam: bool = True, seed: int = 0, dtype: str = "float32") -> None:
        super().__init__()
        gen_features, gen_cbam, gen_head = (np.random.default_rng(s)
                                            for s in np.random.SeedSequence(seed).spawn(3))
        conv = lambda c_in, c_out, gen: Conv2d(c_in, c_out, 3, padding=1, rng=gen, dtype=dtype)  # noqa: E731
        self.features = self.add_child("features", Sequential(
            conv(3, 16, gen_features), ReLU(), MaxPool2d(2),
            conv(16, 32, gen_features), ReLU(), MaxPool2d(2)))
        self.cbam = (self.add_child("cbam", CBAM(32, reduction=4, kernel_size=7, rng=gen_cbam,
                                                 dtype=dtype)) if cbam else None)
        self.head = self.add_child("head", Sequential(
            conv(32, 32, gen_head), ReLU(), GlobalAvgPool2d(), Flatten(),
            Linear(32, 4, rng=gen_head, dtype=dtype)))

    def _forward(self, x: Any) -> tuple[Any, Any]:
        h = self.features.forward(x)                                  # (N, 32, 8, 8)
        cache, attention = None, None
        if self.cbam is not None:
            h, cache = cbam_forward(h, dict(self.cbam.params))
            attention = cache.map
        return (self.head.forward(h), attention), cache

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        dlogits, dmap = dy
        dh = self.head.backward(dlogits)
        dparams: dict[str, Any] = {}
        if cache is not None:
            dh, d_cbam = cbam_backward_with_map(dh, dmap, cache)
            dparams = prefixed("cbam", d_cbam)
        return self.features.backward(dh), dparams

    def extra_repr(self) -> str:
        return f"cbam={self.cbam is not None}"


class Objective(Module):
    """The training loss of a :class:`DemoNet` on one batch, as a module with a scalar output.

    .. math:: L = \\mathrm{CE}(\\mathrm{logits}, \\mathrm{labels})
              + \\lambda\\, \\mathrm{BCE}(M_s, \\mathrm{masks})

    both terms means (over the batch, and over the batch and the 8 x 8 cells).  The second
    term is there when ``weight`` (``lambda``) is above 0 and the net has CBAM.  Set the batch's
    ``labels`` (N,) and ``masks`` (N, 1, 8, 8) before ``forward(x)``; ``backward(dL)`` sends the
    gradients into the net (its parameters are ``net.*``).  After a forward, ``parts`` holds
    ``(ce, bce or None)`` and ``logits`` the net's logits.
    """

    def __init__(self, net: DemoNet, weight: float = 0.0) -> None:
        super().__init__()
        self.net = self.add_child("net", net)
        self.weight = float(weight)
        self.labels: Any = None
        self.masks: Any = None
        self.parts: tuple[Any, Any] = (None, None)
        self.logits: Any = None

    def _forward(self, x: Any) -> tuple[Any, Any]:
        logits, attention = self.net.forward(x)
        ce, c_ce = softmax_cross_entropy_forward(logits, self.labels)
        total, att, c_att = ce, None, None
        if self.weight > 0.0 and attention is not None:
            m_s = attention[1]
            xp = namespace("Objective", map=m_s, masks=self.masks)
            att, c_att = bce_forward(m_s, xp.astype(self.masks, m_s.dtype))
            total = ce + self.weight * att
        self.parts, self.logits = (ce, att), logits
        return total, (c_ce, c_att)

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        c_ce, c_att = cache
        dlogits = softmax_cross_entropy_backward(dy, c_ce)
        dmap = None if c_att is None else bce_backward(self.weight * dy, c_att)[0]
        return self.net.backward((dlogits, dmap)), {}


# ---------------------------------------------------------------------------- the measures

def attention_scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: the lift, whether the argmax points into the box, and chance.

    Parameters
    ----------
    maps, masks : ndarray, shape (N, 1, h, w)
        Spatial maps, and 0/1 box masks at the same resolution.

    Returns
    -------
    dict with ``lift`` (mean of the map on the box's cells over its mean elsewhere),
    ``hit`` (the first argmax in index order lies on a box cell) and ``chance`` (the box's
    share of the cells: the hit rate of a uniformly random cell), each of shape (N,).
    """
    n = maps.shape[0]
    m = maps.reshape(n, -1).astype(np.float64)
    inside = masks.reshape(n, -1) > 0
    mean_in = (m * inside).sum(axis=1) / inside.sum(axis=1)
    mean_out = (m * ~inside).sum(axis=1) / (~inside).sum(axis=1)
    lift = mean_in / np.maximum(mean_out, np.finfo(np.float64).tiny)
    hit = inside[np.arange(n), np.argmax(m, axis=1)]
    return {"lift": lift, "hit": hit, "chance": inside.mean(axis=1)}


def evaluate(net: DemoNet, ds: Dataset, to_backend: Callable[[np.ndarray], Any],
             batch_size: int = 200) -> dict[str, Any]:
    """Test accuracy, and for a CBAM net the maps and their scores, on ``ds``."""
    net.eval()
    predictions, spatial, channel = [], [], []
    for index in batches(len(ds), batch_size):
        logits, attention = net.forward(to_backend(ds.images[index]))
        predictions.append(np.argmax(to_numpy(logits), axis=1))
        if attention is not None:
            channel.append(to_numpy(attention[0]))
            spatial.append(to_numpy(attention[1]))
    net.train()
    predictions = np.concatenate(predictions)
    result: dict[str, Any] = {"accuracy": float(np.mean(predictions == ds.labels)),
                              "predictions": predictions}
    if spatial:
        result["spatial"], result["channel"] = np.concatenate(spatial), np.concatenate(channel)
        scores = attention_scores(result["spatial"], box_masks(ds.boxes, IMAGE_SIZE, MAP_SIZE))
        result.update(lift_median=float(np.median(scores["lift"])),
                      pointing=float(np.mean(scores["hit"])),
                      pointing_chance=float(np.mean(scores["chance"])), hits=scores["hit"])
    return result


# ------------------------------------------------------------------------------------ training

def train(net: DemoNet, train_set: Dataset, *, epochs: int, seed: int, weight: float,
          warmup: int, lr: float, batch_size: int, to_backend: Callable[[np.ndarray], Any],
          name: str, log: Callable[[str], None]) -> list[dict[str, float]]:
    """Train ``net`` with Adam on ``train_set``; one log line and one history entry per epoch.

    The map's loss has weight 0 for the first ``warmup`` epochs (labels only), then ``weight``.
    """
    objective = Objective(net, 0.0)
    opt = Adam(objective, lr=lr)
    order = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])   # same for both nets
    masks = box_masks(train_set.boxes, IMAGE_SIZE, MAP_SIZE)
    one = to_backend(np.asarray(1.0, dtype=train_set.images.dtype))
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        objective.weight = weight if epoch > warmup else 0.0
        sums = {"loss": 0.0, "ce": 0.0, "bce": 0.0, "correct": 0.0}
        for index in batches(len(train_set), batch_size, order):
            objective.labels = to_backend(train_set.labels[index])
            objective.masks = to_backend(masks[index])
            opt.zero_grad()
            loss = objective.forward(to_backend(train_set.images[index]))
            objective.backward(one)
            opt.step()
            ce, att = objective.parts
            sums["loss"] += float(loss) * len(index)
            sums["ce"] += float(ce) * len(index)
            sums["bce"] += (0.0 if att is None else float(att)) * len(index)
            sums["correct"] += float(np.sum(np.argmax(to_numpy(objective.logits), axis=1)
                                            == train_set.labels[index]))
        entry = {k: v / len(train_set) for k, v in sums.items()}
        entry["seconds"] = time.perf_counter() - start
        history.append(entry)
        parts = (f" (ce {entry['ce']:.3f} + {objective.weight:g} x map bce {entry['bce']:.3f})"
                 if objective.weight else " (warm-up: labels only)" if weight else "")
        entry["weight"] = objective.weight
        log(f"{name:5s} epoch {epoch:2d}/{epochs}  loss {entry['loss']:.3f}{parts}  "
            f"train acc {100 * entry['correct']:5.1f}%  {entry['seconds']:5.1f} s")
    return history


# -------------------------------------------------------------------------------------- figure

def write_figure(path: str, ds: Dataset, result: dict[str, Any], title: str) -> bool:
    """The first test images: input and box, the spatial map over it, the channel weights.

    Returns ``False`` (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        return False
    k = min(FIGURE_IMAGES, len(ds))
    fig, axes = plt.subplots(k, 3, figsize=(9.0, 2.6 * k), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.6]})
    for row in range(k):
        image = np.clip(np.transpose(ds.images[row], (1, 2, 0)), 0.0, 1.0)
        top, left, bottom, right = ds.boxes[row]
        m_s, m_c = result["spatial"][row, 0], result["channel"][row, :, 0, 0]
        label, guess = COLOUR_NAMES[ds.labels[row]], COLOUR_NAMES[result["predictions"][row]]
        for col in (0, 1):
            ax = axes[row, col]
            ax.imshow(image, interpolation="nearest")
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                   fill=False, edgecolor="white", linewidth=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_title(f"label {label}, predicted {guess}", fontsize=9)
        # Colours from 0 to this image's maximum, so a map well below 1 still shows its shape;
        # the cross marks the argmax cell.
        shown = axes[row, 1].imshow(m_s, cmap="magma", alpha=0.65, vmin=0.0,
                                    vmax=max(float(m_s.max()), 1e-6), interpolation="bilinear",
                                    extent=(-0.5, IMAGE_SIZE - 0.5, IMAGE_SIZE - 0.5, -0.5))
        i, j = np.unravel_index(int(np.argmax(m_s)), m_s.shape)
        cell = IMAGE_SIZE / MAP_SIZE
        axes[row, 1].plot((j + 0.5) * cell - 0.5, (i + 0.5) * cell - 0.5, "x", color="cyan",
                          markersize=8, markeredgewidth=2)
        axes[row, 1].set_title(f"spatial map (max {m_s.max():.2f}), argmax "
                               f"{'in' if result['hits'][row] else 'outside'} the box", fontsize=9)
        fig.colorbar(shown, ax=axes[row, 1], fraction=0.046, pad=0.04)
        axes[row, 2].bar(np.arange(m_c.size), m_c, color="tab:blue")
        axes[row, 2].set_ylim(0.0, 1.0)
        axes[row, 2].set_title("channel weights M_c (32 channels)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- command line

def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {value}")
        return value
    return parse


def _float_at_least(minimum: float, open_: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (open_ and value == minimum):
            sign = ">" if open_ else ">="
            raise argparse.ArgumentTypeError(f"expected a finite number {sign} {minimum:g}, got {text!r}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m npattn demo",
        description="Train a small CNN with and without CBAM on synthetic data, on npattn's own "
                    "hand-written gradients, and report what the spatial attention map learned.")
    p.add_argument("--epochs", type=_int_at_least(1), default=None,
                   help=f"training epochs (default {LABELS_ONLY_EPOCHS}; {SUPERVISED_EPOCHS} with "
                        f"--attention-loss > 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the "
                   "batch order (default 0)")
    p.add_argument("--backend", default="numpy", help=f"array library: {', '.join(BACKENDS)} "
                   "(default numpy; array_api_strict is slow, for tiny runs)")
    p.add_argument("--out", default=os.path.join("out", "demo"),
                   help="output folder (default out/demo, which git ignores)")
    p.add_argument("--no-baseline", action="store_true", help="train the CBAM net only")
    p.add_argument("--attention-loss", type=_float_at_least(0.0), default=0.0, metavar="WEIGHT",
                   help="weight of the box supervision of the spatial map (default 0: labels only)")
    p.add_argument("--attention-warmup", type=_int_at_least(0), default=None, metavar="EPOCHS",
                   help="epochs of labels only before the map's loss starts (default "
                        f"{SUPERVISED_WARMUP})")
    p.add_argument("--lr", type=_float_at_least(0.0, open_=True), default=2e-3,
                   help="Adam's learning rate (default 2e-3)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=64, help="default 64")
    p.add_argument("--train-size", type=_int_at_least(1), default=4000, help="default 4000")
    p.add_argument("--test-size", type=_int_at_least(1), default=1000, help="default 1000")
    return p


def _backend(name: str) -> tuple[Callable[[np.ndarray], Any], Any] | str:
    """``(to_backend, module target)`` for a backend name, or an error message."""
    if name == "numpy":
        return (lambda a: a), None
    if name == "array_api_strict":
        try:
            import array_api_strict as xp
        except ImportError:
            return "backend 'array_api_strict' is not installed (pip install array-api-strict)"
        return xp.asarray, xp
    if name == "cupy":
        ok, why = cupy_available()
        if not ok:
            return f"backend 'cupy' is not usable here: {why}"
        import cupy
        return cupy.asarray, "gpu"
    return f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"


def _writable(folder: str) -> str | None:
    """Create ``folder`` if needed and check that a file can be written in it; else a message."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".npattn-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        return f"cannot write to --out {folder!r}: {exc.strerror or exc}"
    return None


def _fail(message: str) -> int:
    print(f"npattn demo: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 on success, 2 on bad usage (with a message on stderr)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:           # argparse has printed its message
        return int(exc.code or 0)
    backend = _backend(args.backend)
    if isinstance(backend, str):
        return _fail(backend)
    problem = _writable(args.out)
    if problem:
        return _fail(problem)
    to_backend, target = backend
    epochs = args.epochs or (SUPERVISED_EPOCHS if args.attention_loss > 0 else LABELS_ONLY_EPOCHS)
    if args.attention_warmup is None:
        args.attention_warmup = SUPERVISED_WARMUP
    log = lambda line: print(line, flush=True)  # noqa: E731

    start, cpu_start = time.perf_counter(), time.process_time()
    train_set, test_set = make_splits(args.seed, args.train_size, args.test_size, IMAGE_SIZE)
    supervised = args.attention_loss > 0
    log(f"npattn demo: {len(train_set)} training and {len(test_set)} test images, {epochs} epochs, "
        f"Adam lr {args.lr:g}, batch {args.batch_size}, backend {args.backend}, seed {args.seed}")
    log("the spatial map is SUPERVISED with the target boxes (attention-loss weight "
        f"{args.attention_loss:g} after {args.attention_warmup} epochs of labels only): its lift "
        "and pointing measure that supervision"
        if supervised else "labels only: nothing tells the spatial map where the target is")

    results, histories, seconds = {}, {}, {}
    for name in ("cbam",) if args.no_baseline else ("cbam", "plain"):
        net = DemoNet(cbam=name == "cbam", seed=args.seed)
        if target is not None:
            net.to(target)
        t0 = time.perf_counter()
        histories[name] = train(net, train_set, epochs=epochs, seed=args.seed,
                                weight=args.attention_loss if name == "cbam" else 0.0,
                                warmup=args.attention_warmup,
                                lr=args.lr, batch_size=args.batch_size, to_backend=to_backend,
                                name=name, log=log)
        results[name] = evaluate(net, test_set, to_backend)
        seconds[name] = time.perf_counter() - t0

    cbam, plain = results["cbam"], results.get("plain")
    summary = {
        "test_accuracy_cbam": cbam["accuracy"],
        "test_accuracy_plain": None if plain is None else plain["accuracy"],
        "lift_median": cbam["lift_median"],
        "pointing": cbam["pointing"],
        "pointing_chance": cbam["pointing_chance"],
        "attention_loss": args.attention_loss,
        "attention_warmup": args.attention_warmup if supervised else None,
        "epochs": epochs,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "seconds_cbam": seconds["cbam"],
        "seconds_plain": seconds.get("plain"),
        "backend": args.backend,
        "train_size": len(train_set),
        "test_size": len(test_set),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "history": histories,
    }
    log("")
    log(f"test accuracy: CBAM {100 * cbam['accuracy']:.1f}%" + (
        "" if plain is None else f", plain {100 * plain['accuracy']:.1f}% "
        f"({100 * (cbam['accuracy'] - plain['accuracy']):+.1f} points with CBAM)"))
    log(f"spatial map{' (supervised)' if supervised else ' (labels only)'}: median lift "
        f"{cbam['lift_median']:.2f} (mean inside the box / mean outside; 1 = no preference), "
        f"pointing {100 * cbam['pointing']:.1f}% (argmax in the box; chance "
        f"{100 * cbam['pointing_chance']:.1f}%)")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    title = (f"CBAM net, {'map supervised, weight ' + format(args.attention_loss, 'g') if supervised else 'labels only'}"
             f": test accuracy {100 * cbam['accuracy']:.1f}%, median lift {cbam['lift_median']:.2f}")
    figure = os.path.join(args.out, "attention.png")
    if write_figure(figure, test_set, cbam, title):
        log(f"wrote {os.path.join(args.out, 'summary.json')} and {figure} "
            f"({summary['seconds']:.0f} s in all)")
    else:
        log(f"wrote {os.path.join(args.out, 'summary.json')} ({summary['seconds']:.0f} s in all); "
            "no figure: matplotlib is not installed (pip install 'npattn[viz]' or "
            "pip install matplotlib)")
    return 0
