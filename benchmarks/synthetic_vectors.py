"""The synthetic vectors and the query timer the query benchmarks share (query.py, ann_recall.py, ann_sets.py).

N unit vectors in DIM dimensions around CLUSTERS Gaussian centres: row i is the same in every
run and every benchmark (seeded by its start row), so a set can be written in pieces.
"""

from __future__ import annotations

import time

import numpy as np

DIM, CLUSTERS = 384, 1_000


def vectors(start: int, stop: int, seed: int = 0) -> np.ndarray:
    """Rows start..stop of the clustered set: a cluster centre plus noise, unit length. (n, DIM)"""
    centres = np.random.default_rng(seed).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed * 7919 + start)
    x = centres[rng.integers(0, CLUSTERS, stop - start)] + 0.6 * rng.standard_normal((stop - start, DIM),
                                                                                        dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def each(fn, items) -> tuple[list[float], list]:
    times, out = [], []
    for item in items:
        t0 = time.perf_counter()
        out.append(fn(item))
        times.append(time.perf_counter() - t0)
    return times, out
