"""The compute floor (information): single-thread float32 GEMM throughput with numpy, so each latency can be
read as a multiple of what its MACs would cost at GEMM speed on one core of this machine."""
from __future__ import annotations

import os
import sys

from .common import ONE_THREAD_ENV, run_json

_GEMM = r"""
import json, sys, time
import numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
c = np.empty((n, n), np.float32)
for _ in range(5):
    np.matmul(a, b, out=c)
t = []
for _ in range(repeats):
    t0 = time.perf_counter()
    np.matmul(a, b, out=c)
    t.append(time.perf_counter() - t0)
print(json.dumps({"n": n, "repeats": repeats, "median_s": float(np.median(t))}))
"""


def gemm_floor(sizes_: tuple[int, ...] = (256, 512), seconds_each: float = 1.0) -> dict:
    """Single-thread float32 GEMM throughput with numpy (OpenBLAS pinned to one thread, fresh process).

    The best size's median gives MAC/s; MACs ÷ that is what one image costs at GEMM speed on one core.
    """
    env = {**os.environ, **ONE_THREAD_ENV}
    runs = []
    for n in sizes_:
        # A quick probe sizes the run so each matrix size takes about `seconds_each`.
        probe = run_json([sys.executable, "-c", _GEMM, str(n), "3"], env, f"GEMM {n}x{n}")
        repeats = max(20, int(seconds_each / max(probe["median_s"], 1e-6)))
        r = run_json([sys.executable, "-c", _GEMM, str(n), str(repeats)], env, f"GEMM {n}x{n}")
        r["gflops"] = 2 * n ** 3 / r["median_s"] / 1e9
        runs.append(r)
    best = max(runs, key=lambda r: r["gflops"])
    return {"what": "float32 numpy matmul, one OpenBLAS thread, median per size; best size used",
            "runs": runs, "gflops": best["gflops"], "macs_per_s": best["gflops"] * 1e9 / 2, "n": best["n"]}


