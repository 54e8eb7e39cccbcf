"""Any folder of ``.mid``/``.midi`` files, with one style given for all of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.data.sources import RawPiece, Rejection, normalise_title, safe_name
from src.music.vocab import STYLES
from src.utils.io import sha256_file

MIDI_SUFFIXES = (".mid", ".midi")


@dataclass
class FolderSourceConfig:
    path: str
    style: str
    name: str = ""  # source name in the manifest; defaults to the folder's name

    def __post_init__(self) -> None:
        self.style = self.style.upper()
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")


class FolderSource:
    """MIDI files are used in place (no conversion); validation happens at analysis."""

    def __init__(self, cfg: FolderSourceConfig):
        self.cfg = cfg
        self.name = cfg.name or f"folder_{safe_name(Path(cfg.path).name)}"

    def collect(self, raw_dir: Path, workers: int) -> tuple[list[RawPiece], list[Rejection]]:
        del raw_dir, workers  # nothing to convert
        root = Path(self.cfg.path)
        if not root.is_dir():
            raise FileNotFoundError(f"folder source '{self.name}': {root} is not a directory")
        pieces, rejected = [], []
        files = sorted(f for f in root.rglob("*") if f.is_file())
        digest = {f: sha256_file(f) for f in files if f.suffix.lower() in MIDI_SUFFIXES}
        kept: dict[str, Path] = {}  # MIDI bytes' hash -> the file kept: the one nearest the folder's top
        for f in sorted(digest, key=lambda f: (len(f.relative_to(root).parts), f)):
            kept.setdefault(digest[f], f)
        for f in files:
            rel = f.relative_to(root)
            if f.suffix.lower() not in MIDI_SUFFIXES:
                rejected.append(Rejection(str(f), f"not a MIDI file (suffix '{f.suffix}')", self.name))
                continue
            first = kept[digest[f]]
            if first != f:
                rejected.append(Rejection(str(f), f"duplicate: the same bytes as {first.relative_to(root)}", self.name))
                continue
            pieces.append(
                RawPiece(
                    piece_id=f"{self.name}/{safe_name(str(rel.with_suffix('')))}",
                    source=self.name,
                    original_path=str(f),
                    midi_path=str(f),
                    group=f"{self.name}/{normalise_title(f.stem)}",
                    style=self.cfg.style,
                    meta={"title": f.stem},
                )
            )
        return pieces, rejected
