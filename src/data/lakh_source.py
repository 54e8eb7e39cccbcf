"""The Lakh MIDI Dataset's clean subset (Raffel 2016; CC BY 4.0): ``clean_midi/<Artist>/<Title>[.N].mid``.

Style comes from genre labels where they can be had: a file's MD5 is its id in LMD (LMD-full
names files by their MD5), ``match_scores.json`` maps Million Song Dataset tracks to those ids,
and the tagtraum CD2C annotations (Schreiber 2015) give a track's genre. The best-scoring match
decides. Genres map to styles through ``genre_map``; a file without a genre, or with a genre
the map does not name, is unlabelled (its style condition is dropped, never guessed). Every
version of one artist/title (``Title.mid``, ``Title.1.mid``...) is one group, so one split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from src.data.downloads import RemoteFile, fetch, fetch_and_extract
from src.data.sources import RawPiece, Rejection, normalise_title, safe_name
from src.music.vocab import STYLES
from src.utils.io import atomic_path

log = logging.getLogger(__name__)
_LMD = "https://hog.ee.columbia.edu/craffel/lmd"


@dataclass
class LakhConfig:
    enabled: bool = False
    archive: RemoteFile = field(default_factory=lambda: RemoteFile(url=f"{_LMD}/clean_midi.tar.gz"))
    genres: bool = True  # fetch the match table and tagtraum genres; false: every piece unlabelled
    match_scores: RemoteFile = field(default_factory=lambda: RemoteFile(url=f"{_LMD}/match_scores.json"))
    tagtraum: RemoteFile = field(
        default_factory=lambda: RemoteFile(url="https://www.tagtraum.com/genres/msd_tagtraum_cd2c.cls.zip")
    )
    # tagtraum CD2C genre -> style; genres not named here stay unlabelled
    genre_map: dict[str, str] = field(
        default_factory=lambda: {
            "Pop": "POP",
            "Jazz": "JAZZ",
            "Folk": "FOLK",
            "Electronic": "ELECTRONIC",
            "New Age": "AMBIENT",
        }
    )
    max_files: int = 0  # 0 = every file

    def __post_init__(self) -> None:
        for genre, style in self.genre_map.items():
            if style not in STYLES:
                raise ValueError(f"genre_map.{genre}: style must be one of {', '.join(STYLES)}, got {style!r}")


def read_tagtraum(path: Path) -> dict[str, str]:
    """MSD track id -> genre, from a tagtraum ``.cls`` file (``#`` comments, ``TRACKID<TAB>Genre``)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        track, _, genre = line.partition("\t")
        out[track.strip()] = genre.strip()
    return out


def genre_by_md5(match_scores: dict[str, dict[str, float]], genres: dict[str, str]) -> dict[str, str]:
    """LMD file MD5 -> genre of its best-scoring matched MSD track that has one."""
    best: dict[str, tuple[float, str]] = {}
    for track, matches in match_scores.items():
        genre = genres.get(track)
        if genre is None:
            continue
        for md5, score in matches.items():
            if md5 not in best or score > best[md5][0]:
                best[md5] = (score, genre)
    return {md5: g for md5, (_, g) in best.items()}


class LakhSource:
    name = "lakh"

    def __init__(self, cfg: LakhConfig, mirror: str = ""):
        self.cfg, self.mirror = cfg, mirror

    def genres(self, raw_dir: Path) -> dict[str, str]:
        if not self.cfg.genres:
            return {}
        downloads = Path(raw_dir) / self.name / "downloads"
        scores = json.loads(fetch(self.cfg.match_scores, downloads, self.mirror).read_text())
        with zipfile.ZipFile(fetch(self.cfg.tagtraum, downloads, self.mirror)) as zf:
            cls = [n for n in zf.namelist() if n.endswith(".cls")]
            if len(cls) != 1:
                raise RuntimeError(f"{self.cfg.tagtraum.filename}: expected one .cls file, found {cls}")
            target = downloads / Path(cls[0]).name
            with atomic_path(target) as tmp:
                tmp.write_bytes(zf.read(cls[0]))
        return genre_by_md5(scores, read_tagtraum(target))

    def collect(self, raw_dir: Path, workers: int) -> tuple[list[RawPiece], list[Rejection]]:
        del workers
        root = fetch_and_extract(self.cfg.archive, raw_dir, self.name, self.mirror)
        genre_of = self.genres(raw_dir)
        files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in (".mid", ".midi"))
        if self.cfg.max_files:
            files = files[: self.cfg.max_files]
        pieces, rejected, seen = [], [], set()
        for f in files:
            artist, title = f.parent.name, f.stem
            md5 = hashlib.md5(f.read_bytes()).hexdigest()
            genre = genre_of.get(md5)
            piece_id = f"lakh/{safe_name(artist)}/{safe_name(title)}"
            if piece_id in seen:  # two names that differ only in unsafe characters
                piece_id += f"_{md5[:8]}"
            seen.add(piece_id)
            pieces.append(
                RawPiece(
                    piece_id=piece_id,
                    source=self.name,
                    original_path=str(f),
                    midi_path=str(f),
                    group=f"lakh/{normalise_title(artist)}/{normalise_title(title)}",
                    style=self.cfg.genre_map.get(genre or ""),
                    meta={"title": f"{artist} - {title}", "genre": genre, "lmd_md5": md5},
                )
            )
        n_labelled = sum(p.style is not None for p in pieces)
        log.info("lakh: %d of %d files have a mapped genre; the rest are unlabelled", n_labelled, len(pieces))
        return pieces, rejected
