"""Aligned (log-mel, REMI+ tokens, piano roll) segments: the renderer's training pairs.

A piece is rendered with FluidSynth, analysed into a log-mel spectrogram and cut into segments
of ``segment_frames`` frames. For each segment we keep **exactly** the notes sounding in its
time window (a note that started earlier enters at the window's start; one that rings on is
cut at its end), written as a score at a reference tempo of 120 BPM so that token time is
segment time (one beat = 0.5 s), and tokenised with the planner's tokenizer. The piano roll is
rasterised from the same notes on the mel's frame grid: channel 0 holds the velocity of every
sounding note, channel 1 the velocity at onset frames (only for onsets inside the window).

Layout under ``<processed>/audio_pairs/``::

    <split>/<piece>.npz   mel [S, n_mels, F] float16, roll [S, 2, 128, F] uint8,
                          tokens [S, max_tokens] int16 (0-padded), n_tokens [S], start_frame [S]
    index.json            fingerprint, pieces per split, mel normalisation, skip counts (written last)

The same window functions serve stage 5, which renders a generated song window by window.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.data.mel import MelConfig, log_mel
from src.music.tokenizer import BOS
from src.utils.cache import cached_step, fingerprint
from src.utils.io import atomic_path
from src.utils.parallel import pool_map

log = logging.getLogger(__name__)

REFERENCE_TEMPO = 120.0  # segment tokens are written at this tempo: one beat = 0.5 s
TPQ = 480
NOTE_FIELDS = ("start", "end", "pitch", "velocity", "program", "drum")


@dataclass
class AudioPairsConfig:
    enabled: bool = False
    mel: MelConfig = field(default_factory=MelConfig)
    segment_frames: int = 256  # 4.1 s at 16 kHz / hop 256
    stride_frames: int = 256
    max_tokens: int = 256  # longer segments are skipped (and counted)
    train_pieces: int = 200  # 0 = every piece of the split
    validation_pieces: int = 20
    test_pieces: int = 0
    max_segments_per_piece: int = 12
    min_peak: float = -4.0  # a segment whose loudest log-mel bin is below this is silence, skipped
    soundfont: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.segment_frames % 8:
            raise ValueError(f"audio.segment_frames must be a multiple of 8, got {self.segment_frames}")
        if not self.stride_frames > 0:
            raise ValueError("audio.stride_frames must be positive")


# ----------------------------------------------------------------------------- notes and windows


def notes_in_seconds(score: Any) -> np.ndarray:
    """Every note of a symusic Score as rows of (start, end, pitch, velocity, program, drum), seconds."""
    sec = score.to("second")
    rows = []
    for t in sec.tracks:
        n = t.notes.numpy()
        if len(n["time"]):
            k = len(n["time"])
            rows.append(
                np.stack(
                    [
                        n["time"],
                        n["time"] + n["duration"],
                        n["pitch"],
                        n["velocity"],
                        np.full(k, t.program),
                        np.full(k, int(t.is_drum)),
                    ],
                    1,
                ).astype(np.float64)
            )
    return np.concatenate(rows) if rows else np.zeros((0, len(NOTE_FIELDS)))


def window_notes(notes: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """The notes sounding in [t0, t1), clipped to it and shifted so the window starts at 0;
    a last column says whether the note started before the window (carried over)."""
    inside = (notes[:, 0] < t1) & (notes[:, 1] > t0)
    w = notes[inside, : len(NOTE_FIELDS)]
    carried = (w[:, 0] < t0)[:, None].astype(np.float64)
    w = np.concatenate([w, carried], 1)
    w[:, 0] = np.maximum(w[:, 0], t0) - t0
    w[:, 1] = np.minimum(w[:, 1], t1) - t0
    return w


def window_score(notes: np.ndarray) -> Any:
    """Window notes (seconds from the window's start) -> a 4/4 symusic Score at 120 BPM."""
    import symusic

    score = symusic.Score(TPQ)
    score.tempos.append(symusic.Tempo(0, REFERENCE_TEMPO))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    ticks_per_s = TPQ * REFERENCE_TEMPO / 60
    for program, drum in sorted({(int(p), int(d)) for p, d in notes[:, 4:6]}):
        track = symusic.Track(program=program, is_drum=bool(drum))
        for s, e, pitch, vel in notes[(notes[:, 4] == program) & (notes[:, 5] == drum), :4]:
            start = int(round(s * ticks_per_s))
            track.notes.append(symusic.Note(start, max(1, int(round(e * ticks_per_s)) - start), int(pitch), int(vel)))
        score.tracks.append(track)
    return score


def window_tokens(tokenizer: Any, notes: np.ndarray) -> np.ndarray:
    """BOS + the BPE ids of the window's notes (an empty window is just BOS, so even a silent window
    gives the renderer a non-empty memory)."""
    if len(notes) == 0:
        return np.array([BOS], dtype=np.int64)
    seq = tokenizer.encode(window_score(notes))
    return np.concatenate([[BOS], np.asarray(seq.ids, dtype=np.int64)])


def piano_roll(notes: np.ndarray, frames: int, mel: MelConfig) -> np.ndarray:
    """Window notes -> uint8 [2, 128, frames] on the mel's frame grid (frame k is centred k * hop / sr
    after the window's start): channel 0 the velocity of sounding notes, channel 1 of onsets (a note
    carried over from before the window has no onset in it)."""
    roll = np.zeros((2, 128, frames), dtype=np.uint8)
    fps = mel.sample_rate / mel.hop_length
    for s, e, pitch, vel, _, _, carried in notes:
        p, v = int(pitch), int(vel)
        a = max(0, int(np.ceil(s * fps - 1e-6)))  # frames whose centre lies in [s, e), at least one
        b = min(frames, max(int(np.ceil(e * fps - 1e-6)), a + 1))
        roll[0, p, a:b] = np.maximum(roll[0, p, a:b], v)
        f = int(round(s * fps))
        if not carried and f < frames:
            roll[1, p, f] = max(roll[1, p, f], v)
    return roll


# ----------------------------------------------------------------------------- building pairs

_TOK: Any = None


def _init_worker(tok_path: str) -> None:
    global _TOK
    from src.music.tokenizer import load_tokenizer

    _TOK = load_tokenizer(tok_path)


def piece_pairs(midi_path: str, cfg: AudioPairsConfig, tokenizer: Any) -> tuple[dict[str, np.ndarray], Counter]:
    """Render one piece and cut it into aligned segments; also count the segments skipped and why."""
    import symusic

    from src.data.render import render_midi

    notes = notes_in_seconds(symusic.Score(midi_path))
    end = float(notes[:, 1].max()) if len(notes) else 0.0
    audio = render_midi(midi_path, cfg.mel.sample_rate, cfg.soundfont, end + 0.5)
    mel = log_mel(audio, cfg.mel).numpy()  # [n_mels, T]
    F = cfg.segment_frames
    starts = list(range(0, mel.shape[1] - F + 1, cfg.stride_frames))
    if len(starts) > cfg.max_segments_per_piece:  # evenly spread over the piece
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, cfg.max_segments_per_piece).round().astype(int)]
    skipped: Counter = Counter()
    out: dict[str, list] = {"mel": [], "roll": [], "tokens": [], "n_tokens": [], "start_frame": []}
    for f0 in starts:
        seg = mel[:, f0 : f0 + F]
        if seg.max() < cfg.min_peak:
            skipped["silent"] += 1
            continue
        t0 = cfg.mel.frames_to_seconds(f0)
        w = window_notes(notes, t0, t0 + cfg.mel.frames_to_seconds(F))
        ids = window_tokens(tokenizer, w)
        if len(ids) > cfg.max_tokens:
            skipped["too many tokens"] += 1
            continue
        out["mel"].append(seg.astype(np.float16))
        out["roll"].append(piano_roll(w, F, cfg.mel))
        out["tokens"].append(np.pad(ids, (0, cfg.max_tokens - len(ids))).astype(np.int16))
        out["n_tokens"].append(len(ids))
        out["start_frame"].append(f0)
    arrays = {k: np.asarray(v) for k, v in out.items()}
    if not len(arrays["mel"]):
        arrays = {
            "mel": np.zeros((0, cfg.mel.n_mels, F), np.float16),
            "roll": np.zeros((0, 2, 128, F), np.uint8),
            "tokens": np.zeros((0, cfg.max_tokens), np.int16),
            "n_tokens": np.zeros(0, np.int64),
            "start_frame": np.zeros(0, np.int64),
        }
    return arrays, skipped


def _pair_job(job: tuple[str, str, AudioPairsConfig]) -> tuple[str, dict[str, int], str]:
    midi_path, out_path, cfg = job
    try:
        arrays, skipped = piece_pairs(midi_path, cfg, _TOK)
    except Exception as e:  # one unrenderable piece is listed, not fatal
        return out_path, {}, f"{type(e).__name__}: {e}"[:200]
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return out_path, {"segments": len(arrays["mel"]), **skipped}, ""


def pairs_fingerprint(cfg: AudioPairsConfig, tok_hash: str) -> str:
    from src.data.render import find_soundfont

    sf2 = Path(find_soundfont(cfg.soundfont))
    return fingerprint(dataclasses.asdict(cfg), tok_hash, sf2.name, sf2.stat().st_size)


def build_audio_pairs(
    cfg: AudioPairsConfig, rows: list[dict], tok_path: Path, tok_hash: str, out_dir: Path, workers: int
) -> dict[str, Any]:
    """Render the configured pieces of each split into ``out_dir`` (resumable per piece); ``index.json``
    is the cached step's record."""
    fp = pairs_fingerprint(cfg, tok_hash)
    run = lambda: render_pairs(cfg, rows, tok_path, out_dir, workers, fp)  # noqa: E731
    return cached_step("audio pairs", out_dir / "index.json", fp, run)


def render_pairs(
    cfg: AudioPairsConfig, rows: list[dict], tok_path: Path, out_dir: Path, workers: int, fp: str
) -> dict[str, Any]:
    stamp = out_dir / "fingerprint"  # the settings the finished pieces were made with (a run may stop midway)
    if stamp.is_file() and stamp.read_text() != fp:  # settings changed: start over
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp)
    rng = np.random.default_rng(cfg.seed)
    chosen: dict[str, list[dict]] = {}
    for split, n in (("train", cfg.train_pieces), ("validation", cfg.validation_pieces), ("test", cfg.test_pieces)):
        pool = [r for r in rows if r["split"] == split]
        if split == "test" and n == 0:
            continue
        chosen[split] = [pool[i] for i in sorted(rng.permutation(len(pool))[: n or len(pool)])]
    jobs, seen = [], {}
    for split, pieces in chosen.items():
        (out_dir / split).mkdir(exist_ok=True)
        for r in pieces:
            path = out_dir / split / (r["id"].replace("/", "__") + ".npz")
            seen[str(path)] = (split, r["id"])
            if not path.is_file():
                jobs.append((r["midi_path"], str(path), cfg))
    log.info("audio pairs: %d pieces to render (%d cached)", len(jobs), len(seen) - len(jobs))
    results = pool_map(_pair_job, jobs, workers, "render pairs", _init_worker, (str(tok_path),), start_method="spawn")
    failed = [{"piece": seen[p][1], "reason": err} for p, _, err in results if err]
    for p, _, err in results:
        if err:
            seen.pop(p)
    # the index covers every piece, cached ones included (their counts are re-read)
    pieces: dict[str, list[dict]] = {s: [] for s in chosen}
    skipped: Counter = Counter()
    total, sq = 0.0, 0.0
    n_frames = 0
    token_lengths: list[int] = []
    for path, (split, pid) in seen.items():
        with np.load(path) as z:
            n = len(z["n_tokens"])
            pieces[split].append({"id": pid, "file": str(Path(path).relative_to(out_dir)), "segments": n})
            token_lengths += z["n_tokens"].tolist()
            if split == "train" and n:
                m = z["mel"].astype(np.float64)
                total, sq, n_frames = total + m.sum(), sq + (m**2).sum(), n_frames + m.size
    for _, counts, _err in results:
        skipped.update({k: v for k, v in counts.items() if k != "segments"})
    if not n_frames:
        raise RuntimeError("no training audio pairs were made; check the soundfont and the audio settings")
    mean = total / n_frames
    return {
        "mel": dataclasses.asdict(cfg.mel),
        "segment_frames": cfg.segment_frames,
        "max_tokens": cfg.max_tokens,
        "mel_mean": float(mean),
        "mel_std": float(np.sqrt(max(sq / n_frames - mean**2, 1e-12))),
        "pieces": pieces,
        "segments": {s: sum(p["segments"] for p in v) for s, v in pieces.items()},
        "tokens_per_segment_mean": round(float(np.mean(token_lengths)), 1) if token_lengths else 0,
        "tokens_per_segment_max": int(max(token_lengths, default=0)),
        "skipped_this_run": dict(skipped),
        "failed": failed,
    }


def load_pairs_index(processed_dir: str | Path) -> dict[str, Any]:
    path = Path(processed_dir) / "audio_pairs" / "index.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no audio pairs; create them with: bash 01_prepare_data.sh "
            "(audio.enabled: true in the data config)"
        )
    return json.loads(path.read_text())
