"""A score's notes as plain arrays, and its bars.

``notes`` is an int64 array of shape (N, 4): start tick, duration ticks, pitch, is_drum; ``tpq`` is
ticks per quarter note; time signatures are ``[(tick, numerator, denominator), ...]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def notes_array(score: Any) -> np.ndarray:
    """(N, 4) int64: start, duration, pitch, is_drum for every note of a symusic Score."""
    parts = []
    for t in score.tracks:
        arr = t.notes.numpy()
        if len(arr["time"]):
            drum = np.full(len(arr["time"]), int(t.is_drum))
            parts.append(np.stack([arr["time"], arr["duration"], arr["pitch"], drum], axis=1))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 4), np.int64)


def time_signatures(score: Any) -> list[tuple[int, int, int]]:
    """A symusic Score's time signatures as (tick, numerator, denominator)."""
    return [(ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures]


def parse_time_signature(text: str) -> tuple[int, int]:
    """``'6/8'`` -> (6, 8)."""
    num, den = (int(x) for x in text.split("/"))
    return num, den


def bar_ticks(tpq: int, time_signature: str) -> int:
    """The length of one bar of ``time_signature`` in ticks."""
    num, den = parse_time_signature(time_signature)
    return round(tpq * 4 * num / den)


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
