"""Training windows for the planner: bar-aligned token windows with their piece's conditions.

A window of ``block_size`` + 1 tokens of ``[BOS] + piece + [EOS]`` starts at a bar (or at
BOS); its plan is the piece's repetition sections from the window's first bar on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from src.data.token_store import TokenDataset
from src.data.tokenizer import TokenCodec
from src.models.conditions import Conditions, key_id, to_arrays
from src.models.symbolic_planner import PlannerConfig
from src.utils.io import atomic_path, read_jsonl, sha256_text, write_json

log = logging.getLogger(__name__)
PAD, BOS, EOS = 0, 1, 2
IGNORE = -100


def caption_embeddings(processed_dir: str | Path) -> np.ndarray:
    """(n_rows, 384) embeddings of every manifest caption, cached beside the manifest."""
    from src.models.text_encoder import TEXT_MODEL, embed_texts

    processed_dir = Path(processed_dir)
    rows = read_jsonl(processed_dir / "manifest.jsonl")
    digest = sha256_text(json.dumps([TEXT_MODEL, [r["caption"] for r in rows]]))[:16]
    path, meta = processed_dir / "caption_embeddings.npy", processed_dir / "caption_embeddings.json"
    if path.is_file() and meta.is_file() and json.loads(meta.read_text())["digest"] == digest:
        return np.load(path)
    log.info("embedding %d captions with %s", len(rows), TEXT_MODEL)
    emb = embed_texts([r["caption"] for r in rows])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, emb)
    write_json(meta, {"digest": digest, "model": TEXT_MODEL})
    return emb


def row_conditions(row: dict, text: np.ndarray | None, bar0: int, shift: int = 0) -> Conditions:
    sections = [ord(ch) - ord("A") for ch in row["sections"]][bar0:]
    return Conditions(
        text=text,
        style=row["style"],
        emotion=row["emotion"],
        tempo=row["tempo"],
        key=key_id(row["key_tonic"] + shift, row["mode"]),
        timesig=row["time_signature"],
        programs=row["programs"],
        plan_label=sections,
        plan_index=row["section_index"][bar0:],
    )


class PlannerDataset(Dataset):
    """Random windows (training) or a fixed list of windows (evaluation)."""

    def __init__(
        self,
        processed_dir: str | Path,
        split: str,
        cfg: PlannerConfig,
        codec: TokenCodec,
        text_emb: np.ndarray,
        transpose: int = 0,
        seed: int = 0,
        eval_windows: int = 0,
    ):
        self.pieces = TokenDataset(processed_dir, split, transpose, seed, codec)
        self.cfg, self.codec, self.text_emb, self.seed = cfg, codec, text_emb, seed
        self.epoch = 0
        self.windows: list[tuple[int, int]] | None = None
        if eval_windows:  # deterministic: up to eval_windows non-overlapping windows per piece
            self.windows = []
            for i in range(len(self.pieces)):
                n = len(self.pieces.ids(i)) + 2
                starts = range(0, max(1, n - 1), cfg.block_size)
                self.windows += [(i, s) for s in list(starts)[:eval_windows]]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.pieces.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.windows) if self.windows is not None else len(self.pieces)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        T = self.cfg.block_size
        if self.windows is not None:
            piece, start = self.windows[i]
            ids, shift = self.pieces.ids(piece), 0
        else:
            piece = i
            ids, shift = self.pieces.ids_and_shift(piece)
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
        cond = row_conditions(row, self.text_emb[row["row"]], bar0, shift)
        return {"x": x, "y": y, **to_arrays(cond, self.cfg)}
