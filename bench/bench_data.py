"""Stage 1 figures for a prepared preset: tokeniser round-trip fidelity over every piece,
tokens per piece, and the manifest's counts per style and emotion.

    .venv/bin/python -m bench.bench_data [--data_dir data/processed/tiny] [--json out.json]

Fidelity: share of notes (program, pitch, onset, duration on the tokeniser's grid) that
survive encode -> decode, over all pieces of the manifest. Splits per style. Synthetic preference
pairs (``--pairs``): per corruption, how much it changes a passage's length (rejected - chosen
tokens) and how often the rejected side is the longer one.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from symusic import Score
from tqdm import tqdm

from bench.common import machine
from src.music.tokenizer import load_tokenizer, note_multiset
from src.utils.io import read_jsonl


def pair_lengths(pairs: list[dict]) -> dict[str, dict[str, float]]:
    """Per pair source: mean (rejected - chosen) tokens, the share of pairs whose rejected side is longer, and
    the share the heuristic scorer ranks as the pair does (chosen above rejected)."""
    by: dict[str, list[tuple[int, bool]]] = {}
    for p in pairs:
        agree = p["scores"]["chosen"] > p["scores"]["rejected"]
        by.setdefault(p["source"], []).append((len(p["rejected"]) - len(p["chosen"]), agree))
    return {
        s: {
            "pairs": len(d),
            "mean_change": round(statistics.mean(x for x, _ in d), 1),
            "rejected_longer": round(sum(x > 0 for x, _ in d) / len(d), 3),
            "scorer_agrees": round(sum(a for _, a in d) / len(d), 3),
        }
        for s, d in sorted(by.items())
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default="data/processed/tiny")
    ap.add_argument("--pairs", default="data/subsets/tiny/preference_data.json")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    d = Path(args.data_dir)
    tok = load_tokenizer(d / "tokenizer.json")
    rows = read_jsonl(d / "manifest.jsonl")
    kept = total = 0
    worst = []
    for r in tqdm(rows, desc="round trip", unit="piece"):
        want = note_multiset(tok.preprocess_score(Score(r["midi_path"])))
        got = note_multiset(tok.decode(tok.encode(Path(r["midi_path"]))))
        k = sum((want & got).values())
        kept, total = kept + k, total + sum(want.values())
        worst.append((k / max(1, sum(want.values())), r["id"]))
    ntok = [r["n_tokens"] for r in rows]
    out = {
        "machine": machine(),
        "data_dir": str(d),
        "pieces": len(rows),
        "round_trip_notes_kept": round(kept / total, 5),
        "notes": total,
        "pieces_below_99pct": sum(1 for f, _ in worst if f < 0.99),
        "worst": sorted(worst)[:3],
        "tokens_per_piece_mean": round(statistics.mean(ntok), 1),
        "tokens_per_piece_median": statistics.median(ntok),
        "by_style_emotion": {
            f"{s}/{e}": n for (s, e), n in sorted(Counter((r["style"], r["emotion"]) for r in rows).items())
        },
        "by_style_split": {
            f"{s}/{p}": n for (s, p), n in sorted(Counter((r["style"], r["split"]) for r in rows).items())
        },
        "groups": len({r["group"] for r in rows}),
    }
    if Path(args.pairs).is_file():
        out["pair_lengths"] = pair_lengths(json.loads(Path(args.pairs).read_text())["pairs"])
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
