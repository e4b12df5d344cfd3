"""What `python -m pipeline tune` searches and how a trial is judged, without Ray: the compact family's
search space, a trial's configuration, the up-front feasibility check (MACs, int8 size, TFLite Micro arena,
latency ratio),
the Pareto front, the plot, and picking a trial for `export --from-tune`.

A trial's parameters are plain values (ints, strings, floats) so that Ray, Optuna and tune.json all hold
the same thing; `trial_config` turns them into the pipeline's Config.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import ArchConfig, Config
from pipeline.errors import ConfigError, DataError

# Filters per block: block k takes its width from WIDTHS[k]; `blocks` says how many blocks there are.
WIDTHS = ([8, 12, 16, 24, 32], [16, 24, 32, 48, 64], [24, 32, 44, 64, 96], [32, 48, 64, 96, 128])
SPACE = {
    "blocks": [2, 3, 4],
    "convs": [1, 2],
    "kernel": [3, 5],
    "pool": ["max", "avg"],
    "separable": [False, True],
    **{f"width{k + 1}": choices for k, choices in enumerate(WIDTHS)},
    "sparsity": [0.0, 0.25, 0.5, 0.6, 0.7, 0.8],
}
# `compact` pruned to 50 %, the default release, as search parameters.
RELEASE_PARAMS = {"blocks": 3, "convs": 2, "kernel": 3, "pool": "max", "separable": False,
                  "width1": 16, "width2": 32, "width3": 44, "width4": 32, "sparsity": 0.5}


def release_params(manifest: dict | None) -> dict | None:
    """The shipped release's architecture as search parameters (the first trial of a search, so the proxy
    schedule's figure for it sits in the same plot), from its manifest's config; None when the release is not
    of the compact family or its sizes are not in the space (then the search starts where Optuna says)."""
    if not manifest:
        return dict(RELEASE_PARAMS)
    train = (manifest.get("config") or {}).get("train") or {}
    prune = (manifest.get("config") or {}).get("prune") or {}
    if train.get("model") == "compact":
        arch = dataclasses.asdict(ArchConfig())
    elif train.get("model") == "custom" and train.get("arch"):
        arch = train["arch"]
    else:
        return None
    widths = list(arch["widths"])
    params = {"blocks": len(widths), "convs": arch["convs"], "kernel": arch["kernel"], "pool": arch["pool"],
              "separable": bool(arch["separable"]),
              **{f"width{k + 1}": (widths[k] if k < len(widths) else WIDTHS[k][0]) for k in range(len(WIDTHS))},
              "sparsity": float(prune.get("target_sparsity", 0.0)) if prune.get("enabled", True) else 0.0}
    fits = all(params[k] in values for k, values in SPACE.items())
    return params if fits else None


def same_architecture(a: dict, b: dict | None) -> bool:
    return b is not None and describe(a) == describe(b)


PROXY_STEPS = 60


@dataclass
class Limits:
    """Constraints a configuration must meet before it is trained; None = no limit."""
    max_int8_kb: float | None = None
    max_macs: float | None = None
    max_latency_ratio: float | None = None     # LiteRT batch-1 median, relative to the release's int8 model
    release_tflite: str | None = None           # the model that ratio is measured against (measured when given)
    max_arena_kb: float | None = None           # TFLite Micro's smallest arena for the int8 model (the mcu extra)


def arch_of(params: dict) -> ArchConfig:
    widths = [int(params[f"width{k + 1}"]) for k in range(int(params["blocks"]))]
    return ArchConfig(widths=widths, convs=int(params["convs"]), kernel=int(params["kernel"]),
                      pool=str(params["pool"]), separable=bool(params["separable"]))


def describe(params: dict) -> str:
    a = arch_of(params)
    return (f"{'-'.join(map(str, a.widths))} ×{a.convs} k{a.kernel} {a.pool}{' sep' if a.separable else ''} "
            f"sparsity {float(params['sparsity']):.0%}")


def trial_config(base: Config, params: dict, epochs: int | None = None) -> Config:
    """`base` with the trial's architecture and sparsity. With `epochs` (the search's proxy schedule):
    that many training epochs, then, when pruning, the same share of pruning epochs as the release
    (15 of 35 → at least 1)."""
    sparsity = float(params["sparsity"])
    train = dataclasses.replace(base.train, model="custom", arch=arch_of(params))
    prune = dataclasses.replace(base.prune, enabled=sparsity > 0, target_sparsity=sparsity or base.prune.target_sparsity)
    if epochs is not None:
        # At least PROXY_STEPS steps per epoch (batch norm needs them on a small subset); lr scaled with the batch.
        images = base.data.train_limit or 60000 - base.data.val_size
        batch = min(base.train.batch_size, max(16, images // PROXY_STEPS))
        train = dataclasses.replace(train, epochs=epochs, batch_size=batch, lr=train.lr * batch / base.train.batch_size,
                                    warmup_epochs=min(train.warmup_epochs, max(epochs - 1, 0) / 3))
        prune = dataclasses.replace(prune, epochs=max(1, round(epochs * base.prune.epochs / base.train.epochs)))
    return dataclasses.replace(base, train=train, prune=prune)


def _litert_latency_ratio(candidate: bytes, release: Path, rounds: int = 7, calls: int = 60) -> float:
    """Median batch-1 LiteRT latency of `candidate` over the release's int8 model, one thread, both measured
    in this process in alternating rounds (the ratio, unlike the times, survives a busy machine)."""
    from ai_edge_litert.interpreter import Interpreter
    interps = []
    for content in (candidate, release.read_bytes()):
        it = Interpreter(model_content=content, num_threads=1)
        it.allocate_tensors()
        detail = it.get_input_details()[0]
        it.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interps.append(it)
    from edge_runtime.timing import round_robin_seconds
    s = round_robin_seconds({"candidate": interps[0].invoke, "release": interps[1].invoke}, rounds, calls,
                            warmup_each_round=5, rotate=False)
    return float(np.median(s["candidate"]) / np.median(s["release"]))


def micro_arena(int8: bytes, required: bool = False) -> tuple[int | None, str | None]:
    """(TFLite Micro's smallest arena for an int8 model, None) or (None, why TFLM cannot run it); (None, None)
    without the mcu extra unless `required` (then PipelineError naming the extra)."""
    from pipeline.errors import PipelineError
    from pipeline.mcu import micro
    try:
        micro.version()
    except PipelineError:
        if required:
            raise
        return None, None
    bad = micro.unsupported(int8)
    if bad is not None:
        return None, bad.sentence()
    return micro.smallest_arena(int8), None


def measure_up_front(params: dict, limits: Limits) -> dict:
    """What can be known before training: MACs, params, the int8 .tflite's size and TFLite Micro arena (both from
    the untrained model: they depend on shapes only) and, given the release's model, the latency ratio; plus
    `rejected`, the limits broken (None when the configuration may be trained)."""
    from pipeline.train import models
    from pipeline.quantize import tflite
    a = arch_of(params)
    model = models.build("custom", 0.0, a)
    rng = np.random.default_rng(0)
    # Random weights, not the initial ones: the converter shares identical buffers (all-zero biases), which
    # would make the untrained file ~1.4 KB smaller than the trained one.
    model.set_weights([np.abs(rng.standard_normal(w.shape)).astype(np.float32) + 0.5 if "variance" in v.name
                       else (0.1 * rng.standard_normal(w.shape)).astype(np.float32)
                       for v, w in zip(model.weights, model.get_weights())])
    int8 = tflite.to_tflite_int8(model, rng.standard_normal((8, 28, 28, 1)).astype(np.float32))
    arena, no_micro = micro_arena(int8, required=limits.max_arena_kb is not None)
    out = {"macs": int(models.macs(model)), "params": int(model.count_params()), "int8_bytes": len(int8),
           "arena_bytes": arena}
    reasons = []
    if limits.max_int8_kb is not None and out["int8_bytes"] > limits.max_int8_kb * 1024:
        reasons.append(f"int8 {out['int8_bytes'] / 1024:.1f} KB > {limits.max_int8_kb:g} KB")
    if limits.max_macs is not None and out["macs"] > limits.max_macs:
        reasons.append(f"{out['macs'] / 1e6:.2f} M MACs > {limits.max_macs / 1e6:g} M")
    if limits.max_arena_kb is not None:
        if arena is None:
            reasons.append(f"not for microcontrollers: {no_micro}")
        elif arena > limits.max_arena_kb * 1024:
            reasons.append(f"arena {arena / 1024:.1f} KB > {limits.max_arena_kb:g} KB")
    if limits.release_tflite and not reasons:
        out["latency_ratio"] = round(_litert_latency_ratio(int8, Path(limits.release_tflite)), 3)
        if limits.max_latency_ratio is not None and out["latency_ratio"] > limits.max_latency_ratio:
            reasons.append(f"latency {out['latency_ratio']:.2f}× the release > {limits.max_latency_ratio:g}×")
    out["rejected"] = "; ".join(reasons) or None
    return out


def pareto_flags(trials: list[dict]) -> list[bool]:
    """True for completed trials no other completed trial beats: ≥ accuracy, ≤ int8 bytes, ≤ MACs, one strictly."""
    done = [t.get("status") == "completed" and t.get("val_accuracy") is not None for t in trials]
    flags = []
    for i, t in enumerate(trials):
        if not done[i]:
            flags.append(False)
            continue
        a, b, m = t["val_accuracy"], t["int8_bytes"], t["macs"]
        dominated = any(done[j] and j != i and u["val_accuracy"] >= a and u["int8_bytes"] <= b and u["macs"] <= m
                        and (u["val_accuracy"] > a or u["int8_bytes"] < b or u["macs"] < m)
                        for j, u in enumerate(trials))
        flags.append(not dominated)
    return flags


def plot(trials: list[dict], path: Path, release: dict | None = None, title: str = "") -> Path:
    """Validation accuracy vs int8 size and vs MACs: completed trials, those stopped early (at their last
    epoch), the Pareto front, the release's architecture (first trial) and the shipped release's file size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("int8_bytes", 1024, "int8 .tflite size (KB)"), ("macs", 1e6, "MACs per image (M)")]
    if any(t.get("arena_bytes") for t in trials if t.get("status") == "completed"):
        panels.append(("arena_bytes", 1024, "TFLite Micro arena (KB, smallest that allocates)"))
    if any(t.get("latency_ratio") for t in trials if t.get("status") == "completed"):
        panels.append(("latency_ratio", 1, "LiteRT batch-1 latency ÷ the release's (this machine)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), sharey=True)
    for ax, (key, scale, unit) in zip(axes, panels):
        done = [t for t in trials if t.get("status") == "completed" and t.get(key) is not None]
        early = [t for t in trials if t.get("status") == "stopped early" and t.get("val_accuracy") is not None
                 and t.get(key) is not None]
        front = sorted((t for t in done if t.get("pareto")), key=lambda t: t[key])
        ax.scatter([t[key] / scale for t in done], [t["val_accuracy"] for t in done], s=28, color="tab:blue",
                   alpha=0.7, label="completed")
        if early:
            ax.scatter([t[key] / scale for t in early], [t["val_accuracy"] for t in early], s=22,
                       facecolors="none", edgecolors="tab:gray", label="stopped early (ASHA)")
        if front:
            # the front is on accuracy vs size and MACs; on the latency and arena panels its trials are only marked
            ax.plot([t[key] / scale for t in front], [t["val_accuracy"] for t in front],
                    "o" if key in ("latency_ratio", "arena_bytes") else "-o", color="tab:red",
                    ms=6, lw=1.2, label="Pareto front (accuracy vs size and MACs)")
        ref = [t for t in done if t.get("is_release_arch")]
        if ref:
            ax.scatter([ref[0][key] / scale], [ref[0]["val_accuracy"]], marker="*", s=220, color="gold",
                       edgecolors="black", zorder=5, label="release architecture (same proxy)")
        if key == "latency_ratio":
            ax.axvline(1.0, color="goldenrod", ls="--", lw=1, label="the shipped release (1.0)")
        elif release and release.get(key):
            what = {"int8_bytes": f"shipped model_int8.tflite ({release[key] / scale:.1f} KB, with metadata)",
                    "arena_bytes": f"shipped model_int8.tflite ({release[key] / scale:.1f} KB arena)"}.get(
                        key, f"shipped release ({release[key] / scale:.2f} M MACs)")
            ax.axvline(release[key] / scale, color="goldenrod", ls="--", lw=1, label=what)
            ax.legend(fontsize=7.5, loc="best")
        ax.set_xlabel(unit)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (proxy schedule)")
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes[-1].legend(fontsize=7.5, loc="best")
    fig.suptitle(title or "Search: accuracy vs size and compute", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def read_result(folder: str | Path) -> dict:
    path = Path(folder) / "tune.json"
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no search result there (run `python -m pipeline tune --out {folder}` first)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(result.get("trials"), list):
        raise DataError(f"{path}: no 'trials' list: not a tune.json of `python -m pipeline tune`")
    return result


def pick(result: dict, trial_id: str | None = None) -> dict:
    """The trial `trial_id`, else the most accurate trial on the Pareto front (ties: the smaller file)."""
    trials = result["trials"]
    if trial_id:
        for t in trials:
            if t["trial_id"] == trial_id:
                if t.get("status") == "rejected":
                    raise ConfigError(f"trial {trial_id} was rejected before training ({t.get('rejected')})")
                return t
        raise ConfigError(f"no trial {trial_id!r} in tune.json (trials: {', '.join(t['trial_id'] for t in trials)})")
    front = [t for t in trials if t.get("pareto")]
    if not front:
        raise ConfigError("tune.json has no completed trial to export (every trial rejected, stopped or failed)")
    return max(front, key=lambda t: (t["val_accuracy"], -t["int8_bytes"]))
