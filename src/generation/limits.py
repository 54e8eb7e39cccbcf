"""What one player can play, as a sampling mask: no pitch outside an instrument's playable range, and no more notes
sounding at once than its player sounds (winds, brass and bass guitars one, bowed strings two; ranges and counts in
src/music/instruments.py). The mask is over the next token given the song so far; :meth:`PartLimits.feed` keeps
the song so far (the open bar, the program a pitch belongs to, when each limited part's notes end).

This is enforcement at sampling time, not the model's own behaviour: the song JSON records it
(``facts["part_limits"]``) and the controls bench measures songs with and without it.
"""

from __future__ import annotations

import numpy as np
import torch

from src.music.instruments import PLAYABLE_RANGE, instrument_name, max_voices
from src.music.tokenizer import TokenCodec


class PartLimits:
    """The limits of one song's instruments (``programs``) in bars of ``bar_len`` positions; ``voices``: the most
    notes at once per program where it differs from one player's (:func:`~src.music.instruments.max_voices`)."""

    def __init__(self, codec: TokenCodec, programs: list[int], bar_len: int, voices: dict[int, int] | None = None):
        self.codec, self.bar_len, self.programs = codec, bar_len, list(programs)
        self.ranges = {p: PLAYABLE_RANGE[p] for p in programs if p in PLAYABLE_RANGE}
        most = {p: max_voices(p) for p in programs} | (voices or {})
        self.voices = {p: n for p, n in most.items() if n is not None}
        self.unlimited = any(p not in self.voices for p in programs)  # some part always has room
        V = len(codec.bpe_to_base)
        self.lead_pitch = np.full(V, -1)  # a Pitch before any Program in the token: a note of the open program
        self.lead_length = np.full(V, -1)  # a Duration before any Program or Position: the open note's length
        self.first_program = np.full(V, -1)  # the token's first Program ...
        self.program_at = np.full(V, -1)  # ... the position it sounds at (bar-relative; -1: the current one) ...
        self.first_chord = np.zeros(V, dtype=np.int64)  # ... and how many notes the token gives it there
        self.bare_position = np.full(V, -1)  # the token's last Position when no Program follows it in the token
        static = np.ones(V, dtype=bool)  # a chord of one instrument or a pitch out of range inside the token
        for i, base in enumerate(codec.bpe_to_base):
            program, pos, chord, moved = -1, -1, {}, False
            for b in base.tolist():
                kind = codec.base_type[b]
                if kind == "Position":
                    pos, chord, moved = int(codec.base_value[b]), {}, True
                    self.bare_position[i] = pos
                elif kind == "Program":
                    program = int(codec.base_program_of[b])
                    if self.first_program[i] < 0:
                        self.first_program[i], self.program_at[i] = program, pos
                    self.bare_position[i] = -1
                    chord[program] = chord.get(program, 0) + 1
                    if program == self.first_program[i] and pos == self.program_at[i]:
                        self.first_chord[i] = chord[program]
                    static[i] &= chord[program] <= self.voices.get(program, chord[program])
                elif kind == "Pitch":
                    pitch = codec.base_pitch[b]
                    if program < 0:
                        self.lead_pitch[i] = pitch
                    elif program in self.ranges:
                        low, high = self.ranges[program]
                        static[i] &= low <= pitch <= high
                elif kind == "Duration" and program < 0 and not moved:
                    self.lead_length[i] = codec.duration_positions(codec.base_value[b])
        # a token that opens a bar holds positions of the next bar: offset them by one bar
        opens = codec.starts_bar.astype(np.int64) * bar_len
        self.program_at = np.where(self.program_at >= 0, self.program_at + opens, -1)
        self.bare_position = np.where(self.bare_position >= 0, self.bare_position + opens, -1)
        self.static = torch.from_numpy(static)
        self.out_of_range = {
            p: torch.tensor([not low <= q <= high for q in range(128)]) for p, (low, high) in self.ranges.items()
        }
        self.reset()

    def facts(self) -> dict[str, dict]:
        """What is enforced, per instrument name: its range and the most notes at once (None: no limit)."""
        return {
            instrument_name(p): {"range": list(self.ranges.get(p, (0, 127))), "most_at_once": self.voices.get(p)}
            for p in self.programs
        }

    def reset(self) -> None:
        """A new song: nothing written yet (its first token opens bar 0)."""
        self.bar_start, self.pos, self.program, self.pitch = -self.bar_len, 0, -1, -1
        self.open = False  # a note of ``program`` is being written (its Duration is still to come)
        self.ends: dict[int, list[int]] = {p: [] for p in self.voices}  # limited parts: notes sounding to these ends

    def feed(self, token: int) -> None:
        """The song goes on by ``token``."""
        codec = self.codec
        for b in codec.bpe_to_base[token].tolist():
            kind = codec.base_type[b]
            if kind == "Bar":
                self.bar_start += self.bar_len
                self.pos = self.bar_start
            elif kind == "Position":
                self.pos = self.bar_start + int(codec.base_value[b])
            elif kind == "Program":
                self.program, self.pitch, self.open = int(codec.base_program_of[b]), -1, True
            elif kind == "Pitch":
                self.pitch = codec.base_pitch[b]
            elif kind == "Duration":
                if self.program in self.ends and self.pitch >= 0:
                    self.ends[self.program].append(self.pos + codec.duration_positions(codec.base_value[b]))
                self.open = False
        for p, ends in self.ends.items():  # time only moves forward: notes ended by now never matter again
            self.ends[p] = [e for e in ends if e > self.pos]

    def mask(self) -> torch.Tensor:
        """(V,) the tokens that keep every part playable now."""
        ok = self.static.clone()
        if self.program in self.out_of_range:  # a pitch for the open note
            lead = torch.from_numpy(self.lead_pitch)
            ok &= ~((lead >= 0) & self.out_of_range[self.program][lead.clamp(0, 127)])
        if not self.voices:
            return ok
        here = self.pos - self.bar_start  # the current position in the open bar
        times = self.bar_start + np.arange(2 * self.bar_len)  # the open bar's positions and the next's
        at = np.where(self.program_at >= 0, self.program_at, here).clip(0, len(times) - 1)
        bare = self.bare_position.clip(0, len(times) - 1)
        room = np.full(len(self.first_program), self.unlimited)  # per token: some part has room where it moves to
        for p, n in self.voices.items():
            ends = np.asarray(self.ends[p], dtype=np.int64)
            sounding = (ends[None, :] > times[:, None]).sum(1)  # (2 * bar_len,) notes of p sounding then
            # a token that ends the open note of p (its Duration) adds that note, sounding to pos + length
            closes = (self.lead_length >= 0) & self.open & (self.program == p)
            end = self.pos + self.lead_length
            ok &= torch.from_numpy(
                ~((self.first_program == p) & (sounding[at] + (closes & (end > times[at])) + self.first_chord > n))
            )
            room |= sounding[bare] + (closes & (end > times[bare])) < n
        ok &= torch.from_numpy(~((self.bare_position >= 0) & ~room))  # no position where no part has room
        return ok
