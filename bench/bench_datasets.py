"""Stage 1 on a public dataset: POP909 prepared from a local copy through the download path,
with per-file and per-note rates, and from them the time and disk for MAESTRO v3 and Lakh clean.

    .venv/bin/python -m bench.bench_datasets --pop909 ../shared/datasets/POP909 [--json out.json]

The local folder is packed as the publisher's archive into a mirror folder, then stage 1 runs
with the small preset's settings on POP909 alone (``--mirror``: verify, extract, analyse, train
the tokeniser, tokenise; the renderer's audio pairs and the preference pairs are left out, as
they are capped per preset rather than per dataset). Estimates scale the measured rates by the
publishers' own figures; they assume the same 2 worker processes.

Also: stage 1's per-source table with POP909 beside ``--beside``'s music21 collections (their
conversion cached under data/raw), and, over MusicCaps' whole caption table, how often a
caption's own words set style, emotion and tempo for ``05_generate_song.py --prompts_csv``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import zipfile
from pathlib import Path

from bench.common import machine, table
from src.data.pop909_source import pack_local_copy
from src.data.prepare import DataConfig, prepare
from src.utils.config import load_config
from src.utils.io import read_jsonl, write_json

# the publishers' figures (MAESTRO: magenta.tensorflow.org/datasets/maestro; archive size as recorded
# by MusPy). Lakh clean: "more than 17,000 files" (lakhcleananalysis.sourceforge.io); its archive size
# as recorded by others (the publisher gives none); notes per file unknown, so per-file rates are used.
MAESTRO = {"files": 1276, "notes": 7_040_000, "archive_bytes": 58_416_533}
LAKH_CLEAN = {"files": 17_000, "archive_bytes": 234_283_029}


def musiccaps_coverage(csv_path: str) -> dict | None:
    """How often a caption's own words set each control (05 --prompts_csv), over the whole table."""
    import dataclasses

    from src.data.musiccaps import controls_for, read_prompts, summary
    from src.generation.config import GenerationConfig

    if not Path(csv_path).is_file():
        return None
    default_tempo = load_config(GenerationConfig, "config/generation.yaml", []).default_tempo
    rows = [dataclasses.asdict(controls_for(p, "POP", "HAPPY", default_tempo)) for p in read_prompts(csv_path)]
    return summary(rows)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pop909", default="../shared/datasets/POP909")
    ap.add_argument("--config", default="config/data_small.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default="docs/results/datasets_pop909.json")
    ap.add_argument("--bandwidth_mb_s", type=float, default=10.0, help="for the download-time estimates")
    ap.add_argument("--beside", default="config/data_tiny.yaml", help="also POP909 beside this config's music21 corpus")
    ap.add_argument("--musiccaps", default="../shared/datasets/musiccaps/musiccaps-public.csv")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        archive_bytes = pack_local_copy(args.pop909, tmp / "mirror").stat().st_size
        cfg = load_config(DataConfig, args.config, [])
        cfg.music21.enabled = cfg.maestro.enabled = cfg.lakh.enabled = False
        cfg.pop909.enabled = True
        cfg.audio.enabled = cfg.preference.enabled = False
        cfg.raw_dir, cfg.processed_dir = str(tmp / "raw"), str(tmp / "processed")
        cfg.mirror, cfg.workers = str(tmp / "mirror"), args.workers
        t = time.time()
        summary = prepare(cfg)
        total = time.time() - t
        t = time.time()
        prepare(cfg)  # the rerun: everything cached
        rerun = time.time() - t
        rows = read_jsonl(Path(cfg.processed_dir) / "manifest.jsonl")
        extracted = du(Path(cfg.raw_dir) / "pop909" / "extracted")
        midis = [Path(r["midi_path"]) for r in rows]
        deflated = tmp / "deflated.zip"
        with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf:
            for m in midis:
                zf.write(m, m.name)
        midi_bytes, zip_bytes = sum(m.stat().st_size for m in midis), deflated.stat().st_size
        tokens_disk = du(Path(cfg.processed_dir) / "tokens")
        beside = None
        if args.beside:  # the summary with several sources: the music21 corpus (cached under data/raw) + POP909
            both = load_config(DataConfig, args.beside, [])
            both.pop909.enabled, both.audio.enabled, both.preference.enabled = True, False, False
            both.processed_dir, both.mirror, both.workers = str(tmp / "beside"), cfg.mirror, args.workers
            t = time.time()
            beside = {"config": args.beside, "by_source_style": prepare(both)["by_source_style"]}
            beside["seconds"] = round(time.time() - t, 1)
    steps = summary["step_seconds"]
    files, notes = summary["pieces"] + summary["rejected"], sum(r["n_notes"] for r in rows)
    per_file = (steps["labels"] + steps["tokens"]) / files
    per_knote = (steps["labels"] + steps["tokens"]) / (notes / 1000)
    tokens_per_note = summary["tokens"] / notes
    ratio = midi_bytes / zip_bytes  # MIDI bytes per deflated byte
    tok_per_knote = steps["tokenizer"] / (notes / 1000)  # BPE training time grows with the corpus
    mb_s = args.bandwidth_mb_s
    est = {
        "maestro": {
            **MAESTRO,
            "analyse_tokenise_s": round(MAESTRO["notes"] / 1000 * per_knote),
            "analyse_tokenise_s_by_files": round(MAESTRO["files"] * per_file),
            "tokenizer_s": round(MAESTRO["notes"] / 1000 * tok_per_knote),
            "download_s": round(MAESTRO["archive_bytes"] / 1e6 / mb_s),
            "disk_archive_mb": round(MAESTRO["archive_bytes"] / 1e6, 1),
            "disk_extracted_mb": round(MAESTRO["archive_bytes"] * ratio / 1e6, 1),
            "disk_tokens_mb": round(MAESTRO["notes"] * tokens_per_note * 2 / 1e6, 1),
        },
        "lakh_clean": {
            **LAKH_CLEAN,
            "analyse_tokenise_s": round(LAKH_CLEAN["files"] * per_file),
            "tokenizer_s": round(LAKH_CLEAN["files"] / files * steps["tokenizer"]),
            "download_s": round(LAKH_CLEAN["archive_bytes"] / 1e6 / mb_s),
            "disk_archive_mb": round(LAKH_CLEAN["archive_bytes"] / 1e6, 1),
            "disk_extracted_mb": round(LAKH_CLEAN["archive_bytes"] * ratio / 1e6, 1),
        },
    }
    result = {
        "machine": machine(),
        "workers": args.workers,
        "config": args.config,
        "pop909": {
            "files": files,
            "pieces": summary["pieces"],
            "rejected": summary["rejected"],
            "rejected_reasons": summary["rejected_reasons"],
            "by_source_style": summary["by_source_style"],
            "by_split": summary["by_split"],
            "by_emotion": summary["by_emotion"],
            "key_annotated": summary["key_annotated"],
            "notes": notes,
            "tokens": summary["tokens"],
            "tokens_per_piece_mean": summary["tokens_per_piece_mean"],
            "bpe_compression": summary["bpe_compression"],
            "step_seconds": steps,
            "total_s": round(total, 1),
            "rerun_s": round(rerun, 1),
            "archive_mb": round(archive_bytes / 1e6, 1),
            "extracted_mb": round(extracted / 1e6, 1),
            "tokens_disk_mb": round(tokens_disk / 1e6, 2),
            "midi_deflate_ratio": round(ratio, 2),
        },
        "rates": {
            "analyse_tokenise_s_per_file": round(per_file, 4),
            "analyse_tokenise_s_per_1k_notes": round(per_knote, 4),
            "tokens_per_note": round(tokens_per_note, 3),
            "tokenizer_s_per_1k_notes": round(tok_per_knote, 4),
            "assumed_bandwidth_mb_s": mb_s,
        },
        "estimates": est,
        "beside_music21": beside,
        "musiccaps_controls": musiccaps_coverage(args.musiccaps),
    }
    write_json(args.json, result)
    print(json.dumps(result, indent=1))
    cells = [{"source / style": k, **v} for k, v in summary["by_source_style"].items()]
    print(table(cells, ["source / style", "pieces", "tokens"]))


if __name__ == "__main__":
    main()
