"""The one music-metrics module: per-piece features and set-level comparisons.

Stage 1's labels, the heuristic preference scorer (stage 4), generation stats and the evaluation
(``python -m src.eval``) all measure with these functions. Inputs are plain numpy arrays so every
metric is easy to test with hand-made examples: ``notes`` is an int array of shape (N, 4): start
tick, duration ticks, pitch, is_drum; ``tpq`` is ticks per quarter note.

Per piece (MusPy; Yang & Lerch 2020, "On the evaluation of generative models in music"): pitch-class
histogram and entropy, pitch range, polyphony, note density, inter-onset-interval and note-length
histograms, scale consistency, groove consistency, empty-bar rate, repetition and bar
self-similarity (:func:`piece_metrics`). Between sets: Yang & Lerch's intra-set / inter-set
distance distributions with their KL divergence and overlapping area (:func:`compare_sets`), and
diversity as distinct n-grams (:func:`distinct_ngrams`).
"""

from __future__ import annotations

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# tonic names (lower case, sharps and flats) -> pitch class
TONICS = {n.lower(): i for i, n in enumerate(PITCH_CLASSES)} | {
    "db": 1, "d#": 3, "gb": 6, "g#": 8, "a#": 10, "cb": 11, "e#": 5, "fb": 4, "b#": 0,
}  # fmt: skip
# Krumhansl & Kessler (1982) probe-tone profiles, C major and C minor.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR_SCALE = np.array([0, 2, 3, 5, 7, 8, 10])  # natural minor


def pitch_class_histogram(notes: np.ndarray, weighted: bool = True) -> np.ndarray:
    """(12,) duration-weighted pitch-class histogram of the pitched notes, summing to 1."""
    pitched = notes[notes[:, 3] == 0] if len(notes) else notes
    hist = np.zeros(12)
    if len(pitched):
        w = pitched[:, 1].astype(float) if weighted else np.ones(len(pitched))
        np.add.at(hist, pitched[:, 2] % 12, w)
    total = hist.sum()
    return hist / total if total > 0 else hist


def estimate_key(notes: np.ndarray) -> tuple[int, str, float]:
    """Krumhansl-Schmuckler key finding: (tonic pitch class, 'major'|'minor', correlation)."""
    hist = pitch_class_histogram(notes)
    if hist.sum() == 0:
        return 0, "major", 0.0
    best = (0, "major", -2.0)
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(hist, np.roll(profile, tonic))[0, 1])
            if r > best[2]:
                best = (tonic, mode, r)
    return best


def key_name(tonic: int, mode: str) -> str:
    return f"{PITCH_CLASSES[tonic]} {mode}"


def scale_consistency(notes: np.ndarray, tonic: int, mode: str) -> float:
    """Share of pitched notes (by count) inside the given scale."""
    pitched = notes[notes[:, 3] == 0] if len(notes) else notes
    if not len(pitched):
        return 0.0
    scale = (MAJOR_SCALE if mode == "major" else MINOR_SCALE) + tonic
    return float(np.isin(pitched[:, 2] % 12, scale % 12).mean())


def bar_starts(end_tick: int, tpq: int, time_sigs: list[tuple[int, int, int]]) -> np.ndarray:
    """Tick of every bar start up to ``end_tick``; ``time_sigs`` = [(tick, num, den), ...]."""
    sigs = sorted(time_sigs) or [(0, 4, 4)]
    if sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))
    starts: list[int] = []
    for i, (tick, num, den) in enumerate(sigs):
        stop = sigs[i + 1][0] if i + 1 < len(sigs) else max(end_tick, tick + 1)
        bar_len = max(1, round(tpq * 4 * num / den))
        starts.extend(range(tick, stop, bar_len))
    return np.array(starts or [0], dtype=np.int64)


def onsets_per_second(notes: np.ndarray, tpq: int, qpm: float) -> float:
    """Distinct onset times per second (density of attacks, counting a chord once)."""
    if not len(notes):
        return 0.0
    onsets = np.unique(notes[:, 0])
    seconds = (notes[:, 0] + notes[:, 1]).max() / tpq * 60.0 / qpm
    return float(len(onsets) / seconds) if seconds > 0 else 0.0


def bar_contents(notes: np.ndarray, starts: np.ndarray, tpq: int, grid: int = 4) -> list[frozenset]:
    """Per bar: the set of (pitch, onset position on a 1/grid-beat grid) of its notes."""
    contents: list[set] = [set() for _ in starts]
    if len(notes):
        bar = np.searchsorted(starts, notes[:, 0], side="right") - 1
        pos = np.round((notes[:, 0] - starts[bar]) * grid / tpq).astype(int)
        for b, p, pitch in zip(bar, pos, notes[:, 2]):
            contents[b].add((int(pitch), int(p)))
    return [frozenset(c) for c in contents]


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def segment_sections(
    contents: list[frozenset], phrase_bars: int = 4, threshold: float = 0.5, max_labels: int = 8
) -> tuple[list[int], list[int]]:
    """Repetition-based sections: per bar, a section label (0..max_labels-1) and its index.

    Bars are grouped into phrases of ``phrase_bars``; a phrase whose content matches an
    earlier phrase (Jaccard >= ``threshold``) takes that phrase's label, otherwise it starts a
    new one (once ``max_labels`` are used, the most similar label). A section is a maximal
    run of bars with one label; each bar's index counts from the section's start.
    """
    n_phr = (len(contents) + phrase_bars - 1) // phrase_bars
    phrases = []
    for i in range(n_phr):
        phrase = set()
        for j, bar in enumerate(contents[i * phrase_bars : (i + 1) * phrase_bars]):
            phrase |= {(j, pitch, pos) for pitch, pos in bar}
        phrases.append(frozenset(phrase))
    labels: list[int] = []
    n_labels = 0
    for i, ph in enumerate(phrases):
        sims = [jaccard(ph, phrases[j]) for j in range(i)]
        best = int(np.argmax(sims)) if sims else -1
        if best >= 0 and (sims[best] >= threshold or n_labels >= max_labels):
            labels.append(labels[best])
        else:
            labels.append(n_labels)
            n_labels += 1
    bar_labels = [labels[b // phrase_bars] for b in range(len(contents))]
    index, run = [], 0
    for b, lab in enumerate(bar_labels):
        run = run + 1 if b and lab == bar_labels[b - 1] else 0
        index.append(run)
    return bar_labels, index


# --------------------------------------------------------------------- per-piece quality metrics
# (MusPy / Yang & Lerch style; used by the heuristic preference scorer and the evaluation)


def grid_alignment(notes: np.ndarray, tpq: int, grid: int = 4) -> float:
    """Share of onsets on a 1/``grid``-beat grid (within a 32nd of a beat); 1 for no notes."""
    if not len(notes):
        return 1.0
    step = tpq / grid
    off = np.abs(notes[:, 0] / step - np.round(notes[:, 0] / step)) * step
    return float((off <= tpq / 32).mean())


def onset_patterns(notes: np.ndarray, starts: np.ndarray, tpq: int, grid: int = 4) -> np.ndarray:
    """(bars, positions) binary onset pattern of every bar on a 1/``grid``-beat grid."""
    bar_len = int(np.diff(starts).max()) if len(starts) > 1 else 4 * tpq
    n_pos = max(1, int(round(bar_len * grid / tpq)))
    pat = np.zeros((len(starts), n_pos), dtype=bool)
    if len(notes):
        bar = np.clip(np.searchsorted(starts, notes[:, 0], side="right") - 1, 0, len(starts) - 1)
        pos = np.clip(np.round((notes[:, 0] - starts[bar]) * grid / tpq).astype(int), 0, n_pos - 1)
        pat[bar, pos] = True
    return pat


def groove_consistency(notes: np.ndarray, starts: np.ndarray, tpq: int, grid: int = 4) -> float:
    """1 - mean Hamming distance (share of positions) between consecutive bars' onset patterns (MusPy)."""
    pat = onset_patterns(notes, starts, tpq, grid)
    if len(pat) < 2:
        return 1.0
    return float(1 - (pat[1:] != pat[:-1]).mean())


def pitch_range(notes: np.ndarray) -> int:
    pitched = notes[notes[:, 3] == 0] if len(notes) else notes
    return int(pitched[:, 2].max() - pitched[:, 2].min()) if len(pitched) else 0


def polyphony(notes: np.ndarray) -> float:
    """Mean number of notes sounding at each distinct onset time (MusPy's polyphony, at onsets)."""
    if not len(notes):
        return 0.0
    onsets = np.unique(notes[:, 0])
    ends = notes[:, 0] + notes[:, 1]
    return float(np.mean([((notes[:, 0] <= t) & (ends > t)).sum() for t in onsets]))


def empty_bar_rate(notes: np.ndarray, starts: np.ndarray, end_tick: int) -> float:
    """Share of bars (up to ``end_tick``) in which no note sounds."""
    bounds = np.append(starts, max(end_tick, starts[-1] + 1))
    empty = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        empty += not (len(notes) and ((notes[:, 0] < b) & (notes[:, 0] + notes[:, 1] > a)).any())
    return empty / len(starts)


def silence_ratio(notes: np.ndarray, end_tick: int, min_gap: int = 0) -> float:
    """Share of [0, end_tick) covered by gaps longer than ``min_gap`` ticks in which nothing sounds."""
    if end_tick <= 0:
        return 0.0
    if not len(notes):
        return 1.0
    order = np.argsort(notes[:, 0])
    silent, reach = 0, 0
    for s, d in notes[order, :2]:
        if s - reach > min_gap:
            silent += s - reach
        reach = max(reach, s + d)
    if end_tick - reach > min_gap:
        silent += end_tick - reach
    return float(silent / end_tick)


def repetition(contents: list[frozenset], same: float = 0.9) -> tuple[float, float]:
    """(share of non-empty bars that repeat an earlier bar, share of distinct non-empty bars)."""
    bars = [c for c in contents if c]
    if not bars:
        return 0.0, 0.0
    repeats = sum(any(jaccard(b, bars[j]) >= same for j in range(i)) for i, b in enumerate(bars))
    return repeats / len(bars), 1 - repeats / len(bars)


def longest_identical_run(contents: list[frozenset], same: float = 0.9) -> int:
    """Length of the longest run of consecutive non-empty bars that repeat the same bar (a loop)."""
    best = run = 1 if contents else 0
    for a, b in zip(contents, contents[1:]):
        run = run + 1 if a and b and jaccard(a, b) >= same else 1
        best = max(best, run)
    return best


# --------------------------------------------------------------------- evaluation: per piece

# Yang & Lerch's 12 rhythm classes, in beats: whole, half, quarter, 8th, 16th; dotted half, quarter,
# 8th, 16th; half-, quarter-, 8th-note triplets.
RHYTHM_CLASSES = np.array([4, 2, 1, 0.5, 0.25, 3, 1.5, 0.75, 0.375, 4 / 3, 2 / 3, 1 / 3])
RHYTHM_NAMES = ("1", "1/2", "1/4", "1/8", "1/16", "3/4", "3/8", "3/16", "3/32", "1/3", "1/6", "1/12")


def pitch_class_entropy(notes: np.ndarray) -> float:
    """Entropy (bits) of the note-count pitch-class histogram: 0 = one pitch class, log2(12) = all equally."""
    hist = pitch_class_histogram(notes, weighted=False)
    p = hist[hist > 0]
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def rhythm_histogram(lengths_beats: np.ndarray) -> np.ndarray:
    """(12,) share of lengths nearest to each of Yang & Lerch's rhythm classes (log-distance)."""
    hist = np.zeros(len(RHYTHM_CLASSES))
    lengths = lengths_beats[lengths_beats > 0]
    if len(lengths):
        nearest = np.abs(np.log2(lengths[:, None]) - np.log2(RHYTHM_CLASSES[None])).argmin(1)
        np.add.at(hist, nearest, 1)
        hist /= hist.sum()
    return hist


def ioi_histogram(notes: np.ndarray, tpq: int) -> np.ndarray:
    """Rhythm-class histogram of the intervals between consecutive distinct onsets."""
    onsets = np.unique(notes[:, 0]) if len(notes) else np.zeros(0)
    return rhythm_histogram(np.diff(onsets) / tpq)


def note_length_histogram(notes: np.ndarray, tpq: int) -> np.ndarray:
    """Rhythm-class histogram of the note durations."""
    return rhythm_histogram(notes[:, 1] / tpq if len(notes) else np.zeros(0))


def bar_self_similarity(contents: list[frozenset]) -> float:
    """Mean over non-empty bars after the first of the best Jaccard similarity with any earlier bar.

    0 = no bar resembles an earlier one, 1 = every bar repeats one exactly: how much the piece
    re-uses its own material (the self-similarity matrix's strongest off-diagonal entries).
    """
    bars = [c for c in contents if c]
    if len(bars) < 2:
        return 0.0
    return float(np.mean([max(jaccard(b, bars[j]) for j in range(i)) for i, b in enumerate(bars) if i]))


SCALAR_METRICS = (
    "pitch_class_entropy",
    "pitch_range",
    "n_pitch_classes",
    "polyphony",
    "notes_per_bar",
    "onsets_per_s",
    "scale_consistency",
    "groove_consistency",
    "empty_bar_rate",
    "repetition",
    "self_similarity",
)
HISTOGRAM_METRICS = ("pitch_class_histogram", "ioi_histogram", "note_length_histogram")


def piece_metrics(notes: np.ndarray, tpq: int, qpm: float, time_sigs: list[tuple[int, int, int]] | None = None) -> dict:
    """Every per-piece metric: the scalars of SCALAR_METRICS and the (12,) HISTOGRAM_METRICS."""
    end = int((notes[:, 0] + notes[:, 1]).max()) if len(notes) else tpq
    starts = bar_starts(end, tpq, time_sigs or [(0, 4, 4)])
    contents = bar_contents(notes, starts, tpq)
    tonic, mode, _ = estimate_key(notes)
    pch = pitch_class_histogram(notes, weighted=False)
    return {
        "pitch_class_entropy": pitch_class_entropy(notes),
        "pitch_range": float(pitch_range(notes)),
        "n_pitch_classes": float((pch > 0).sum()),
        "polyphony": polyphony(notes),
        "notes_per_bar": len(notes) / len(starts),
        "onsets_per_s": onsets_per_second(notes, tpq, qpm),
        "scale_consistency": scale_consistency(notes, tonic, mode),
        "groove_consistency": groove_consistency(notes, starts, tpq),
        "empty_bar_rate": empty_bar_rate(notes, starts, end),
        "repetition": repetition(contents)[0],
        "self_similarity": bar_self_similarity(contents),
        "pitch_class_histogram": pch,
        "ioi_histogram": ioi_histogram(notes, tpq),
        "note_length_histogram": note_length_histogram(notes, tpq),
    }


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
