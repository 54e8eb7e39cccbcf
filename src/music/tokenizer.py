"""REMI+ tokeniser (miditok REMI with programs in one stream, tempos and time signatures).

The base vocabulary is shrunk below the target (8 velocities, 16 tempo bins: 478 tokens) so
that BPE really trains: miditok silently skips training when the base already reaches the
target size. :class:`TokenCodec` turns BPE ids back into base ids and re-encodes them, which
the dataset uses for pitch transposition at load time, and holds the per-token tables the
sampler needs (bar starts, pitches, token types, the positions a token holds).

The special tokens come first in the vocabulary, in this order: PAD 0, BOS 1, EOS 2, MASK 3.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from symusic import Note, Score, TimeSignature, Track

from src.music.instruments import most_at_once, track_program
from src.music.notes import parse_time_signature
from src.music.theory import parallel_mode_shift
from src.music.vocab import DRUMS
from src.utils.io import atomic_path, sha256_file

log = logging.getLogger(__name__)
SPECIAL_TOKENS = ("PAD", "BOS", "EOS", "MASK")  # miditok gives them ids 0..3 in this order
PAD, BOS, EOS, MASK = range(len(SPECIAL_TOKENS))
IGNORE = -100  # a target position that carries no loss


def music_ids(ids: Any) -> list[int]:
    """The ids without special tokens (which carry no music)."""
    return [int(t) for t in ids if int(t) >= len(SPECIAL_TOKENS)]


@dataclass
class TokenizerConfig:
    vocab_size: int = 512
    num_velocities: int = 8
    num_tempos: int = 16
    tempo_range: list[int] = field(default_factory=lambda: [40, 250])
    beat_res: dict[str, int] = field(default_factory=lambda: {"0_4": 8, "4_12": 4})
    max_train_pieces: int = 0  # 0 = the whole train split

    def __post_init__(self) -> None:
        if len(self.tempo_range) != 2 or self.tempo_range[0] >= self.tempo_range[1]:
            raise ValueError(f"tempo_range must be [low, high], got {self.tempo_range}")
        for key in self.beat_res:
            lo, _, hi = key.partition("_")
            if not (lo.isdigit() and hi.isdigit() and int(lo) < int(hi)):
                raise ValueError(f"beat_res keys look like '0_4', got {key!r}")


def build_tokenizer(cfg: TokenizerConfig):  # -> miditok.REMI
    from miditok import REMI
    from miditok import TokenizerConfig as MTConfig

    mt = MTConfig(
        use_programs=True,
        one_token_stream_for_programs=True,
        use_time_signatures=True,
        use_tempos=True,
        num_velocities=cfg.num_velocities,
        num_tempos=cfg.num_tempos,
        tempo_range=tuple(cfg.tempo_range),
        beat_res={tuple(int(x) for x in k.split("_")): v for k, v in cfg.beat_res.items()},
        special_tokens=list(SPECIAL_TOKENS),
    )
    return REMI(mt)


def train_tokenizer(cfg: TokenizerConfig, midi_paths: list[Path], out: Path):
    """Build the base vocabulary, train BPE to exactly ``cfg.vocab_size``, save atomically."""
    tok = build_tokenizer(cfg)
    base = len(tok)
    if base >= cfg.vocab_size:
        raise ValueError(
            f"tokenizer.vocab_size={cfg.vocab_size} is not above the base vocabulary ({base}): "
            "BPE would not train; lower num_velocities/num_tempos or raise vocab_size"
        )
    if not midi_paths:
        raise ValueError("no training pieces to train the tokenizer on")
    log.info("training BPE: base vocabulary %d -> %d on %d pieces", base, cfg.vocab_size, len(midi_paths))
    tok.train(vocab_size=cfg.vocab_size, model="BPE", files_paths=[Path(p) for p in midi_paths])
    if len(tok) != cfg.vocab_size:
        raise RuntimeError(f"BPE produced {len(tok)} tokens, expected {cfg.vocab_size}")
    with atomic_path(out) as tmp:
        tok.save(tmp)
    return tok


def load_tokenizer(path: str | Path):
    from miditok import REMI

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer not found; create it with: bash 01_prepare_data.sh")
    return REMI(params=path)


def token_program(value: str) -> int:
    """The GM program of a ``Program_<value>`` token: miditok writes the drum kit as -1, this repository as DRUMS."""
    program = int(value)
    return DRUMS if program == -1 else program


def note_multiset(score) -> Counter:
    """(program, pitch, onset, duration) of every note of a symusic Score, times in beats
    (independent of ticks per quarter): what a tokeniser round trip must preserve."""
    q = score.ticks_per_quarter
    return Counter(
        (track_program(t), n.pitch, Fraction(n.time, q), Fraction(n.duration, q)) for t in score.tracks for n in t.notes
    )


def tokenizer_hash(path: str | Path) -> str:
    """Identity of a trained tokenizer; checkpoints carry it and refuse a mismatch."""
    return sha256_file(path)[:16]


class TokenCodec:
    """BPE ids <-> base ids, and per-token facts the models need (bar starts, pitches, types, positions)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        # miditok keeps the trained Hugging Face model and its byte tables private; we mirror
        # its own decode_token_ids/encode_token_ids with them (checked against miditok in tests).
        model, learned = tokenizer._model, tokenizer._vocab_learned_bytes_to_tokens
        base_vocab = tokenizer.vocab  # base token string -> base id
        self.bpe_to_base: list[np.ndarray] = [
            np.array([base_vocab[t] for t in learned[model.id_to_token(i)]], dtype=np.int64)
            for i in range(len(tokenizer))
        ]
        self.bar_base_id = base_vocab["Bar_None"]
        self.base_pitch: dict[int, int] = {
            i: int(t.split("_")[1]) for t, i in base_vocab.items() if t.startswith("Pitch_")
        }
        self.pitch_to_base = {p: i for i, p in self.base_pitch.items()}
        # BPE never merges across bars, so a token holds at most one Bar, at its start.
        self.starts_bar = np.array([self.bar_base_id in b for b in self.bpe_to_base])
        # per base id: its type ("Pitch", "Position", ...) and value ("60", "4_4", ...)
        self.base_type = {i: t.split("_")[0] for t, i in base_vocab.items()}
        self.base_value = {i: t.split("_", 1)[1] for t, i in base_vocab.items() if "_" in t}
        # per BPE id: the first and last Position value it holds (-1: none), to keep positions in order
        self.first_position = np.full(len(self.bpe_to_base), -1, dtype=np.int64)
        self.last_position = np.full(len(self.bpe_to_base), -1, dtype=np.int64)
        for i, base in enumerate(self.bpe_to_base):
            pos = [int(self.base_value[b]) for b in base.tolist() if self.base_type[b] == "Position"]
            if pos:
                self.first_position[i], self.last_position[i] = pos[0], pos[-1]
        self.positions_per_beat = max(tokenizer.config.beat_res.values())
        # per base id: the GM program of a Program token (DRUMS for the kit; -1: not a Program), the pitch of a
        # Pitch token (-1: not one); and the base id of each program's token
        n_base = max(base_vocab.values()) + 1
        self.base_program_of = np.full(n_base, -1, dtype=np.int64)
        self.base_pitch_of = np.full(n_base, -1, dtype=np.int64)
        for t, i in base_vocab.items():
            if t.startswith("Program_"):
                self.base_program_of[i] = token_program(t.split("_", 1)[1])
        for i, p in self.base_pitch.items():
            self.base_pitch_of[i] = p
        self.program_to_base = {int(p): i for i, p in enumerate(self.base_program_of) if p >= 0}
        self._written: dict[str, str | None] = {}  # written_metre's answers (each costs an encode)

    @classmethod
    def from_file(cls, path: str | Path) -> TokenCodec:
        """The codec of a saved tokenizer (``tokenizer.json``)."""
        return cls(load_tokenizer(path))

    def written_metre(self, time_signature: str) -> str | None:
        """The metre the tokenizer writes bars of ``time_signature`` in: itself when it has a TimeSig token,
        else the one miditok encodes it as when that bar is as long (2/2 is written as 4/4), else None
        (9/8 is re-barred as 4/4: this tokenizer cannot write a 9/8 bar)."""
        if f"TimeSig_{time_signature}" in self.tok.vocab:
            return time_signature
        if time_signature not in self._written:
            self._written[time_signature] = self._probe_metre(time_signature)
        return self._written[time_signature]

    def _probe_metre(self, time_signature: str) -> str | None:
        """Encode one note under ``time_signature``; the TimeSig miditok writes, if its bar is as long."""
        num, den = parse_time_signature(time_signature)
        probe = Score(480)
        probe.time_signatures.append(TimeSignature(0, num, den))
        track = Track("probe", 0, False)
        track.notes.append(Note(0, 480, 60, 80))
        probe.tracks.append(track)
        seq = self.tok.encode(probe)
        tokens = (seq[0] if isinstance(seq, list) else seq).tokens
        written = next((t.split("_", 1)[1] for t in tokens if t.startswith("TimeSig_")), None)
        if written is None:
            return None
        return written if Fraction(*parse_time_signature(written)) == Fraction(num, den) else None

    def duration_positions(self, value: str) -> int:
        """A Duration token's length in positions (miditok writes ``beats.num.res``)."""
        beats, num, res = (int(x) for x in value.split("."))
        return round((beats + num / res) * self.positions_per_beat)

    def parts(self, ids: np.ndarray) -> dict[int, tuple[int, int, int]]:
        """Per pitched program of a piece: (lowest pitch, highest pitch, the most notes it sounds at once)."""
        notes: dict[int, list[tuple[int, int, int]]] = {}
        bar_start, bar_len, pos, program, pitch = 0, 0, 0, -1, -1
        for b in self.to_base(np.asarray(ids, dtype=np.int64)).tolist():
            kind = self.base_type[b]
            if kind == "Bar":
                bar_start += bar_len
                pos = bar_start
            elif kind == "TimeSig":
                bar_len = parse_time_signature(self.base_value[b])[0] * self.positions_per_beat
            elif kind == "Position":
                pos = bar_start + int(self.base_value[b])
            elif kind == "Program":
                program, pitch = int(self.base_program_of[b]), -1
            elif kind == "Pitch":
                pitch = self.base_pitch[b]
            elif kind == "Duration" and pitch >= 0 and program != DRUMS:
                notes.setdefault(program, []).append((pitch, pos, pos + self.duration_positions(self.base_value[b])))
        out = {}
        for program, rows in notes.items():
            arr = np.array(rows, dtype=np.int64)
            out[program] = (int(arr[:, 0].min()), int(arr[:, 0].max()), most_at_once(arr[:, 1], arr[:, 2]))
        return out

    def revoice(self, ids: np.ndarray, moves: dict[int, tuple[int, int]]) -> np.ndarray | None:
        """Each part of program ``p`` in ``moves`` played by another: ``moves[p] = (program, semitones)`` (its
        Program tokens replaced, its pitches moved); None if a pitch or program would leave the vocabulary."""
        base = self.to_base(np.asarray(ids, dtype=np.int64))
        program = self.base_program_of[base]
        last = np.maximum.accumulate(np.where(program >= 0, np.arange(len(base)), -1))
        playing = np.where(last >= 0, program[np.maximum(last, 0)], -1)  # the program each token belongs to
        pitch = self.base_pitch_of[base]
        out = base.copy()
        for src, (dst, semitones) in moves.items():
            if dst not in self.program_to_base:
                return None
            out[program == src] = self.program_to_base[dst]
            notes = (playing == src) & (pitch >= 0)
            moved = np.array([self.pitch_to_base.get(int(p) + semitones, -1) for p in range(128)])[pitch[notes]]
            if (moved < 0).any():
                return None
            out[notes] = moved
        return self.encode_base(out)

    def decode(self, ids: Any) -> Any:
        """BPE ids (special tokens are skipped) -> a symusic Score."""
        return self.tok.decode(music_ids(ids))

    def bar_token_starts(self, ids: np.ndarray) -> np.ndarray:
        """Index of the token that opens each bar."""
        return np.flatnonzero(self.starts_bar[ids])

    def last_bars(self, ids: Any, room: int) -> tuple[np.ndarray, int]:
        """The longest tail of ``ids`` that starts at a bar and has at most ``room`` tokens (all of
        ``ids`` when they fit), and how many bars left its front."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) <= room:
            return ids, 0
        opens = self.starts_bar[ids]
        first = len(ids) - max(room, 0)  # the earliest start that fits
        fits = np.flatnonzero(opens[first:])
        cut = first + int(fits[0]) if len(fits) else len(ids)
        return ids[cut:], int(opens[:cut].sum())

    def to_base(self, ids: np.ndarray) -> np.ndarray:
        return np.concatenate([self.bpe_to_base[i] for i in ids]) if len(ids) else np.zeros(0, np.int64)

    def encode_base(self, base_ids: np.ndarray) -> np.ndarray:
        """Base ids -> BPE ids, split per bar exactly as miditok encodes."""
        byte_of = self.tok._vocab_base_id_to_byte
        cuts = np.flatnonzero(base_ids == self.bar_base_id)
        chunks = np.split(base_ids, cuts[cuts > 0])
        pretok = ["".join(byte_of[int(i)] for i in c) for c in chunks if len(c)]
        return np.array(self.tok._model.encode(pretok, is_pretokenized=True).ids, dtype=np.int64)

    def map_pitches(self, ids: np.ndarray, shift: Callable[[int], int]) -> np.ndarray | None:
        """Move every pitched (non-drum) note by ``shift(pitch)`` semitones; None if one would leave the vocabulary."""
        table = np.arange(max(self.tok.vocab.values()) + 1)
        for base_id, pitch in self.base_pitch.items():
            table[base_id] = self.pitch_to_base.get(pitch + shift(pitch), -1)
        base = table[self.to_base(ids)]
        return None if (base < 0).any() else self.encode_base(base)

    def transpose(self, ids: np.ndarray, semitones: int) -> np.ndarray | None:
        """Shift every pitched (non-drum) note; None if a note would leave the vocabulary."""
        return ids if semitones == 0 else self.map_pitches(ids, lambda pitch: semitones)

    def to_tonic_c(self, parts: list[np.ndarray], tonic: int) -> tuple[list[np.ndarray], int] | None:
        """``parts`` of one piece in the key of ``tonic``, each moved onto tonic C by the same shift: the nearer
        octave (|shift| <= 6) unless a note would leave the vocabulary, then the other; (parts, shift), or None if
        neither fits. A key-relative planner is trained and aligned on pieces so moved."""
        down = -(tonic % 12)
        for shift in sorted((down, down + 12), key=abs):
            moved = [self.transpose(np.asarray(p, dtype=np.int64), shift) for p in parts]
            if all(m is not None for m in moved):
                return moved, shift
        return None

    def piece_on_tonic_c(self, ids: np.ndarray, tonic: int) -> tuple[np.ndarray, int]:
        """One piece on tonic C (:meth:`to_tonic_c`) and its shift; as it is (shift 0) if neither octave fits."""
        moved = self.to_tonic_c([ids], tonic)
        return (moved[0][0], moved[1]) if moved is not None else (ids, 0)

    def parallel_mode(self, ids: np.ndarray, tonic: int, mode: str) -> np.ndarray | None:
        """The piece in the parallel ``mode`` of ``tonic`` (:func:`~src.music.theory.parallel_mode_shift`)."""
        return self.map_pitches(ids, lambda pitch: parallel_mode_shift(pitch, tonic, mode))
