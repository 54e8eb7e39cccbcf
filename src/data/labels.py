"""Per-piece analysis and labels: validation, key, tempo, metre, emotion, sections, caption.

Emotion quadrants (Russell's circumplex, as in EMOPIA): valence is the estimated mode
(major = high, minor = low); arousal is tempo x note density, i.e. distinct onsets per
beat x beats per second = onsets per second, high when >= ``arousal_threshold``.
HAPPY = major/high, TENSE = minor/high, SAD = minor/low, PEACEFUL = major/low.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from src.data.sources import RawPiece
from src.music.form import PHRASE_BARS, segment_sections
from src.music.instruments import instrument_name, score_programs
from src.music.notes import bar_contents, bar_starts, notes_array, onsets_per_second, time_signatures
from src.music.theory import estimate_key, key_name
from src.music.vocab import emotion_of


@dataclass
class LabelConfig:
    arousal_threshold: float = 2.5  # onsets per second separating low from high arousal
    phrase_bars: int = PHRASE_BARS  # segmentation: phrase length in bars
    section_threshold: float = 0.5  # segmentation: Jaccard similarity for "same material"
    max_section_labels: int = 8
    min_notes: int = 16  # fewer pitched/drum notes than this: rejected
    max_notes: int = 200_000  # more: rejected as absurdly large
    max_duration_s: float = 3600.0
    max_file_mb: float = 20.0

    def __post_init__(self) -> None:
        if self.arousal_threshold <= 0:
            raise ValueError(f"arousal_threshold must be > 0, got {self.arousal_threshold}")
        if self.phrase_bars < 1:
            raise ValueError(f"phrase_bars must be >= 1, got {self.phrase_bars}")
        if not 0 < self.section_threshold <= 1:
            raise ValueError(f"section_threshold must be in (0, 1], got {self.section_threshold}")


class RejectedPiece(Exception):
    """A piece that cannot be used; the message is the reason listed in rejected.jsonl."""


def analyse(raw: RawPiece, cfg: LabelConfig) -> dict[str, Any]:
    """Validate one MIDI file and measure its labels; raise :class:`RejectedPiece`."""
    from symusic import Score

    path = raw.midi_path
    if not os.path.isfile(path):
        raise RejectedPiece("file not found")
    size_mb = os.path.getsize(path) / 2**20
    if size_mb == 0:
        raise RejectedPiece("empty file")
    if size_mb > cfg.max_file_mb:
        raise RejectedPiece(f"file too large ({size_mb:.1f} MB > {cfg.max_file_mb} MB)")
    try:
        score = Score(path)
    except Exception as e:  # symusic raises RuntimeError/ValueError/IOError on corrupt files
        raise RejectedPiece(f"not a readable MIDI file: {str(e)[:120]}") from None
    notes = notes_array(score)
    if len(notes) == 0:
        raise RejectedPiece("no notes")
    if len(notes) < cfg.min_notes:
        raise RejectedPiece(f"too few notes ({len(notes)} < {cfg.min_notes})")
    if len(notes) > cfg.max_notes:
        raise RejectedPiece(f"too many notes ({len(notes)} > {cfg.max_notes})")
    tpq = score.ticks_per_quarter
    qpm = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    duration_s = float(score.to("second").end())
    if not 0 < duration_s <= cfg.max_duration_s:
        raise RejectedPiece(f"duration {duration_s:.0f} s outside (0, {cfg.max_duration_s:.0f}]")
    sigs = time_signatures(score)
    num, den = (sigs[0][1], sigs[0][2]) if sigs else (4, 4)
    end = int((notes[:, 0] + notes[:, 1]).max())
    starts = bar_starts(end, tpq, sigs)
    if "key" in raw.meta:  # the source's annotation (e.g. POP909's key_audio.txt)
        (tonic, mode), key_r, key_source = raw.meta["key"], 1.0, "annotation"
    else:
        (tonic, mode, key_r), key_source = estimate_key(notes), "estimated"
    arousal = onsets_per_second(notes, tpq, qpm)
    sections, section_index = segment_sections(
        bar_contents(notes, starts, tpq), cfg.phrase_bars, cfg.section_threshold, cfg.max_section_labels
    )
    programs = score_programs(score)
    return {
        "id": raw.piece_id,
        "source": raw.source,
        "original_path": raw.original_path,
        "midi_path": raw.midi_path,
        "group": raw.group,
        "title": raw.meta.get("title", ""),
        "style": raw.style,
        "key": key_name(tonic, mode),
        "key_tonic": tonic,
        "mode": mode,
        "key_confidence": round(key_r, 3),
        "key_source": key_source,
        "tempo": round(qpm, 2),
        "tempo_marked": bool(raw.meta.get("tempo_marked", True)),
        "time_signature": f"{num}/{den}",
        "programs": programs,
        "n_notes": int(len(notes)),
        "n_bars": int(len(starts)),
        "duration_s": round(duration_s, 2),
        "onsets_per_s": round(arousal, 3),
        "emotion": emotion_of(mode, arousal, cfg.arousal_threshold),
        "sections": "".join(chr(ord("A") + s) for s in sections),
        "section_index": section_index,
        "split": raw.meta.get("split"),  # the source's official split (MAESTRO), else None: hashed
    }


# ---------------------------------------------------------------- captions (MidiCaps-style)
_OPENERS = ("A", "This is a", "Here is a", "An arrangement of a", "Listen to a")
_MOOD = {
    "HAPPY": ("joyful", "cheerful", "bright", "upbeat"),
    "SAD": ("melancholic", "sorrowful", "wistful", "sombre"),
    "TENSE": ("tense", "restless", "dramatic", "urgent"),
    "PEACEFUL": ("peaceful", "calm", "serene", "gentle"),
}
_STYLE = {
    "CLASSICAL": ("classical", "baroque-flavoured classical", "concert"),
    "FOLK": ("folk", "traditional folk", "folk dance"),
    "POP": ("pop", "popular"),
    "JAZZ": ("jazz",),
    "ELECTRONIC": ("electronic",),
    "AMBIENT": ("ambient",),
}


def _tempo_word(qpm: float) -> str:
    return "slow" if qpm < 76 else "moderate" if qpm < 108 else "lively" if qpm < 140 else "fast"


def caption(row: dict[str, Any]) -> str:
    """A natural caption built from the piece's measured features, wording varied per piece."""
    h = int(hashlib.sha256(row["id"].encode()).hexdigest(), 16)

    def pick(options: tuple[str, ...], salt: int) -> str:
        return options[(h >> (salt * 5)) % len(options)]

    instruments = [instrument_name(p).lower() for p in row["programs"]]
    inst = instruments[0] if len(instruments) == 1 else ", ".join(instruments[:-1]) + " and " + instruments[-1]
    style = pick(_STYLE.get(row["style"] or "", ("",)), 1)
    mood = pick(_MOOD[row["emotion"]], 2)
    opener = pick(_OPENERS, 3)
    article_fix = "An" if opener == "A" and mood[0] in "aeiou" else opener
    tempo = f"{_tempo_word(row['tempo'])} tempo of {row['tempo']:.0f} BPM"
    forms = (
        f"{article_fix} {mood} {style} piece in {row['key']} for {inst}, in {row['time_signature']} at a {tempo}.",
        f"{article_fix} {mood} {style} piece for {inst}. It is in {row['key']}, {row['time_signature']} time, "
        f"with a {tempo}.",
        f"{article_fix} {style} piece with a {mood} mood, played by {inst} in {row['key']}; "
        f"the metre is {row['time_signature']} and the {tempo}.",
    )
    return " ".join(pick(forms, 4).split())
