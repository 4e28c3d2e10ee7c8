"""The summary every benchmark quotes: count, p50, p95 (interpolated), min and max."""

from __future__ import annotations

import numpy as np


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = np.asarray(values, dtype=float)
    return {
        "n": len(v),
        "p50": round(float(np.percentile(v, 50)), 1),
        "p95": round(float(np.percentile(v, 95)), 1),
        "min": round(float(v.min()), 1),
        "max": round(float(v.max()), 1),
    }
