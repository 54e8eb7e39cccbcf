"""The offline default corpus: music21's bundled scores converted to multi-track MIDI.

Each corpus file is converted in a worker process; multi-tune ``.abc`` files yield one piece
per tune. Every part becomes its own track with a GM program chosen from the part's
instrument or voice name. A small JSON record per corpus file (written last, atomically)
marks it done, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from src.data.sources import RawPiece, Rejection, normalise_title, safe_name
from src.music.instruments import ProgramMapConfig, program_for_name
from src.music.vocab import STYLES
from src.utils.cache import fingerprint, recorded
from src.utils.io import atomic_path, write_json

log = logging.getLogger(__name__)
TPQ = 480  # ticks per quarter note of the written MIDI
CONVERTER_VERSION = 3  # bump when the conversion or its record changes: invalidates caches


@dataclass
class CorpusCollection:
    """A slice of music21's corpus: files matching ``pattern`` (glob under the corpus root)."""

    name: str
    style: str
    pattern: str
    max_files: int = 0  # 0 = every matching file
    default_tempo: float = 100.0  # used when the score has no metronome mark
    default_program: int = 0  # used when no part name matches the program map

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if not 20.0 <= self.default_tempo <= 400.0:
            raise ValueError(f"default_tempo out of range: {self.default_tempo}")


@dataclass
class Music21SourceConfig:
    enabled: bool = True
    collections: list[CorpusCollection] = field(default_factory=list)
    programs: ProgramMapConfig = field(default_factory=ProgramMapConfig)
    expand_repeats: bool = True
    default_velocity: int = 80


def corpus_root() -> Path:
    from music21 import corpus

    return Path(corpus.__file__).parent  # .../site-packages/music21/corpus


def corpus_name(path: Path, with_suffix: bool = True) -> str:
    """A corpus file's name inside its collection folder: 'bwv66.6.mxl', 'opus1no1/movement1.mxl'
    (nested collections such as Haydn's have many files called movement1.mxl)."""
    rel = path.relative_to(corpus_root())
    inner = Path(*rel.parts[1:]) if len(rel.parts) > 1 else rel
    return (inner if with_suffix else inner.with_suffix("")).as_posix()


def corpus_files(coll: CorpusCollection) -> list[Path]:
    files = sorted(corpus_root().glob(coll.pattern))
    return files[: coll.max_files] if coll.max_files else files


def _first(stream: Any, cls_name: str) -> Any:
    found = stream.recurse().getElementsByClass(cls_name)
    return found[0] if len(found) else None


def score_to_midi(score: Any, coll: CorpusCollection, cfg: Music21SourceConfig, out: Path) -> dict:
    """Write one music21 score as a MIDI file; return what we know of it (title, tempo...)."""
    from music21 import repeat
    from music21.exceptions21 import StreamException
    from symusic import Note, Score, Tempo, TimeSignature, Track

    expanded = False
    if cfg.expand_repeats:
        try:
            score = score.expandRepeats()
            expanded = True
        except (repeat.ExpanderException, StreamException, IndexError, AttributeError) as e:  # keep as written
            log.debug("repeats not expanded in %s: %s", out.name, e)
    mark = _first(score, "MetronomeMark")
    qpm = float(mark.getQuarterBPM()) if mark is not None and mark.getQuarterBPM() else None
    ts = _first(score, "TimeSignature")
    num, den = (ts.numerator, ts.denominator) if ts is not None else (4, 4)

    midi = Score(TPQ)
    midi.tempos.append(Tempo(0, qpm or coll.default_tempo))
    midi.time_signatures.append(TimeSignature(0, num, den))
    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    names = []
    for part in parts:
        measures = part.getElementsByClass("Measure")
        pickup = float(measures[0].paddingLeft) if len(measures) else 0.0  # anacrusis
        name = part.partName or (part.getInstrument().instrumentName if part.getInstrument() else "")
        program = program_for_name(name, cfg.programs, coll.default_program)
        track = Track(name=name or coll.name, program=program, is_drum=False)
        for n in part.stripTies().flatten().notes:
            ql = float(n.duration.quarterLength)
            if ql <= 0:  # grace notes have no duration
                continue
            start = round((float(n.offset) + pickup) * TPQ)
            vel = n.volume.velocity if n.volume.velocity is not None else cfg.default_velocity
            for p in n.pitches:
                if 0 <= p.midi <= 127:
                    track.notes.append(Note(start, max(1, round(ql * TPQ)), p.midi, int(vel)))
        if len(track.notes):
            midi.tracks.append(track)
            names.append(name)
    with atomic_path(out) as tmp:
        midi.dump_midi(str(tmp))
    title = score.metadata.title if score.metadata is not None else None
    return {
        "title": title or "",
        "parts": names,
        "tempo_marked": qpm is not None,
        "repeats_expanded": expanded,
    }


def convert_file(job: tuple[str, dict, dict, str]) -> dict:
    """Worker: convert one corpus file (maybe several tunes); write its done-record."""
    from music21 import converter

    path_s, coll_d, cfg_d, out_dir_s = job
    path, out_dir = Path(path_s), Path(out_dir_s)
    coll = CorpusCollection(**coll_d)
    cfg = Music21SourceConfig(
        enabled=True,
        programs=ProgramMapConfig(**cfg_d["programs"]),
        expand_repeats=cfg_d["expand_repeats"],
        default_velocity=cfg_d["default_velocity"],
    )
    record: dict[str, Any] = {
        "path": path_s,
        "collection": coll.name,
        "fingerprint": cfg_d["fingerprint"],
        "pieces": [],
        "rejected": [],
    }
    try:
        parsed = converter.parse(path)
    except Exception as e:  # music21 raises many unrelated types for bad scores
        record["rejected"].append(
            {
                "path": path.relative_to(corpus_root()).as_posix(),
                "reason": f"music21 parse failed: {type(e).__name__}: {e}"[:300],
            }
        )
        parsed = None
    if parsed is not None:
        scores = list(parsed.scores) if hasattr(parsed, "scores") else [parsed]
        for i, score in enumerate(scores):
            suffix = f"-{i:03d}" if len(scores) > 1 else ""
            stem = safe_name(corpus_name(path, with_suffix=False)) + suffix
            out = out_dir / f"{stem}.mid"
            rel = path.relative_to(corpus_root()).as_posix()
            where = f"{rel}#{i}" if suffix else rel
            try:
                meta = score_to_midi(score, coll, cfg, out)
            except Exception as e:  # one bad tune never stops the file or the run
                record["rejected"].append(
                    {"path": where, "reason": f"conversion failed: {type(e).__name__}: {e}"[:300]}
                )
                continue
            title = meta["title"]
            group = (
                normalise_title(title)
                if len(normalise_title(title)) >= 4
                else f"{coll.name}/{normalise_title(path.stem)}{suffix}"
            )
            record["pieces"].append(
                {
                    "piece_id": f"music21/{coll.name}/{stem}",
                    "original_path": where,
                    "midi_path": str(out),
                    "group": group,
                    "meta": meta,
                }
            )
    write_json(out_dir / "_done" / f"{safe_name(corpus_name(path))}.json", record)
    return record


class Music21Source:
    """music21's bundled corpus (CLASSICAL and FOLK collections), converted in parallel."""

    name = "music21"

    def __init__(self, cfg: Music21SourceConfig):
        self.cfg = cfg

    def collect(self, raw_dir: Path, workers: int) -> tuple[list[RawPiece], list[Rejection]]:
        from dataclasses import asdict

        cfg_d = {
            "programs": asdict(self.cfg.programs),
            "expand_repeats": self.cfg.expand_repeats,
            "default_velocity": self.cfg.default_velocity,
        }
        # A cached conversion is reused only if it was made with the same settings.
        records: list[dict] = []
        jobs: list[tuple[str, dict, dict, str]] = []
        for coll in self.cfg.collections:
            out_dir = raw_dir / "music21" / safe_name(coll.name)
            fp = fingerprint(CONVERTER_VERSION, asdict(coll), cfg_d)[:16]
            for f in corpus_files(coll):
                done = out_dir / "_done" / f"{safe_name(corpus_name(f))}.json"
                rec = recorded(done, fp)
                if rec is not None:
                    records.append(rec)
                else:
                    jobs.append((str(f), asdict(coll), {**cfg_d, "fingerprint": fp}, str(out_dir)))
        log.info("music21: %d corpus files cached, %d to convert", len(records), len(jobs))
        by_name = {c.name: c for c in self.cfg.collections}
        if jobs:
            jobs.sort(key=lambda j: -Path(j[0]).stat().st_size)  # big multi-tune files first: balanced workers
            ctx = mp.get_context("fork")
            with ctx.Pool(max(1, workers)) as pool:
                it = pool.imap_unordered(convert_file, jobs, chunksize=4)
                records += tqdm(it, total=len(jobs), desc="music21 -> MIDI", unit="file")
        pieces, rejected = [], []
        for rec in records:
            style = by_name[rec["collection"]].style
            for p in rec["pieces"]:
                pieces.append(RawPiece(source=self.name, style=style, **p))
            rejected += [Rejection(source=self.name, **r) for r in rec["rejected"]]
        pieces.sort(key=lambda p: p.piece_id)
        return pieces, rejected
