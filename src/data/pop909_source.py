"""POP909 (Wang et al., ISMIR 2020): 909 Chinese pop songs arranged for piano, style POP.

Downloaded from the publisher's repository (github.com/music-x-lab/POP909-Dataset, MIT) as the
archive of a pinned commit. Each song ``POP909/NNN/NNN.mid`` comes with ``key_audio.txt``
(``start end Tonic:maj|min`` per key region): the key that covers the most time is the piece's
key label instead of the estimate. The ``versions/`` folders (other arrangements) are not used.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from src.data.downloads import RemoteFile, fetch_and_extract
from src.data.sources import RawPiece, Rejection
from src.music.theory import parse_key as parse_key_name
from src.utils.io import atomic_path

POP909_COMMIT = "efa0bce09b0b8dc241957412270aba6740bd0bf5"


@dataclass
class POP909Config:
    enabled: bool = False
    archive: RemoteFile = field(
        default_factory=lambda: RemoteFile(
            url=f"https://github.com/music-x-lab/POP909-Dataset/archive/{POP909_COMMIT}.zip",
            filename=f"POP909-Dataset-{POP909_COMMIT}.zip",
        )
    )
    pattern: str = "*/POP909/[0-9][0-9][0-9]/[0-9][0-9][0-9].mid"  # inside the extracted archive
    max_files: int = 0  # 0 = every song


def parse_key(text: str) -> tuple[int, str]:
    """POP909's notation: 'Gb:maj' -> (6, 'major'); ValueError on anything else."""
    name, sep, quality = text.strip().partition(":")
    if not sep or quality not in ("maj", "min"):
        raise ValueError(f"unknown key {text!r}")
    try:
        return parse_key_name(f"{name} {quality}")
    except ValueError:
        raise ValueError(f"unknown key {text!r}") from None


def main_key(path: Path) -> tuple[int, str]:
    """The annotated key covering the most time in a ``key_audio.txt``."""
    spans: dict[tuple[int, str], float] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"line {n}: expected 'start end key', got {line!r}")
        key = parse_key(parts[2])
        spans[key] = spans.get(key, 0.0) + float(parts[1]) - float(parts[0])
    if not spans:
        raise ValueError("no key regions")
    return max(spans.items(), key=lambda kv: kv[1])[0]


class POP909Source:
    name = "pop909"

    def __init__(self, cfg: POP909Config, mirror: str = ""):
        self.cfg, self.mirror = cfg, mirror

    def collect(self, raw_dir: Path, workers: int) -> tuple[list[RawPiece], list[Rejection]]:
        del workers  # the files are MIDI already
        root = fetch_and_extract(self.cfg.archive, raw_dir, self.name, self.mirror)
        files = sorted(root.glob(self.cfg.pattern))
        if not files:
            raise RuntimeError(f"pop909: no files match {self.cfg.pattern!r} under {root}")
        if self.cfg.max_files:
            files = files[: self.cfg.max_files]
        pieces, rejected = [], []
        for f in files:
            meta: dict = {"title": f"POP909 {f.stem}"}
            key_file = f.parent / "key_audio.txt"
            try:
                meta["key"] = list(main_key(key_file))
            except (OSError, ValueError) as e:  # the piece stays; its key is estimated instead
                rejected.append(Rejection(str(key_file), f"key annotation unusable, key estimated: {e}", self.name))
            pieces.append(
                RawPiece(
                    piece_id=f"pop909/{f.stem}",
                    source=self.name,
                    original_path=str(f),
                    midi_path=str(f),
                    group=f"pop909/{f.stem}",
                    style="POP",
                    meta=meta,
                )
            )
        return pieces, rejected


def pack_local_copy(folder: str | Path, out_dir: str | Path, songs: int = 0) -> Path:
    """Pack a local POP909 folder (``NNN/NNN.mid`` + annotations) as the publisher's archive of the
    pinned commit, so that ``out_dir`` can serve as ``--mirror`` on an offline machine."""
    folder, top = Path(folder), f"POP909-Dataset-{POP909_COMMIT}"
    dirs = sorted(d for d in folder.iterdir() if d.is_dir() and d.name.isdigit())
    if not dirs:
        raise FileNotFoundError(f"{folder}: no song folders (NNN/NNN.mid)")
    path = Path(out_dir) / f"{top}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(p for p in folder.iterdir() if p.is_file()):
            zf.write(f, f"{top}/{f.name}")
        for d in dirs[: songs or None]:
            for f in sorted(p for p in d.rglob("*") if p.is_file()):
                zf.write(f, f"{top}/POP909/{f.relative_to(folder).as_posix()}")
    return path
