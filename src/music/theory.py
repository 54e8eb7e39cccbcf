"""Pitch classes, scales and keys: Krumhansl-Schmuckler estimation, parsing key names,
transposition and the parallel mode. Notes are (N, 4) arrays (see :mod:`src.music.notes`)."""

from __future__ import annotations

import re
from typing import Any

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
# A minor key's notes: the natural minor with its raised 6th and 7th (the melodic and harmonic minor), so that the
# leading tone (G# in A minor), the note that tells A minor from C major, is in the key.
MINOR_KEY = np.union1d(MINOR_SCALE, [9, 11])


def key_pitch_classes(tonic: int, mode: str) -> np.ndarray:
    """The pitch classes that belong to a key: the major scale; in minor, the natural minor scale and its raised
    6th and 7th degrees (``bench.scale_degrees`` measures how often real minor pieces use them)."""
    return ((MAJOR_SCALE if mode == "major" else MINOR_KEY) + tonic) % 12


def pitch_class_histogram(notes: np.ndarray, weighted: bool = True) -> np.ndarray:
    """(12,) duration-weighted pitch-class histogram of the pitched notes, summing to 1."""
    pitched = notes[notes[:, 3] == 0] if len(notes) else notes
    hist = np.zeros(12)
    if len(pitched):
        w = pitched[:, 1].astype(float) if weighted else np.ones(len(pitched))
        np.add.at(hist, pitched[:, 2] % 12, w)
    total = hist.sum()
    return hist / total if total > 0 else hist


def key_correlations(hist: np.ndarray) -> dict[str, list[float]]:
    """Per mode, the correlation of a pitch-class histogram with the mode's profile on each tonic 0..11."""
    return {
        mode: [float(np.corrcoef(hist, np.roll(profile, tonic))[0, 1]) for tonic in range(12)]
        for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR))
    }


def estimate_key(notes: np.ndarray) -> tuple[int, str, float]:
    """Krumhansl-Schmuckler key finding: (tonic pitch class, 'major'|'minor', correlation)."""
    hist = pitch_class_histogram(notes)
    if hist.sum() == 0:
        return 0, "major", 0.0
    best = (0, "major", -2.0)
    for mode, rs in key_correlations(hist).items():
        for tonic, r in enumerate(rs):
            if r > best[2]:
                best = (tonic, mode, r)
    return best


def mode_strength(notes: np.ndarray) -> float:
    """Best major-key profile correlation minus best minor-key correlation (Krumhansl-Schmuckler)."""
    hist = pitch_class_histogram(notes)
    if hist.sum() == 0:
        return 0.0
    best = {mode: max(rs) for mode, rs in key_correlations(hist).items()}
    return best["major"] - best["minor"]


def key_name(tonic: int, mode: str) -> str:
    return f"{PITCH_CLASSES[tonic]} {mode}"


def relative_key(tonic: int, mode: str) -> tuple[int, str]:
    """The key with the same notes on another tonic: A minor <-> C major."""
    return ((tonic + 3) % 12, "major") if mode == "minor" else ((tonic + 9) % 12, "minor")


def parse_key(text: str) -> tuple[int, str]:
    """``'F# minor'``, ``'Bbm'``, ``'C'`` -> (tonic pitch class, mode); ValueError otherwise."""
    m = re.fullmatch(r"\s*([A-Ga-g])([#b]?)\s*(m|min|minor|maj|major)?\s*", text)
    if not m:
        raise ValueError(f"--key: cannot read {text!r} (e.g. 'C', 'F# minor', 'Bbm')")
    tonic = TONICS[(m.group(1) + m.group(2)).lower()]
    return tonic, "minor" if (m.group(3) or "").startswith("m") and m.group(3) not in ("maj", "major") else "major"


def scale_consistency(notes: np.ndarray, tonic: int, mode: str) -> float:
    """Share of pitched notes (by count) that belong to the key (:func:`key_pitch_classes`)."""
    pitched = notes[notes[:, 3] == 0] if len(notes) else notes
    if not len(pitched):
        return 0.0
    return float(np.isin(pitched[:, 2] % 12, key_pitch_classes(tonic, mode)).mean())


def transpose_pitched(score: Any, shift: int) -> Any:
    """A copy of a symusic Score with every pitched (non-drum) note moved by ``shift`` semitones."""
    score = score.copy()
    for t in score.tracks:
        if not t.is_drum:
            for n in t.notes:
                n.pitch = min(127, max(0, n.pitch + shift))
    return score


def parallel_mode_shift(pitch: int, tonic: int, mode: str) -> int:
    """Semitones that move ``pitch`` into the parallel ``mode`` of ``tonic``: scale degrees 3, 6 and 7 move
    by a semitone (E, A, B <-> Eb, Ab, Bb in C: down into minor, up into major); every other note stays."""
    degree = (pitch - tonic) % 12
    if mode == "minor":
        return -1 if degree in (4, 9, 11) else 0
    return 1 if degree in (3, 8, 10) else 0


def to_parallel_mode(score: Any, tonic: int, mode: str) -> Any:
    """Map a piece onto the parallel major or (natural) minor of ``tonic`` (:func:`parallel_mode_shift`)."""
    score = score.copy()
    for t in score.tracks:
        if not t.is_drum:
            for n in t.notes:
                n.pitch += parallel_mode_shift(n.pitch, tonic, mode)
    return score
