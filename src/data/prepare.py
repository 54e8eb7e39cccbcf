"""Stage 1 entry point: sources -> labelled manifest -> splits -> REMI+ BPE tokeniser -> shards.

    python -m src.data.prepare --config config/data_tiny.yaml [--set a.b=v] [--midi_dir DIR --style POP]

Every step is cached and resumable: converted MIDI under ``data/raw/``, the tokeniser and the
token shards under ``processed_dir`` with fingerprints of their inputs, so a rerun with the
same inputs only checks. Files are written atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.data.audio_pairs import AudioPairsConfig, build_audio_pairs
from src.data.folder_source import FolderSource, FolderSourceConfig
from src.data.labels import LabelConfig, RejectedPiece, analyse, caption
from src.data.lakh_source import LakhConfig, LakhSource
from src.data.maestro_source import MaestroConfig, MaestroSource
from src.data.music21_source import Music21Source, Music21SourceConfig
from src.data.pop909_source import POP909Config, POP909Source
from src.data.preferences import PreferenceConfig, build_synthetic_pairs
from src.data.sources import RawPiece, Rejection, Source
from src.data.splits import SplitConfig, ensure_held_out, split_of
from src.data.token_store import TokenStore, write_token_store
from src.music.scoring import SCORER_VERSION
from src.music.tokenizer import TokenCodec, TokenizerConfig, load_tokenizer, tokenizer_hash, train_tokenizer
from src.music.vocab import style_label
from src.utils.cache import cached_step, fingerprint
from src.utils.config import ConfigError, add_config_args, load_config, save_config
from src.utils.io import file_stamp, read_jsonl, write_json, write_jsonl, write_text
from src.utils.logging import setup_logging
from src.utils.parallel import pool_map

log = logging.getLogger("prepare")


@dataclass
class DataConfig:
    preset: str = "tiny"
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed/tiny"
    workers: int = 0  # 0 = every core
    music21: Music21SourceConfig = field(default_factory=Music21SourceConfig)
    folders: list[FolderSourceConfig] = field(default_factory=list)
    pop909: POP909Config = field(default_factory=POP909Config)  # public datasets, downloaded and verified
    maestro: MaestroConfig = field(default_factory=MaestroConfig)
    lakh: LakhConfig = field(default_factory=LakhConfig)
    mirror: str = ""  # a folder or http(s) base address holding the datasets' files (offline machines)
    labels: LabelConfig = field(default_factory=LabelConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    audio: AudioPairsConfig = field(default_factory=AudioPairsConfig)  # renderer training pairs (stage 3)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)  # synthetic DPO pairs (stage 4)
    shard_tokens: int = 50_000_000  # tokens per shard file


def build_sources(cfg: DataConfig) -> list[Source]:
    sources: list[Source] = []
    if cfg.music21.enabled and cfg.music21.collections:
        sources.append(Music21Source(cfg.music21))
    if cfg.pop909.enabled:
        sources.append(POP909Source(cfg.pop909, cfg.mirror))
    if cfg.maestro.enabled:
        sources.append(MaestroSource(cfg.maestro, cfg.mirror))
    if cfg.lakh.enabled:
        sources.append(LakhSource(cfg.lakh, cfg.mirror))
    sources += [FolderSource(f) for f in cfg.folders]
    if not sources:
        raise ConfigError("no data source: enable music21 collections, pop909, maestro or lakh, or give --midi_dir")
    return sources


def _analyse_job(job: tuple[RawPiece, LabelConfig]) -> dict[str, Any] | Rejection:
    raw, cfg = job
    try:
        return analyse(raw, cfg)
    except RejectedPiece as e:
        return Rejection(raw.original_path, str(e), raw.source)


_TOK: Any = None


def _tok_init(path: str) -> None:
    global _TOK
    _TOK = load_tokenizer(path)


def _tokenise_job(job: tuple[int, str]) -> tuple[int, np.ndarray | None, int, str]:
    row, midi_path = job
    try:
        seq = _TOK.encode(Path(midi_path), encode_ids=False)
        n_base = len(seq.ids)
        _TOK.encode_token_ids(seq)
        return row, np.asarray(seq.ids, dtype=np.uint16), n_base, ""
    except Exception as e:  # a file miditok cannot tokenise is rejected, not fatal
        return row, None, 0, f"tokenisation failed: {type(e).__name__}: {e}"[:200]


def prepare(cfg: DataConfig) -> dict[str, Any]:
    """Run stage 1; return the summary (also written to ``processed_dir/summary.json``)."""
    t0 = time.time()
    steps: dict[str, float] = {}  # seconds per step

    def lap(name: str) -> None:
        steps[name] = round(max(0.0, time.time() - t0 - sum(steps.values())), 2)

    workers = cfg.workers or os.cpu_count() or 1
    raw_dir, out = Path(cfg.raw_dir), Path(cfg.processed_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "data_config.yaml")

    # 1. sources
    pieces: list[RawPiece] = []
    rejected: list[Rejection] = []
    for src in build_sources(cfg):
        p, r = src.collect(raw_dir, workers)
        log.info("source %s: %d pieces, %d rejected", src.name, len(p), len(r))
        pieces += p
        rejected += r
    ids = Counter(p.piece_id for p in pieces)
    if dup := [i for i, n in ids.items() if n > 1]:
        raise RuntimeError(f"duplicate piece ids (first: {dup[0]}); give folder sources distinct names")

    lap("sources")

    # 2. labels and 3. splits
    results = pool_map(_analyse_job, [(p, cfg.labels) for p in pieces], workers, "analyse")
    rows: list[dict[str, Any]] = []
    for res in results:
        if isinstance(res, Rejection):
            rejected.append(res)
            continue
        res["split"] = res["split"] or split_of(res["group"], cfg.splits)
        res["caption"] = caption(res)
        rows.append(res)
    if not rows:
        raise RuntimeError(f"every one of {len(pieces)} pieces was rejected; see the reasons above")
    split_notes = ensure_held_out(rows, cfg.splits)
    for note in split_notes:
        log.warning("splits: %s", note)

    lap("labels")

    # 4. tokenizer, trained on the train split (cached by fingerprint of its inputs)
    tok_path = out / "tokenizer.json"
    train_rows = [r for r in rows if r["split"] == "train"]
    if cfg.tokenizer.max_train_pieces:
        train_rows = train_rows[: cfg.tokenizer.max_train_pieces]
    tok_fp = fingerprint(asdict(cfg.tokenizer), [(r["id"], file_stamp(r["midi_path"])) for r in train_rows])

    def train() -> dict[str, Any]:
        train_tokenizer(cfg.tokenizer, [Path(r["midi_path"]) for r in train_rows], tok_path)
        return {"train_pieces": len(train_rows)}

    cached_step("tokenizer", out / "tokenizer_state.json", tok_fp, train, outputs=[tok_path])
    tok_hash = tokenizer_hash(tok_path)

    lap("tokenizer")

    # 5. tokens (cached by tokenizer hash + every input file's stamp)
    for i, r in enumerate(rows):
        r["row"] = i
    tokens_dir = out / "tokens"
    tokens_fp = fingerprint(tok_hash, [(r["id"], file_stamp(r["midi_path"])) for r in rows])
    manifest = out / "manifest.jsonl"

    def tokenise() -> dict[str, Any]:
        jobs = [(r["row"], r["midi_path"]) for r in rows]
        encoded = pool_map(_tokenise_job, jobs, workers, "tokenise", _tok_init, (str(tok_path),))
        kept, seqs, tok_rejects = [], [], []
        for (_row, ids, n_base, err), r in zip(encoded, rows):
            if ids is None or len(ids) == 0:
                tok_rejects.append(Rejection(r["original_path"], err or "no tokens", r["source"]))
                continue
            r = {**r, "row": len(kept), "n_tokens": int(len(ids)), "n_base_tokens": n_base}
            seqs.append((r["row"], ids))
            kept.append(r)
        counts = write_token_store(tokens_dir, seqs, cfg.shard_tokens)
        write_jsonl(manifest, kept)
        return {
            "tokenizer_hash": tok_hash,
            "vocab_size": cfg.tokenizer.vocab_size,
            "rejected": [asdict(x) for x in tok_rejects],
            **counts,
        }

    meta = cached_step("token shards", tokens_dir / "meta.json", tokens_fp, tokenise, outputs=[manifest])
    # the shards' rows and counts with this run's labels (label or split settings may have changed)
    previous = read_jsonl(manifest)
    tokenised = {r["id"]: {k: r[k] for k in ("row", "n_tokens", "n_base_tokens")} for r in previous}
    kept = sorted(({**r, **tokenised[r["id"]]} for r in rows if r["id"] in tokenised), key=lambda r: r["row"])
    if kept != previous:
        write_jsonl(manifest, kept)
    rejected += [Rejection(**r) for r in meta["rejected"]]

    lap("tokens")

    # 6. aligned audio pairs for the renderer (cached per piece)
    pairs = None
    if cfg.audio.enabled:
        pairs = build_audio_pairs(cfg.audio, kept, tok_path, tok_hash, out / "audio_pairs", workers)

    lap("audio_pairs")

    # 7. synthetic preference pairs (real passage vs a corrupted copy), cached by their inputs
    prefs = None
    if cfg.preference.enabled:
        # the pairs carry each piece's labels as conditions; the file is its own record (another run may replace it)
        pref_fp = fingerprint(tokens_fp, kept, asdict(cfg.preference), SCORER_VERSION)
        record = cached_step(
            "preference pairs",
            cfg.preference.out_path,
            pref_fp,
            lambda: build_synthetic_pairs(
                cfg.preference, kept, TokenStore(out), TokenCodec.from_file(tok_path), tok_hash
            ),
        )
        prefs = record["summary"]

    write_jsonl(out / "rejected.jsonl", [asdict(r) for r in rejected])
    lap("preference_pairs")
    summary = summarise(kept, rejected, time.time() - t0, tok_hash)
    summary["step_seconds"] = steps
    summary["split_notes"] = split_notes
    if pairs is not None:
        summary["audio_segments"] = pairs["segments"]
        summary["audio_tokens_per_segment"] = pairs["tokens_per_segment_mean"]
        summary["audio_failed"] = len(pairs["failed"])
    if prefs is not None:
        summary["preference_pairs"] = prefs
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", format_summary(summary))
    return summary


def summarise(rows: list[dict], rejected: list[Rejection], seconds: float, tok_hash: str) -> dict[str, Any]:
    ntok = [r["n_tokens"] for r in rows]
    nbase = sum(r["n_base_tokens"] for r in rows)
    per: dict[str, dict[str, int]] = {}
    for r in rows:
        cell = per.setdefault(f"{r['source']} / {style_label(r['style'])}", {"pieces": 0, "tokens": 0})
        cell["pieces"] += 1
        cell["tokens"] += r["n_tokens"]
    return {
        "pieces": len(rows),
        "by_source": dict(Counter(r["source"] for r in rows)),
        "by_style": dict(Counter(style_label(r["style"]) for r in rows)),
        "by_emotion": dict(Counter(r["emotion"] for r in rows)),
        "by_split": dict(Counter(r["split"] for r in rows)),
        "by_source_style": dict(sorted(per.items())),
        "key_annotated": sum(r.get("key_source") == "annotation" for r in rows),
        "tokens": int(sum(ntok)),
        "tokens_per_piece_mean": round(statistics.mean(ntok), 1) if ntok else 0,
        "tokens_per_piece_median": float(statistics.median(ntok)) if ntok else 0,
        "bpe_compression": round(nbase / max(1, sum(ntok)), 3),
        "rejected": len(rejected),
        "rejected_reasons": dict(Counter(r.reason.split(":")[0].split(" (")[0] for r in rejected).most_common(5)),
        "seconds": round(seconds, 1),
        "tokenizer_hash": tok_hash,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = ["| what | count |", "|---|---|"]
    for key in ("by_source", "by_style", "by_emotion", "by_split", "rejected_reasons"):
        for name, n in sorted(s[key].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {key.removeprefix('by_')}: {name} | {n} |")
    lines += [
        f"| {k}: pieces, tokens | {v['pieces']}, {v['tokens']} |" for k, v in s.get("by_source_style", {}).items()
    ]
    lines += [
        f"| pieces | {s['pieces']} |",
        f"| keys from annotations | {s.get('key_annotated', 0)} |",
        f"| tokens (BPE) | {s['tokens']} (mean {s['tokens_per_piece_mean']}, "
        f"median {s['tokens_per_piece_median']} a piece) |",
        f"| BPE compression | {s['bpe_compression']} base tokens per token |",
        f"| rejected | {s['rejected']} |",
        *[f"| audio segments: {k} | {n} |" for k, n in s.get("audio_segments", {}).items()],
        *([f"| audio pieces failed | {s['audio_failed']} |"] if "audio_failed" in s else []),
        *[f"| preference pairs: {k} | {n} |" for k, n in s.get("preference_pairs", {}).get("by_source", {}).items()],
        f"| run time | {s['seconds']} s |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, "config/data_tiny.yaml")
    parser.add_argument("--midi_dir", action="append", default=[], help="extra folder of MIDI files")
    parser.add_argument("--style", action="append", default=[], help="style for each --midi_dir")
    parser.add_argument("--no_music21", action="store_true", help="skip the music21 corpus")
    parser.add_argument("--mirror", default=None, help="folder or http(s) address holding the datasets' files")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(DataConfig, args.config, args.overrides)
        if len(args.style) != len(args.midi_dir):
            raise ConfigError("give one --style (POP, CLASSICAL, ...) for each --midi_dir")
        cfg.folders += [FolderSourceConfig(path=d, style=s) for d, s in zip(args.midi_dir, args.style)]
        if args.no_music21:
            cfg.music21.enabled = False
        if args.mirror is not None:
            cfg.mirror = args.mirror
        summary = prepare(cfg)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:  # DownloadError is a RuntimeError
        log.error("%s", e)
        return 2
    print(format_summary(summary))
    print(f"artefacts in {cfg.processed_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
