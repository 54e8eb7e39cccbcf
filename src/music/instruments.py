"""General MIDI programs: from part names (a configurable mapping) and prompt words, their names
and typical registers. The drum kit is program :data:`~src.music.vocab.DRUMS` (128)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pretty_midi

from src.music.vocab import DRUMS

# Substring (lower case) -> GM program, 0-based. The first match in order wins, so the more
# specific names come first ("contrabass" before "bass", "bass clarinet" before "bass").
DEFAULT_PROGRAM_MAP: dict[str, int] = {
    "piano": 0, "pianoforte": 0, "klavier": 0, "keyboard": 0, "harpsichord": 6,
    "cembalo": 6, "clavichord": 7, "celesta": 8, "organ": 19, "continuo": 19,
    "accordion": 21, "harmonica": 22, "guitar": 24, "lute": 24, "theorbo": 24,
    "contrabass": 43, "double bass": 43, "violone": 43, "bass clarinet": 71,
    "violoncello": 42, "cello": 42, "viola": 41, "violin": 40, "fiddle": 40,
    "harp": 46, "timpani": 47, "trumpet": 56, "tromba": 56, "trombone": 57,
    "tuba": 58, "horn": 60, "corno": 60, "oboe": 68, "english horn": 69,
    "bassoon": 70, "fagott": 70, "clarinet": 71, "piccolo": 72, "flute": 73,
    "flauto": 73, "recorder": 74, "whistle": 78, "bagpipe": 109,
    "soprano": 52, "alto": 52, "tenor": 52, "bass": 52, "cantus": 52,
    "altus": 52, "quintus": 52, "sextus": 52, "voice": 52, "choir": 52, "canto": 52,
}  # fmt: skip


@dataclass
class ProgramMapConfig:
    """Name -> GM program mapping; ``default`` is used when no name matches."""

    mapping: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PROGRAM_MAP))
    default: int = 0

    def __post_init__(self) -> None:
        for name, prog in self.mapping.items():
            if not 0 <= prog <= 127:
                raise ValueError(f"mapping.{name}: GM program must be 0..127, got {prog}")
        if not 0 <= self.default <= 127:
            raise ValueError(f"default: GM program must be 0..127, got {self.default}")


def program_for_name(name: str | None, cfg: ProgramMapConfig, default: int | None = None) -> int:
    """Return the GM program for a part/instrument name (case-insensitive substring match)."""
    text = re.sub(r"[^a-z ]+", " ", (name or "").lower())
    for key, prog in cfg.mapping.items():
        if re.search(rf"\b{re.escape(key)}", text):
            return prog
    return cfg.default if default is None else default


def program_name(program: int) -> str:
    return pretty_midi.program_to_instrument_name(program)


def instrument_name(program: int) -> str:
    """A GM program's name, or "drums" for the drum kit."""
    return "drums" if program == DRUMS else program_name(program)


def track_program(track: Any) -> int:
    """A symusic Track's program, :data:`DRUMS` for a drum track."""
    return DRUMS if track.is_drum else int(track.program)


def score_programs(score: Any) -> list[int]:
    """The sorted programs of a score's tracks that have notes (drums as :data:`DRUMS`)."""
    return sorted({track_program(t) for t in score.tracks if len(t.notes)})


# A General MIDI program's typical register (MIDI pitch at its centre), for assigning voices.
REGISTER = {
    range(0, 8): 60, range(8, 16): 72, range(16, 24): 60, range(24, 32): 57, range(32, 40): 38,
    range(40, 41): 74, range(41, 42): 62, range(42, 43): 50, range(43, 44): 38, range(44, 56): 60,
    range(56, 57): 70, range(57, 58): 55, range(58, 59): 40, range(59, 61): 58, range(61, 64): 58,
    range(64, 72): 62, range(72, 80): 76, range(80, 128): 60,
}  # fmt: skip


def register_of(program: int) -> int:
    return next(v for r, v in REGISTER.items() if program in r)


# Words a user may write in a prompt -> GM program (DRUMS = the drum kit). Longer phrases first.
PROMPT_INSTRUMENTS: dict[str, int] = {
    "electric guitar": 27, "acoustic guitar": 24, "bass guitar": 33, "double bass": 43, "french horn": 60,
    "string quartet": 40, "synth pad": 89, "synth bass": 38, "drum kit": DRUMS,
    "piano": 0, "keyboard": 0, "harpsichord": 6, "organ": 19, "accordion": 21, "harmonica": 22,
    "guitar": 24, "bass": 32, "violin": 40, "fiddle": 40, "viola": 41, "cello": 42, "contrabass": 43,
    "strings": 48, "string": 48, "harp": 46, "choir": 52, "voices": 52, "vocals": 52, "voice": 52,
    "trumpet": 56, "trombone": 57, "tuba": 58, "horn": 60, "brass": 61, "saxophone": 65, "sax": 65,
    "oboe": 68, "bassoon": 70, "clarinet": 71, "woodwinds": 71, "woodwind": 71, "piccolo": 72,
    "flute": 73, "recorder": 74, "whistle": 78, "synth": 80, "synthesizer": 80, "lead": 80,
    "pad": 89, "bagpipe": 109, "bagpipes": 109, "percussion": DRUMS, "drums": DRUMS, "drum": DRUMS,
}  # fmt: skip


def instruments_in_prompt(prompt: str) -> list[tuple[str, int]]:
    """Instrument words named in a prompt, in order, as (word, GM program); no duplicates."""
    text = re.sub(r"[^a-z]+", " ", prompt.lower())
    found: list[tuple[int, str, int]] = []
    taken: list[tuple[int, int]] = []
    for word, prog in PROMPT_INSTRUMENTS.items():  # longer phrases first: "bass guitar" before "bass"
        for m in re.finditer(rf"\b{re.escape(word)}\b", text):
            span = (m.start(), m.end())
            if not any(a < span[1] and span[0] < b for a, b in taken):
                taken.append(span)
                found.append((m.start(), word, prog))
    out, seen = [], set()
    for _, word, prog in sorted(found):
        if prog not in seen:
            seen.add(prog)
            out.append((word, prog))
    return out


# Playable ranges (MIDI pitch, inclusive) of the instruments a prompt can name, from orchestration
# tables (e.g. Adler, *The Study of Orchestration*); a choir is bass C2 (Bach's lowest) to soprano A5. Programs absent
# here have no range check.
PLAYABLE_RANGE: dict[int, tuple[int, int]] = {
    0: (21, 108), 6: (29, 89), 19: (24, 96), 21: (41, 89), 22: (60, 96), 24: (40, 88), 27: (40, 88),
    32: (28, 67), 33: (28, 67), 40: (55, 103), 41: (48, 91), 42: (36, 76), 43: (28, 67), 46: (24, 103),
    48: (28, 103), 52: (36, 81), 56: (54, 84), 57: (40, 72), 58: (28, 58), 60: (34, 77), 61: (34, 84),
    65: (49, 81), 68: (58, 91), 69: (52, 81), 70: (34, 75), 71: (50, 94), 72: (74, 108), 73: (60, 96),
    74: (72, 98), 78: (74, 98), 109: (55, 74),
}  # fmt: skip
# Most notes at once a solo player can sound: winds, brass and bass guitars one, bowed strings two (double stops).
MAX_VOICES: dict[range, int] = {range(32, 40): 1, range(40, 44): 2, range(56, 80): 1, range(109, 110): 1}


def max_voices(program: int) -> int | None:
    """How many notes one player of ``program`` sounds at most (None: no limit, e.g. piano or choir)."""
    return next((n for r, n in MAX_VOICES.items() if program in r), None)


OCTAVE_MOVES = (0, -12, 12, -24, 24)  # a part re-voiced onto another instrument moves by octaves only, least first


def revoice_choices(low: int, high: int, voices: int) -> list[tuple[int, int]]:
    """The instruments a part (its lowest and highest pitch, the most notes it sounds at once) can be played on:
    (GM program, octave move) for every program with a playable range (:data:`PLAYABLE_RANGE`) that holds the part
    after the smallest octave move and whose player sounds that many notes (:func:`max_voices`); the program
    augmentation of planner training draws from them."""
    out = []
    for program, (lo, hi) in PLAYABLE_RANGE.items():
        if (max_voices(program) or voices) < voices:
            continue
        move = next((m for m in OCTAVE_MOVES if lo <= low + m and high + m <= hi), None)
        if move is not None:
            out.append((program, move))
    return out


def most_at_once(starts: np.ndarray, ends: np.ndarray) -> int:
    """The most notes sounding together (a note ending where another starts does not overlap it)."""
    if not len(starts):
        return 0
    events = np.concatenate([np.stack([ends, np.zeros_like(ends)], 1), np.stack([starts, np.ones_like(starts)], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # at one tick, ends before starts
    return int(np.cumsum(np.where(events[:, 1] == 1, 1, -1)).max())


def part_facts(score: Any, bar_starts: np.ndarray | None = None) -> dict[int, dict[str, int]]:
    """Per program (tracks of one program together): notes, the most sounding at once, notes out of range, and with
    ``bar_starts`` (ticks) the bars in which the part starts a note."""
    by_program: dict[int, list[np.ndarray]] = {}
    for t in score.tracks:
        arr = t.notes.numpy()
        if len(arr["time"]):
            by_program.setdefault(track_program(t), []).append(
                np.stack([arr["time"], arr["time"] + arr["duration"], arr["pitch"]], 1).astype(np.int64)
            )
    out = {}
    for prog, parts in sorted(by_program.items()):
        notes = np.concatenate(parts)
        low, high = PLAYABLE_RANGE.get(prog, (0, 127))
        out[prog] = {
            "notes": len(notes),
            "most_at_once": most_at_once(notes[:, 0], notes[:, 1]),
            "out_of_range": int(((notes[:, 2] < low) | (notes[:, 2] > high)).sum()),
        }
        if bar_starts is not None:
            out[prog]["bars"] = len(np.unique(np.searchsorted(bar_starts, notes[:, 0], side="right")))
    return out
