"""Data sources: each yields converted MIDI files plus what it knows about every piece.

A source turns its originals into MIDI files under ``data/raw/<source>/`` and returns a list
of :class:`RawPiece`. New sources (public datasets) implement :class:`Source` and register
in ``prepare.build_sources``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class RawPiece:
    """One piece as a source delivers it, before analysis."""

    piece_id: str  # unique, stable, filesystem-safe ("music21/bach/bwv66.6")
    source: str  # "music21", "folder", ...
    original_path: str  # where it came from (corpus file, MIDI file)
    midi_path: str  # the MIDI file to analyse and tokenise
    group: str  # pieces with the same group (versions of one work) share a split
    style: str | None  # one of STYLES, or None when unknown (style conditioning dropped)
    meta: dict[str, Any] = field(default_factory=dict)  # title, tempo_marked, split, ...


@dataclass
class Rejection:
    path: str
    reason: str
    source: str = ""


class Source(Protocol):
    name: str

    def collect(self, raw_dir: Path, workers: int) -> tuple[list[RawPiece], list[Rejection]]:
        """Convert/locate every piece; return the pieces and the files skipped with reasons."""
        ...


def safe_name(text: str) -> str:
    """A filesystem-safe, collision-free-enough name (no truncation: truncation collides)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unnamed"


def normalise_title(text: str) -> str:
    """Group key for versions of one work: lower case letters and digits only.

    Dropped at the end: a variant word after a number ("bwv190.7-inst", "bwv69.6-a"), then a ".N"
    (Lakh's "Title.1" versions, a movement "bwv244.3") or a version word standing alone ("_v2",
    " take 3", " (version 2)"). Kept: numbers that name the work ("bwv250", "song1", "track_02").
    """
    text = re.sub(r"\.(mid|midi|abc|krn|mxl|xml|musicxml)$", "", text.lower())
    text = re.sub(r"(?<=\d)[._ -][a-z]{1,5}$", "", text)
    text = re.sub(r"(\.\d+|(?:^|[._ (-])(?:v|version|take)[._ -]?\d+\)?)$", "", text) or text
    return re.sub(r"[^a-z0-9]+", "", text) or text
