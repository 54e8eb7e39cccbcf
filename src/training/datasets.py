"""The torch Datasets the trainers read: pieces of a split (:class:`TokenDataset`), the planner's
bar-aligned windows (:class:`PlannerDataset`), preference pairs (:class:`PreferenceDataset`) and the
renderer's aligned audio segments (:class:`AudioPairDataset`).

A planner window of ``block_size`` + 1 tokens of ``[BOS] + piece + [EOS]`` starts at a bar (or at
BOS); its plan is the piece's repetition sections from the window's first bar on.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.audio_pairs import load_pairs_index
from src.data.preferences import Pair
from src.data.token_store import TokenStore
from src.models.symbolic_planner import PlannerConfig
from src.music.conditions import Conditions, to_arrays
from src.music.instruments import revoice_choices
from src.music.tokenizer import BOS, EOS, IGNORE, PAD, TokenCodec
from src.utils.io import read_jsonl


class Augmented(NamedTuple):
    """A piece as a training example sees it: its ids, their transposition, whether they were moved to the parallel
    mode, and the programs that play it when its parts were re-voiced (None: its own)."""

    ids: np.ndarray
    shift: int
    moved: bool
    programs: list[int] | None


class TokenDataset(Dataset):
    """Pieces of one split: BPE ids (optionally transposed, optionally moved to the parallel mode, optionally played
    by other instruments) with their condition fields."""

    def __init__(
        self,
        processed_dir: str | Path,
        split: str,
        transpose: int = 0,
        seed: int = 0,
        codec: Any = None,
        parallel_mode: float = 0.0,
        revoice: float = 0.0,
        key_relative: bool = False,
    ):
        self.store = TokenStore(processed_dir)
        rows = read_jsonl(Path(processed_dir) / "manifest.jsonl")
        self.rows = [r for r in rows if r["split"] == split and r["row"] in self.store.row_to_item]
        self.transpose, self.seed, self.epoch = transpose, seed, 0
        self.parallel_mode, self.revoice, self.key_relative = parallel_mode, revoice, key_relative
        if transpose and key_relative:
            raise ValueError("transpose and key_relative exclude each other: key_relative puts every piece on tonic C")
        if (transpose or parallel_mode or revoice or key_relative) and codec is None:
            raise ValueError("transposition, key-relative pieces, parallel-mode and re-voicing need a TokenCodec")
        self.codec = codec
        self._parts: dict[int, dict[int, tuple[int, int, int]]] = {}  # per piece: codec.parts of its stored ids

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def ids(self, i: int) -> np.ndarray:
        return self.augmented(i).ids

    def rng(self, i: int, draw: int, *tag: int) -> np.random.Generator:
        """The generator of one augmentation (``tag``) of piece ``i`` in this epoch; ``draw`` > 0 for a repeat of
        the piece within the epoch (:func:`balanced_repeats`), which then gets draws of its own."""
        return np.random.default_rng((self.seed, self.epoch, i, *tag, *((draw,) if draw else ())))

    def augmented(self, i: int, draw: int = 0) -> Augmented:
        """The piece's BPE ids, with probability ``parallel_mode`` moved to the parallel mode of its key, transposed
        by a random shift, and with probability ``revoice`` each part played by another instrument that can play it
        (:meth:`revoiced`); seeded by seed, epoch, i (and draw)."""
        ids, shift, moved = self.ids_and_shift(i, draw)
        if self.revoice and self.rng(i, draw, 13).random() < self.revoice:
            ids, programs = self.revoiced(i, ids, shift, int(moved), draw)
            return Augmented(ids, shift, moved, programs)
        return Augmented(ids, shift, moved, None)

    def revoiced(
        self, i: int, ids: np.ndarray, shift: int, spread: int, draw: int = 0
    ) -> tuple[np.ndarray, list[int] | None]:
        """``ids`` (piece ``i`` transposed by ``shift``, then pitches moved by at most ``spread``) with each pitched
        part given to an instrument drawn from :func:`~src.music.instruments.revoice_choices` (no two parts to one);
        (ids, None) when a part has no other instrument or the result would leave the vocabulary."""
        rng = self.rng(i, draw, 17)
        moves: dict[int, tuple[int, int]] = {}
        for program, (low, high, voices) in sorted(self.parts(i).items()):
            taken = {dst for dst, _ in moves.values()}
            low, high = low + shift - spread, high + shift + spread
            choices = [c for c in revoice_choices(low, high, voices) if c[0] not in taken]
            if not choices:
                return ids, None
            moves[program] = choices[int(rng.integers(len(choices)))]
        out = self.codec.revoice(ids, moves)
        if out is None:
            return ids, None
        programs = [moves.get(p, (p, 0))[0] for p in self.rows[i]["programs"]]
        return out, programs

    def stored(self, i: int) -> np.ndarray:
        """Piece ``i``'s BPE ids as stage 1 stored them."""
        return np.asarray(self.store[self.store.row_to_item[self.rows[i]["row"]]], dtype=np.int64)

    def parts(self, i: int) -> dict[int, tuple[int, int, int]]:
        """Piece ``i``'s parts as stored (:meth:`~src.music.tokenizer.TokenCodec.parts`), computed once."""
        if i not in self._parts:
            self._parts[i] = self.codec.parts(self.stored(i))
        return self._parts[i]

    def off_tonic_c(self) -> list[str]:
        """The pieces that ``key_relative`` leaves in their own key (neither octave onto tonic C keeps every note
        in the vocabulary), by id: their key condition stays their own."""
        on_c = (self.codec.to_tonic_c([self.stored(i)], r["key_tonic"]) for i, r in enumerate(self.rows))
        return [r["id"] for r, moved in zip(self.rows, on_c) if moved is None]

    def revoice_reach(self) -> dict[int, int]:
        """Per program: the pieces of which :meth:`revoiced` can give a part to it (not counting its own parts)."""
        reach: dict[int, int] = {}
        for i in range(len(self)):
            own = self.parts(i)
            can = {p for low, high, voices in own.values() for p, _ in revoice_choices(low, high, voices)} - set(own)
            for p in can:
                reach[p] = reach.get(p, 0) + 1
        return dict(sorted(reach.items()))

    def ids_and_shift(self, i: int, draw: int = 0) -> tuple[np.ndarray, int, bool]:
        """The piece's BPE ids, with probability ``parallel_mode`` moved to the parallel mode of its key, then
        put on tonic C (``key_relative``: the nearer octave that keeps every note in the vocabulary; a piece that
        fits neither stays in its key) or transposed by a random shift (seeded by seed, epoch, i and draw);
        returns (ids, shift, moved)."""
        row = self.rows[i]
        ids = self.stored(i)
        shift, moved = 0, False
        if self.parallel_mode and self.rng(i, draw, 11).random() < self.parallel_mode:
            other = "minor" if row["mode"] == "major" else "major"
            mapped = self.codec.parallel_mode(ids, row["key_tonic"], other)
            if mapped is not None:  # a note pushed out of range: the piece stays as it is
                ids, moved = mapped, True
        if self.key_relative:  # excludes transpose
            ids, shift = self.codec.piece_on_tonic_c(ids, row["key_tonic"])
            return ids, shift, moved
        if self.transpose:
            for s in self.rng(i, draw).permutation(np.arange(-self.transpose, self.transpose + 1)):
                shifted = self.codec.transpose(ids, int(s))
                if shifted is not None:  # a shift that pushes a note out of range is skipped
                    return shifted, int(s), moved
        return ids, shift, moved

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"ids": torch.from_numpy(self.ids(i)), "row": self.rows[i]}


def balanced_repeats(rows: list[dict[str, Any]], balance: float) -> np.ndarray:
    """How many times each piece is drawn per epoch so that each style's rarer mode is seen more often: a piece of
    a (style, mode) cell with n pieces, in a style whose commoner mode has n_max, is drawn round((n_max / n) **
    balance) times (temperature sampling over the cells: 0 = as the data is, 1 = both modes of a style equally
    often)."""
    cells = Counter((r["style"], r["mode"]) for r in rows)
    most = {style: max(n for (s, _), n in cells.items() if s == style) for style, _ in cells}
    factor = {cell: max(1, round((most[cell[0]] / n) ** balance)) for cell, n in cells.items()}
    return np.array([factor[r["style"], r["mode"]] for r in rows], dtype=np.int64)


class PlannerDataset(Dataset):
    """Random windows (training) or a fixed list of windows (evaluation); with ``balance`` a training epoch
    draws each piece :func:`balanced_repeats` times, each draw with its own augmentation and window."""

    def __init__(
        self,
        processed_dir: str | Path,
        split: str,
        cfg: PlannerConfig,
        codec: TokenCodec,
        text_emb: np.ndarray,
        *,
        transpose: int = 0,
        seed: int = 0,
        eval_windows: int = 0,
        parallel_mode: float = 0.0,
        revoice: float = 0.0,
        key_relative: bool = False,
        balance: float = 0.0,
    ):
        self.pieces = TokenDataset(
            processed_dir,
            split,
            transpose=transpose,
            seed=seed,
            codec=codec,
            parallel_mode=parallel_mode,
            revoice=revoice,
            key_relative=key_relative,
        )
        self.cfg, self.codec, self.text_emb, self.seed = cfg, codec, text_emb, seed
        self.epoch = 0
        rows = self.pieces.rows
        repeats = balanced_repeats(rows, balance) if balance else np.ones(len(rows), np.int64)
        self.draws = [(i, d) for i, r in enumerate(repeats.tolist()) for d in range(r)]  # (piece, its d-th draw)
        self.windows: list[tuple[int, int]] | None = None
        if eval_windows:  # deterministic: up to eval_windows non-overlapping windows per piece, each at a bar
            self.windows = []
            for i in range(len(self.pieces)):
                bars = self.codec.starts_bar[np.concatenate([[BOS], self.pieces.ids(i)])].nonzero()[0]
                starts = [0]
                while len(starts) < eval_windows:
                    later = bars[bars >= starts[-1] + cfg.block_size]
                    if not len(later):
                        break
                    starts.append(int(later[0]))
                self.windows += [(i, s) for s in starts]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.pieces.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.windows) if self.windows is not None else len(self.draws)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        T = self.cfg.block_size
        if self.windows is not None:
            piece, start = self.windows[i]
            (ids, shift, moved), programs = self.pieces.ids_and_shift(piece), None  # no augmentation: a fixed set
        else:
            piece, draw = self.draws[i]
            ids, shift, moved, programs = self.pieces.augmented(piece, draw)
        seq = np.concatenate([[BOS], ids, [EOS]])
        bar_start = self.codec.starts_bar[seq]
        if self.windows is None:
            rng = np.random.default_rng((self.seed, self.epoch, i, 7))
            choices = [0] + [p for p in np.flatnonzero(bar_start) if p + T + 1 <= len(seq)]
            start = int(rng.choice(choices))
        chunk = seq[start : start + T + 1]
        x = np.full(T, PAD, np.int64)
        y = np.full(T, IGNORE, np.int64)
        x[: len(chunk) - 1] = chunk[:-1]
        y[: len(chunk) - 1] = chunk[1:]
        bar0 = int(bar_start[:start].sum())
        row = self.pieces.rows[piece]
        cond = Conditions.from_row(row, self.text_emb[row["row"]], bar0, shift, moved, programs)
        return {"x": x, "y": y, **to_arrays(cond, self.cfg)}


class PreferenceDataset(Dataset):
    """Pairs as model inputs: [BOS] + prompt + continuation, targets only on the continuation.

    Chosen and rejected share one prompt: when the longer side leaves too little room, whole bars
    leave its front (so it still starts at a bar) and the plan moves on by as many bars.
    """

    def __init__(self, pairs: list[Pair], model_cfg: Any, text_emb: dict[str, np.ndarray], codec: TokenCodec):
        self.pairs, self.cfg, self.text_emb, self.codec = pairs, model_cfg, text_emb, codec

    def __len__(self) -> int:
        return len(self.pairs)

    def shared_prompt(self, p: Pair) -> tuple[list[int], int]:
        """The prompt both sides get, and how many bars left its front."""
        room = self.cfg.block_size - 1 - max(len(p.chosen), len(p.rejected))
        kept, bars_gone = self.codec.last_bars(p.prompt, room)
        return kept.tolist(), bars_gone

    def encode(self, prompt: list[int], cont: list[int]) -> tuple[np.ndarray, np.ndarray]:
        T = self.cfg.block_size
        seq = np.array([BOS, *prompt, *cont][: T + 1], dtype=np.int64)
        x = np.full(T, PAD, np.int64)
        y = np.full(T, IGNORE, np.int64)
        x[: len(seq) - 1] = seq[:-1]
        n_prompt = 1 + len(prompt)  # targets from position n_prompt - 1 on are continuation tokens
        y[n_prompt - 1 : len(seq) - 1] = seq[n_prompt:]
        return x, y

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        p = self.pairs[i]
        prompt, bars_gone = self.shared_prompt(p)
        xc, yc = self.encode(prompt, p.chosen)
        xr, yr = self.encode(prompt, p.rejected)
        c = Conditions.from_pair(p.conditions, self.text_emb.get(p.conditions.get("text", "")))
        cond = to_arrays(c.from_bar(bars_gone), self.cfg)
        return {"x_chosen": xc, "y_chosen": yc, "x_rejected": xr, "y_rejected": yr, **cond}


class AudioPairDataset(Dataset):
    """Segments of one split: normalised mel [1, M, F], roll [2, 128, F] in [0, 1], tokens [L] and their mask."""

    def __init__(self, processed_dir: str | Path, split: str, limit: int = 0):
        self.dir = Path(processed_dir) / "audio_pairs"
        self.index = load_pairs_index(processed_dir)
        self.mean, self.std = self.index["mel_mean"], self.index["mel_std"]
        self.items = [(p["file"], k) for p in self.index["pieces"].get(split, []) for k in range(p["segments"])]
        if limit:
            self.items = self.items[:limit]
        self._cache: tuple[str, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _piece(self, file: str) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != file:
            with np.load(self.dir / file) as z:
                self._cache = (file, {k: z[k] for k in z.files})
        return self._cache[1]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        file, k = self.items[i]
        z = self._piece(file)
        tokens = torch.from_numpy(z["tokens"][k].astype(np.int64))
        return {
            "mel": torch.from_numpy((z["mel"][k].astype(np.float32) - self.mean) / self.std)[None],
            "roll": torch.from_numpy(z["roll"][k].astype(np.float32) / 127.0),
            "tokens": tokens,
            "tokens_mask": torch.arange(len(tokens)) < int(z["n_tokens"][k]),
        }
