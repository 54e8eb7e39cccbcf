"""Compact token storage: uint16 shards plus an index, memory-mapped by a PyTorch dataset.

Layout under ``<processed>/tokens/``::

    shard_000.bin ...   uint16 BPE ids of many pieces, back to back
    index.npy           one row per piece: manifest row, shard, offset, length
    meta.json           tokenizer hash, vocabulary size, fingerprint: the cached step's record (written last)

Pitch-transposition augmentation happens when loading, never on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from src.utils.io import atomic_path

INDEX_DTYPE = np.dtype([("row", "<i4"), ("shard", "<i2"), ("offset", "<i8"), ("length", "<i4")])


def write_token_store(out_dir: Path, sequences: list[tuple[int, np.ndarray]], shard_tokens: int) -> dict[str, int]:
    """Write ``(manifest_row, ids)`` pairs into shards and the index; return their counts for ``meta.json``
    (which the caller writes last: it marks completion)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = np.zeros(len(sequences), dtype=INDEX_DTYPE)
    shard, offset, buf = 0, 0, []

    def flush() -> None:
        with atomic_path(out_dir / f"shard_{shard:03d}.bin") as tmp:
            np.concatenate(buf).astype(np.uint16).tofile(tmp)

    for i, (row, ids) in enumerate(sequences):
        if ids.max(initial=0) >= 2**16:
            raise ValueError("token id does not fit uint16")
        if buf and offset + len(ids) > shard_tokens:
            flush()
            shard, offset, buf = shard + 1, 0, []
        index[i] = (row, shard, offset, len(ids))
        buf.append(ids)
        offset += len(ids)
    if buf:
        flush()
    for stale in out_dir.glob("shard_*.bin"):
        if int(stale.stem.split("_")[1]) > shard:
            stale.unlink()
    with atomic_path(out_dir / "index.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, index)
    return {"n_pieces": len(sequences), "n_shards": shard + 1}


def token_store_meta(out_dir: Path) -> dict[str, Any] | None:
    meta = out_dir / "meta.json"
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None


class TokenStore:
    """Read-only view of the shards: ``store[i]`` is the i-th piece's BPE ids (uint16)."""

    def __init__(self, processed_dir: str | Path):
        self.dir = Path(processed_dir) / "tokens"
        self.meta = token_store_meta(self.dir)
        if self.meta is None:
            raise FileNotFoundError(f"{self.dir}: no complete token store; create it with: bash 01_prepare_data.sh")
        self.index = np.load(self.dir / "index.npy")
        self.shards = [
            np.memmap(self.dir / f"shard_{k:03d}.bin", dtype=np.uint16, mode="r") for k in range(self.meta["n_shards"])
        ]
        self.row_to_item = {int(r): i for i, r in enumerate(self.index["row"])}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        e = self.index[i]
        return self.shards[e["shard"]][e["offset"] : e["offset"] + e["length"]]
