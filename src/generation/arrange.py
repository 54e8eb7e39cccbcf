"""After sampling: instruments assigned by register (when the model's differ from the named ones),
exact tempo, metre and section markers, and the facts measured from the result: of the tokens as
sampled (``control_facts`` of the raw score: what the model did) and of the delivered song."""

from __future__ import annotations

from typing import Any

import numpy as np
from symusic import Note, Score, Tempo, TextMeta, TimeSignature, Track

from src.music.form import Section, total_bars
from src.music.instruments import PLAYABLE_RANGE, instrument_name, max_voices, part_facts, register_of, track_program
from src.music.notes import (
    bar_starts,
    bar_ticks,
    notes_array,
    onsets_per_second,
    parse_time_signature,
    time_signatures,
)
from src.music.theory import estimate_key, key_name
from src.music.tokenizer import TokenCodec
from src.music.vocab import DRUMS


def fold_octaves(pitches: np.ndarray, program: int) -> np.ndarray:
    """Pitches moved by octaves into ``program``'s playable range (as far as the range allows)."""
    low, high = PLAYABLE_RANGE.get(program, (0, 127))
    pitches = pitches.copy()
    while (pitches < low).any() and low + 12 <= high + 1:
        pitches[pitches < low] += 12
    while (pitches > high).any() and high - 12 >= low - 1:
        pitches[pitches > high] -= 12
    return pitches


def playable(band: np.ndarray, program: int) -> tuple[np.ndarray, int, int]:
    """(N, 4) notes (start, duration, pitch, drum) made playable by one player of ``program``: pitches folded by
    octaves into its range, and where more notes sound than the player has, the later and lower ones dropped.
    Returns (notes, notes moved, notes dropped)."""
    band = band[np.lexsort((-band[:, 2], band[:, 0]))].copy()  # by start, highest first
    before = band[:, 2].copy()
    band[:, 2] = fold_octaves(before, program)
    moved = int((band[:, 2] != before).sum())
    most = max_voices(program)
    if most is None:
        return band, moved, 0
    keep: list[int] = []
    for i, (start, _, _, _) in enumerate(band):
        if int((band[keep, 0] + band[keep, 1] > start).sum()) < most:
            keep.append(i)
    return band[keep], moved, len(band) - len(keep)


def fold_into_ranges(score: Any) -> tuple[Any, int]:
    """Every pitched part's notes folded by octaves into its instrument's playable range, as :func:`playable` does
    (pitch classes, and so the key, kept; no note added or dropped). Returns (score, notes moved)."""
    out, moved = score.copy(), 0
    for track in out.tracks:
        if track.is_drum:
            continue
        before = np.array([n.pitch for n in track.notes], dtype=np.int64)
        after = fold_octaves(before, track.program)
        moved += int((after != before).sum())
        for note, pitch in zip(track.notes, after.tolist()):
            note.pitch = pitch
    return out, moved


def assign_instruments(score: Any, named: list[int]) -> tuple[Any, str]:
    """Make the named instruments the ones that play: by register when the model's differ (each part then made
    playable by one player of its instrument: :func:`playable`)."""
    have = {track_program(t) for t in score.tracks if len(t.notes)}
    if set(named) == have:
        return score, ""
    pitched = [p for p in named if p != DRUMS]
    notes = notes_array(score)
    notes = notes[notes[:, 3] == 0]
    if not pitched or not len(notes):
        return score, "no pitched notes to assign to " + ", ".join(instrument_name(p) for p in named)
    order = sorted(pitched, key=register_of, reverse=True)  # highest register first
    # split the notes into len(order) register bands of equal size, highest band first
    ranked = notes[np.lexsort((notes[:, 0], -notes[:, 2]))]
    bands = np.array_split(ranked, len(order))
    out = Score(score.ticks_per_quarter)
    moved = dropped = 0
    for prog, band in zip(order, bands):
        band, m, d = playable(band, prog)
        moved, dropped = moved + m, dropped + d
        track = Track(name=instrument_name(prog), program=prog, is_drum=False)
        for start, dur, pitch, _ in band[np.argsort(band[:, 0], kind="stable")]:
            track.notes.append(Note(int(start), int(dur), int(pitch), 80))
        out.tracks.append(track)
    for t in score.tracks:
        if t.is_drum and DRUMS in named:
            out.tracks.append(t.copy())
    missing = [p for p in named if p == DRUMS and DRUMS not in have]
    msg = "voices assigned by register to " + ", ".join(instrument_name(p) for p in order)
    if moved or dropped:
        msg += f" ({moved} notes moved by octaves into range, {dropped} dropped where one player has no more hands)"
    if missing:
        msg += "; the model generated no drums, so the drum kit is silent"
    return out, msg


def finalise(score: Any, tempo: float, time_signature: str, sections: list[Section]) -> Any:
    """Exact tempo and metre, a marker at every section start and one at the song's end."""
    score = score.copy()
    num, den = parse_time_signature(time_signature)
    score.tempos.clear()
    score.tempos.append(Tempo(0, float(tempo)))
    score.time_signatures.clear()
    score.time_signatures.append(TimeSignature(0, num, den))
    bar = bar_ticks(score.ticks_per_quarter, time_signature)
    score.markers.clear()
    for s in sections:
        score.markers.append(TextMeta(s.start_bar * bar, s.name))
    score.markers.append(TextMeta(total_bars(sections) * bar, "end"))
    return score


def control_facts(score: Any, tempo: float, named: list[int]) -> dict[str, Any]:
    """What a score does of each control: its key and mode, onsets per second at the requested ``tempo``
    (arousal, as the emotion labels measure it), its tempo and metres as written, its bars, and per part the
    notes, the most at once, the notes outside the instrument's range and the bars it starts a note in;
    ``named_share``: notes on ``named``."""
    notes = notes_array(score)
    tonic, mode, _ = estimate_key(notes)
    starts = bar_starts(score.end(), score.ticks_per_quarter, time_signatures(score))
    parts = part_facts(score, starts)
    total = sum(p["notes"] for p in parts.values())
    return {
        "key": key_name(tonic, mode),
        "mode": mode,
        "onsets_per_second": round(onsets_per_second(notes, score.ticks_per_quarter, tempo), 3),
        "tempo": round(float(score.tempos[0].qpm), 3) if len(score.tempos) else None,
        "time_signatures": sorted({f"{n}/{d}" for _, n, d in time_signatures(score)}),
        "bars": len(starts),
        "parts": {instrument_name(p): {"program": p, **f} for p, f in parts.items()},
        "named_share": round(sum(parts[p]["notes"] for p in set(named) & set(parts)) / total, 4)
        if named and total
        else None,
    }


def measure(score: Any, ids: list[int], codec: TokenCodec, sections: list[Section]) -> dict[str, Any]:
    """Facts of the result, measured (not echoed from the request)."""
    notes = notes_array(score)
    tonic, mode, r = estimate_key(notes)
    bar_of_token = np.cumsum(codec.starts_bar[np.array(ids)]) - 1
    bars = int(bar_of_token[-1] + 1)
    per_section = [{"name": s.name, "start_bar": s.start_bar, "bars": s.bars} for s in sections]
    end_tick = max((m.time for m in score.markers), default=0)
    qpm = score.tempos[0].qpm
    return {
        "notes": int(len(notes)),
        "instruments": {instrument_name(track_program(t)): len(t.notes) for t in score.tracks if len(t.notes)},
        "tempo": round(float(qpm), 3),
        "time_signature": f"{score.time_signatures[0].numerator}/{score.time_signatures[0].denominator}",
        "estimated_key": key_name(tonic, mode),
        "key_confidence": round(r, 3),
        "bars": bars,
        "sections": per_section,
        "duration_s": round(max(end_tick, score.end()) / score.ticks_per_quarter * 60.0 / qpm, 3),
    }
