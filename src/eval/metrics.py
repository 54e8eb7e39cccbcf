"""Set-level comparisons for the evaluation: Yang & Lerch's intra-set / inter-set distance
distributions with their KL divergence and overlapping area (:func:`compare_sets`), and diversity
as distinct n-grams (:func:`distinct_ngrams`). Per-piece features live in :mod:`src.music.features`.
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------- evaluation: between sets


def _distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise Euclidean distances: within ``a`` (i < j) or between ``a`` and ``b``; rows are items."""
    a = a.reshape(len(a), -1)
    if b is None:
        i, j = np.triu_indices(len(a), 1)
        return np.linalg.norm(a[i] - a[j], axis=1)
    b = b.reshape(len(b), -1)
    return np.linalg.norm(a[:, None] - b[None], axis=2).ravel()


def kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (Scott's bandwidth, floored so identical samples stay finite) on ``grid``."""
    samples = np.asarray(samples, dtype=np.float64)
    spread = float(samples.std()) or float(np.ptp(grid)) / 100 or 1e-3
    bw = max(spread * len(samples) ** (-1 / 5), float(np.ptp(grid)) / 200, 1e-6)
    z = (grid[:, None] - samples[None]) / bw
    dens = np.exp(-0.5 * z**2).sum(1) / (len(samples) * bw * np.sqrt(2 * np.pi))
    return dens / max(np.trapezoid(dens, grid), 1e-300)


def kl_and_overlap(p_samples: np.ndarray, q_samples: np.ndarray, points: int = 512) -> tuple[float, float]:
    """KL(P || Q) (nats) and overlapping area of two sample sets' kernel densities on a shared grid."""
    lo = min(p_samples.min(), q_samples.min())
    hi = max(p_samples.max(), q_samples.max())
    pad = 0.1 * (hi - lo) or 1.0
    grid = np.linspace(lo - pad, hi + pad, points)
    p, q = kde(p_samples, grid), kde(q_samples, grid)
    kl = float(np.trapezoid(p * np.log(np.maximum(p, 1e-12) / np.maximum(q, 1e-12)), grid))
    return max(kl, 0.0), float(np.trapezoid(np.minimum(p, q), grid))


def compare_sets(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Yang & Lerch's comparison of one feature between a generated and a real set.

    Items are scalars or vectors (histograms). Intra-set distances (generated-generated,
    real-real) and inter-set distances (generated-real) form distributions; KL(intra_gen || inter)
    and the overlapping area OA(intra_gen, inter) say how far the generated set sits from the real
    one relative to its own spread (KL 0 / OA 1: indistinguishable). The real set's own
    KL(intra_real || inter) is reported beside them.
    """
    intra_g, intra_r, inter = _distances(generated), _distances(real), _distances(generated, real)
    if len(intra_g) == 0 or len(intra_r) == 0:
        raise ValueError("compare_sets needs at least two items in each set")
    kl, oa = kl_and_overlap(intra_g, inter)
    kl_real, oa_real = kl_and_overlap(intra_r, inter)
    return {
        "mean_generated": float(np.mean(generated)) if generated.ndim == 1 else float("nan"),
        "mean_real": float(np.mean(real)) if real.ndim == 1 else float("nan"),
        "intra_generated": float(intra_g.mean()),
        "intra_real": float(intra_r.mean()),
        "inter": float(inter.mean()),
        "kl": kl,
        "overlap": oa,
        "kl_real": kl_real,
        "overlap_real": oa_real,
    }


def ngrams(seq: np.ndarray | list[int], n: int = 4) -> list[tuple]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_ngrams(seqs: list, n: int = 4, count: int | None = None, seed: int = 0, draws: int = 20) -> float:
    """Diversity: distinct n-grams over all n-grams of all sequences.

    The raw ratio falls as sequences grow, so with ``count`` it is measured on ``count`` n-grams
    drawn without replacement (mean of ``draws``): sets of different lengths become comparable.
    """
    grams = [g for s in seqs for g in ngrams(s, n)]
    if not grams:
        return 0.0
    if count is None:
        return len(set(grams)) / len(grams)
    rng = np.random.default_rng(seed)
    picks = (rng.choice(len(grams), size=min(count, len(grams)), replace=False) for _ in range(draws))
    return float(np.mean([len({grams[i] for i in idx}) / len(idx) for idx in picks]))
