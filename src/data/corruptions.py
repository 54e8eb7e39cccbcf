"""Corruptions for synthetic preference pairs: each makes a real passage worse in one way.

out_of_key: 40% of the notes move a semitone out of the key (``key_pitch_classes``: in minor, the raised 6th
and 7th are in it); off_grid: half the onsets move
by a 32nd note; drop_notes: half the notes vanish; stuck_notes: a third of the notes hold on to the
passage's end; random_repetition: every bar becomes a copy of one random bar; parallel_mode: the passage in the
parallel mode of its key (``to_parallel_mode``'s rule: degrees 3, 6 and 7 move by a semitone), so that the pair
prefers the mode its key condition names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from src.music.theory import key_pitch_classes, parallel_mode_shift

CORRUPTIONS = ("out_of_key", "off_grid", "drop_notes", "stuck_notes", "random_repetition", "parallel_mode")
# the corruptions that move pitches: a drum track is left as it is (its "pitches" are instruments)
PITCH_CORRUPTIONS = ("out_of_key", "parallel_mode")
# stage 1's default: every kind but parallel_mode, which came later (the default's pairs stay as they were)
DEFAULT_CORRUPTIONS = CORRUPTIONS[:5]


def corrupt(
    notes: list[Any],
    lo: int,
    hi: int,
    tpq: int,
    kind: str,
    bar_ticks: np.ndarray,
    key: tuple[int, str],
    rng: np.random.Generator,
) -> bool:
    """Corrupt, in place, the symusic notes starting in ticks [lo, hi) (``kind``: see the module's
    docstring); False if nothing changed."""
    inside = [n for n in notes if lo <= n.time < hi]
    if not inside:
        return False
    pick = lambda share: [n for n in inside if rng.random() < share]  # noqa: E731
    if kind == "out_of_key":
        in_key = set(key_pitch_classes(*key))
        changed = False
        for n in pick(0.4):
            for step in rng.permutation([-1, 1]):
                if (n.pitch + step) % 12 not in in_key and 0 <= n.pitch + step < 128:
                    n.pitch, changed = n.pitch + int(step), True
                    break
        return changed
    if kind == "parallel_mode":
        tonic, mode = key
        other = "major" if mode == "minor" else "minor"
        changed = False
        for n in inside:
            step = parallel_mode_shift(n.pitch, tonic, other)
            if step and 0 <= n.pitch + step < 128:
                n.pitch, changed = n.pitch + step, True
        return changed
    if kind == "off_grid":
        moved = pick(0.5)
        for n in moved:
            n.time = max(lo, n.time + int(rng.choice([-1, 1])) * max(1, tpq // 8))
        return bool(moved)
    if kind == "drop_notes":
        drop = {id(n) for n in pick(0.5)}
        keep = [n for n in notes if id(n) not in drop]
        notes.clear()
        notes.extend(keep)
        return bool(drop)
    if kind == "stuck_notes":
        stuck = pick(0.34)
        for n in stuck:
            n.duration = max(n.duration, min(hi - n.time, 4 * tpq))
        return bool(stuck)
    if kind == "random_repetition":
        bars = [b for b in bar_ticks if lo <= b < hi]
        if len(bars) < 2:
            return False
        bounds = list(bars) + [hi]
        src = int(rng.integers(len(bars)))
        a, b = bounds[src], bounds[src + 1]
        model = [n.copy() for n in inside if a <= n.time < b]
        keep = [n for n in notes if not lo <= n.time < hi]
        for start in bars:
            for n in model:
                c = n.copy()
                c.time = n.time - a + start
                keep.append(c)
        notes.clear()
        notes.extend(sorted(keep, key=lambda n: (n.time, n.pitch)))
        return True
    raise ValueError(f"unknown corruption {kind!r}")
