"""The tests' shared helpers: one note builder and one MIDI writer (hand-made examples, in ticks), the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TPQ = 480  # ticks per quarter note of the hand-made examples


def notes_of(*rows: tuple[int, int, int]) -> np.ndarray:
    """(start tick, duration ticks, pitch) rows -> (N, 4) notes (start, duration, pitch, is_drum = 0)."""
    return np.array([[s, d, p, 0] for s, d, p in rows], dtype=np.int64).reshape(-1, 4)


def melody(pitches: list[int], step: int = TPQ, dur: int | None = None, start: int = 0) -> np.ndarray:
    """One note every ``step`` ticks, each ``dur`` ticks long (default: ``step``)."""
    return notes_of(*((start + i * step, step if dur is None else dur, p) for i, p in enumerate(pitches)))


def in_seconds(onsets: list[float], pitches: list[int], length: float = 0.4) -> np.ndarray:
    """Notes at ``onsets`` seconds, ``length`` seconds long, at 120 BPM (ticks = seconds x 2 x TPQ)."""
    ticks = 2 * TPQ
    return notes_of(*((int(on * ticks), int(length * ticks), p) for on, p in zip(onsets, pitches)))


def scale(bars: int = 2) -> np.ndarray:
    """The C major scale in quarter notes, 4 a bar, repeated."""
    return melody([[60, 62, 64, 65, 67, 69, 71, 72][i % 8] for i in range(4 * bars)])


def score_of(
    notes: np.ndarray,
    tpq: int = TPQ,
    qpm: float = 120.0,
    time_signature: tuple[int, int] | None = (4, 4),
    program: int = 0,
    velocity: int = 90,
) -> Any:
    """A one-track symusic Score of (N, 4) notes (``time_signature`` None writes none)."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    score = Score(tpq)
    score.tempos.append(Tempo(0, qpm))
    if time_signature is not None:
        score.time_signatures.append(TimeSignature(0, *time_signature))
    track = Track(program=program)
    for start, dur, pitch, _ in notes.tolist():
        track.notes.append(Note(start, dur, pitch, velocity))
    score.tracks.append(track)
    return score


def write_midi(path: str | Path, notes: np.ndarray, **kw: Any) -> Path:
    """:func:`score_of` written as a MIDI file."""
    score_of(notes, **kw).dump_midi(str(path))
    return Path(path)


def midi_folder(folder: Path, n: int) -> Path:
    """``n`` distinct 40-note songs (``song<i>.mid``, 4/4 at 100 + i BPM) in a new folder."""
    folder.mkdir(parents=True)
    for i in range(n):
        pitches = [60 + (i + k) % 12 for k in range(40)]
        write_midi(folder / f"song{i}.mid", melody(pitches, 240), qpm=100.0 + i, time_signature=(4, 4))
    return folder


def run05(args: list[str]) -> int:
    """``05_generate_song.py``'s main, in this process."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen05", root / "05_generate_song.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(args)


def manifest(cfg: Any) -> list[dict]:
    """The rows of a prepared data config's manifest."""
    from src.utils.io import read_jsonl

    return read_jsonl(Path(cfg.processed_dir) / "manifest.jsonl")
