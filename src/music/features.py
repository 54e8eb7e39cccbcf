"""Per-piece music features (MusPy; Yang & Lerch 2020, "On the evaluation of generative models in music").

Stage 1's labels, the heuristic preference scorer, generation facts and the evaluation all measure
with these functions. Inputs are plain numpy arrays (see :mod:`src.music.notes`) so every feature is
easy to test with hand-made examples: pitch-class histogram and entropy, pitch range, polyphony,
note density, inter-onset-interval and note-length histograms, scale consistency, groove
consistency, empty-bar rate, repetition and bar self-similarity (:func:`piece_metrics`).
Set-level comparisons live in :mod:`src.eval.metrics`.
"""

from __future__ import annotations

import numpy as np

from src.music.notes import bar_contents, bar_starts, bar_ticks, jaccard, onsets_per_second
from src.music.theory import estimate_key, pitch_class_histogram, scale_consistency

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


# --------------------------------------------------------------------- distributions (the evaluation's)

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


# --------------------------------------------------------------------- texture (what a listener hears first)


def silent_openings(notes: np.ndarray, tpq: int, time_signature: str, bars: int = 0) -> list[int]:
    """The bars after the first (of ``bars``; 0: up to the last note's end) in which nothing sounds during the
    first quarter note: no note starts there and none is held over the bar line."""
    if not len(notes):
        return []
    bar, ends = bar_ticks(tpq, time_signature), notes[:, 0] + notes[:, 1]
    bars = bars or -(-int(ends.max()) // bar)
    return [b for b in range(1, bars) if not ((notes[:, 0] < b * bar + tpq) & (ends > b * bar)).any()]


TEXTURE_METRICS = ("voices_per_beat", "empty_beat_rate", "sounding_run_beats")


def texture(notes: np.ndarray, tpq: int, end_tick: int | None = None) -> dict[str, float]:
    """Texture on a sixteenth grid up to ``end_tick`` (default: the last note's end):

    - ``voices_per_beat``: notes sounding together, averaged over the grid points where any sounds
      (a chorale about 4, a fiddle tune about 1);
    - ``empty_beat_rate``: share of beats in which nothing sounds at any grid point;
    - ``sounding_run_beats``: mean length in beats of the stretches without a gap (how long the music
      goes on before it stops).
    """
    step = max(1, tpq // 4)
    end = end_tick if end_tick is not None else (int((notes[:, 0] + notes[:, 1]).max()) if len(notes) else 0)
    n_points = max(1, -(-end // step))
    count = np.zeros(n_points, np.int64)
    if len(notes):
        first = np.clip(-(-notes[:, 0] // step), 0, n_points)  # the first grid point at or after the onset
        last = np.clip(-(-(notes[:, 0] + notes[:, 1]) // step), 0, n_points)  # first point at or after the end
        np.add.at(count, first[first < n_points], 1)  # a note that starts after the last grid point adds nothing
        np.add.at(count, last[(last < n_points) & (first < n_points)], -1)
        count = np.cumsum(count)
    sounding = count > 0
    per_beat = np.zeros(-(-n_points // 4) * 4, bool)  # whole beats; the last one may be partly past the end
    per_beat[:n_points] = sounding
    per_beat = per_beat.reshape(-1, 4).any(1)
    runs, run = [], 0
    for s in sounding:
        if s:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    if run:
        runs.append(run)
    return {
        "voices_per_beat": float(count[sounding].mean()) if sounding.any() else 0.0,
        "empty_beat_rate": float(1 - per_beat.mean()),
        "sounding_run_beats": float(np.mean(runs) / 4) if runs else 0.0,
    }
