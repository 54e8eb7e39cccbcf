"""Song form: sections with bar counts (what a user asks for) and repetition sections (what stage 1
finds in real pieces). Both become the planner's per-bar plan: a section label and the bar's index
inside its section."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from src.music.notes import jaccard

PHRASE_BARS = 4  # stage 1's phrase length (labels.phrase_bars): sections are found phrase by phrase


@dataclass
class Section:
    name: str
    bars: int
    label: int = 0
    start_bar: int = 0


def parse_form(form: str, bars_per_section: int) -> list[Section]:
    """``'intro:4,verse,chorus,verse'`` -> sections with bar counts and plan labels (in order of
    first appearance of each distinct name)."""
    sections: list[Section] = []
    labels: dict[str, int] = {}
    start = 0
    for raw in form.split(","):
        entry = raw.strip()
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_-]*)(?::(\d+))?", entry)
        if not m:
            raise ValueError(f"--form: invalid entry {entry!r} (expected name or name:bars)")
        bars = int(m.group(2)) if m.group(2) else bars_per_section
        if not 1 <= bars <= 64:
            raise ValueError(f"--form: {entry!r} has {bars} bars (must be 1..64)")
        name = m.group(1).lower()
        label = labels.setdefault(name, len(labels))
        sections.append(Section(name, bars, label, start))
        start += bars
    return sections


def total_bars(sections: list[Section]) -> int:
    return sum(s.bars for s in sections)


def plan_of(sections: list[Section]) -> tuple[list[int], list[int]]:
    """Per bar: the section's label and the bar's index inside the section."""
    labels, index = [], []
    for s in sections:
        labels += [s.label] * s.bars
        index += list(range(s.bars))
    return labels, index


def section_labels(letters: str) -> list[int]:
    """A manifest's per-bar section letters ('AABA') -> labels (0, 0, 1, 0)."""
    return [ord(ch) - ord("A") for ch in letters]


def form_of(letters: str, max_bars: int, phrase_bars: int = PHRASE_BARS) -> str:
    """A piece's own form from its per-bar section letters, capped at ``max_bars``: 'AAAABB' -> 'A:4,B:2'.
    :func:`segment_sections` gives a phrase that repeats the one before it the same letter, so a run longer
    than ``phrase_bars`` is that phrase played again: 'AAAAAAAABB' -> 'A:4,A:4,B:2' (the song repeats it)."""
    letters = letters[:max_bars] or "A"
    runs: list[list] = []
    for ch in letters:
        if runs and runs[-1][0] == ch and runs[-1][1] < phrase_bars:
            runs[-1][1] += 1
        else:
            runs.append([ch, 1])
    return ",".join(f"{ch}:{n}" for ch, n in runs)


def segment_sections(
    contents: list[frozenset], phrase_bars: int = PHRASE_BARS, threshold: float = 0.5, max_labels: int = 8
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
