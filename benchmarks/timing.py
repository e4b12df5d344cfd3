"""Timing runners against each other: interleaved rounds, medians, and the ratios the gates read.

The machine is shared, so absolute times are noise. What is compared are runners timed together:
each round runs one block of every runner back to back (ABAB…, the order rotating from round to round),
a round's figure is the ratio of its block medians, and the gate reads the median over rounds. A burst
of load that slows both blocks of a round cancels out; one that hits a single block makes one outlying
round, which the median ignores.
"""
from __future__ import annotations

import gc
import math
import time
from typing import Callable

import numpy as np


def interleaved(runners: dict[str, Callable[[], object]], calls: int | dict[str, int], rounds: int = 20,
                warmup: int = 10) -> dict[str, np.ndarray]:
    """Seconds per call of each runner as a (rounds, calls per round) array, timed round-robin.

    `calls` is the total per runner (a dict gives each its own). Garbage collection is off while timing.
    """
    names = list(runners)
    total = calls if isinstance(calls, dict) else {n: calls for n in names}
    block = {n: max(1, math.ceil(total[n] / rounds)) for n in names}
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times = {n: np.empty((rounds, block[n]), np.int64) for n in names}
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                fn, out = runners[name], times[name][r]
                for i in range(block[name]):
                    t0 = clock()
                    fn()
                    out[i] = clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return {n: t * 1e-9 for n, t in times.items()}


def summary(seconds: np.ndarray) -> dict:
    """Median, p99 and mean in milliseconds, and the number of calls."""
    seconds = np.asarray(seconds)
    return {"median_ms": float(np.median(seconds) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3),
            "mean_ms": float(seconds.mean() * 1e3), "calls": int(seconds.size)}


def ratio(times: dict[str, np.ndarray], name: str, reference: str) -> float:
    """Latency of `name` ÷ latency of `reference`: the median over rounds of the ratio of their block medians."""
    per_round = np.median(times[name], axis=1) / np.median(times[reference], axis=1)
    return float(np.median(per_round))


def excess_ratio(times: dict[str, np.ndarray], name: str, name_base: str, reference: str,
                 reference_base: str) -> float:
    """(name − name_base) ÷ (reference − reference_base), per round from block medians, median over rounds:
    what `name` adds on top of a common part, against what `reference` adds on top of it."""
    med = {n: np.median(times[n], axis=1) for n in (name, name_base, reference, reference_base)}
    per_round = (med[name] - med[name_base]) / np.maximum(med[reference] - med[reference_base], 1e-9)
    return float(np.median(per_round))
