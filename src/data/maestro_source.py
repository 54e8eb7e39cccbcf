"""MAESTRO v3 (Hawthorne et al., ICLR 2019): 1,276 piano performances, style CLASSICAL.

The MIDI archive and its metadata JSON come from the publisher (storage.googleapis.com/magentadata,
CC BY-NC-SA 4.0). The JSON's official train/validation/test split is kept (it already keeps each
composition in one split), instead of the hash split. These are performances: their MIDI has
no metrical grid (one 120 BPM tempo), so ``tempo_marked`` is false for every piece.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.data.downloads import RemoteFile, fetch, fetch_and_extract
from src.data.sources import RawPiece, Rejection, normalise_title, safe_name

_BASE = "https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0"
SPLITS = ("train", "validation", "test")


@dataclass
class MaestroConfig:
    enabled: bool = False
    # size and sha256 of the archive as recorded by MusPy (muspy/datasets/maestro.py); Google publishes none
    archive: RemoteFile = field(
        default_factory=lambda: RemoteFile(
            url=f"{_BASE}/maestro-v3.0.0-midi.zip",
            size=58416533,
            sha256="70470ee253295c8d2c71e6d9d4a815189e35c89624b76d22fce5a019d5dde12c",
        )
    )
    metadata: RemoteFile = field(default_factory=lambda: RemoteFile(url=f"{_BASE}/maestro-v3.0.0.json"))
    max_files: int = 0  # 0 = every performance


def read_metadata(path: Path) -> list[dict[str, Any]]:
    """Rows of the metadata JSON: column-oriented ({"split": {"0": ...}}) or a list of records."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        rows = data
    elif isinstance(data, dict) and "midi_filename" in data:
        cols = {k: v for k, v in data.items() if isinstance(v, dict)}
        rows = [{k: cols[k].get(i) for k in cols} for i in cols["midi_filename"]]
    else:
        raise ValueError(f"{path}: neither a list of records nor columns with 'midi_filename'")
    for n, r in enumerate(rows):
        for key in ("midi_filename", "split", "canonical_composer", "canonical_title"):
            if not isinstance(r.get(key), str):
                raise ValueError(f"{path}: row {n} has no {key!r}")
        if r["split"] not in SPLITS:
            raise ValueError(f"{path}: row {n} has split {r['split']!r}, expected one of {SPLITS}")
    return rows


class MaestroSource:
    name = "maestro"

    def __init__(self, cfg: MaestroConfig, mirror: str = ""):
        self.cfg, self.mirror = cfg, mirror

    def collect(self, raw_dir: Path, workers: int) -> tuple[list[RawPiece], list[Rejection]]:
        del workers
        root = fetch_and_extract(self.cfg.archive, raw_dir, self.name, self.mirror)
        meta_path = fetch(self.cfg.metadata, Path(raw_dir) / self.name / "downloads", self.mirror)
        rows = read_metadata(meta_path)
        if self.cfg.max_files:
            rows = rows[: self.cfg.max_files]
        # the archive holds one top folder (maestro-v3.0.0/); midi_filename is relative to it
        tops = [d for d in root.iterdir() if d.is_dir()]
        base = tops[0] if len(tops) == 1 else root
        pieces, rejected = [], []
        for r in rows:
            f = base / r["midi_filename"]
            if not f.is_file():
                rejected.append(Rejection(str(f), "listed in the metadata but missing from the archive", self.name))
                continue
            work = f"{r['canonical_composer']} {r['canonical_title']}"
            pieces.append(
                RawPiece(
                    piece_id=f"maestro/{safe_name(str(Path(r['midi_filename']).with_suffix('')))}",
                    source=self.name,
                    original_path=str(f),
                    midi_path=str(f),
                    group=f"maestro/{normalise_title(work)}",
                    style="CLASSICAL",
                    meta={"title": work, "split": r["split"], "tempo_marked": False, "year": r.get("year")},
                )
            )
        return pieces, rejected
