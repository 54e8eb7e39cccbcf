"""Does DPO help? Aligned vs supervised planner on held-out conditions, with two guards.

    .venv/bin/python -m bench.eval_alignment [--aligned checkpoints/aligned/tiny/best.pt] [--conditions 64]

For each held-out (test split) piece: its conditions and first 2 bars prompt both planners, each
samples ``--samples`` 4-bar continuations with the same seeds, and the heuristic scorer
(src/data/scoring.py) judges them. Reported:
- win rate: share of (condition, sample) where the aligned continuation scores higher (ties 1/2);
  goal >= 70%;
- distribution guard: per feature (scale consistency, grid alignment, groove, pitch range,
  polyphony, onsets/s, empty bars, silence, repetition), the overlapping area of the histogram
  of generated continuations with that of the real continuations of the same pieces, averaged;
  may fall by at most 0.05;
- diversity guard: distinct 4-grams over all 4-grams of all continuations; may fall by at most 0.05.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import machine, table
from src.data.planner_dataset import caption_embeddings
from src.data.preferences import bar_token_starts
from src.data.scoring import score_tokens
from src.data.token_store import TokenStore
from src.models.alignment import OnPolicyConfig, sample_continuations
from src.models.builders import codec_from_checkpoint, load_planner
from src.utils.io import read_jsonl

GUARD_MARGIN = 0.05


def overlap(a: list[float], b: list[float], bins: int = 10) -> float:
    """Overlapping area of two normalised histograms on shared bins (1 = same distribution)."""
    lo, hi = min(min(a), min(b)), max(max(a), max(b))
    if hi <= lo:
        return 1.0
    ha, _ = np.histogram(a, bins, (lo, hi))
    hb, _ = np.histogram(b, bins, (lo, hi))
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def distinct_ngrams(seqs: list[np.ndarray], n: int = 4) -> float:
    grams = [tuple(s[i : i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supervised", default="checkpoints/symbolic/tiny/best.pt")
    p.add_argument("--aligned", default="checkpoints/aligned/tiny/best.pt")
    p.add_argument("--data_dir", default="data/processed/tiny")
    p.add_argument("--conditions", type=int, default=64)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default="")
    args = p.parse_args()
    models = {
        name: load_planner(path, args.data_dir)
        for name, path in (("supervised", args.supervised), ("aligned", args.aligned))
    }
    codec = codec_from_checkpoint(models["supervised"][1])
    rows = [r for r in read_jsonl(Path(args.data_dir) / "manifest.jsonl") if r["split"] == "test"]
    rows = [rows[i] for i in np.random.default_rng(args.seed).permutation(len(rows))[: args.conditions]]
    store, emb = TokenStore(args.data_dir), caption_embeddings(args.data_dir)
    cfg = OnPolicyConfig()
    scores: dict[str, list[float]] = {k: [] for k in models}
    feats: dict[str, dict[str, list[float]]] = {k: {} for k in [*models, "real"]}
    seqs: dict[str, list[np.ndarray]] = {k: [] for k in models}
    for i, row in enumerate(rows):

        def judge(ids: np.ndarray, row: dict = row) -> dict:
            return score_tokens(ids, codec.tok, row["tempo"], row["time_signature"], row["emotion"])

        for name, (model, _) in models.items():
            gen = torch.Generator().manual_seed(args.seed + i)  # the same draws for both models
            _, conts = sample_continuations(model, codec, row, store, emb, cfg, args.samples, gen)
            for c in conts:
                s = judge(c)
                scores[name].append(s["total"])
                seqs[name].append(c)
                for k, v in s["features"].items():
                    feats[name].setdefault(k, []).append(v)
        ids = store[store.row_to_item[row["row"]]].astype(np.int64)
        bs = bar_token_starts(ids, codec)
        if len(bs) > cfg.prompt_bars + cfg.continuation_bars:
            real = judge(ids[bs[cfg.prompt_bars] : bs[cfg.prompt_bars + cfg.continuation_bars]])
            for k, v in real["features"].items():
                feats["real"].setdefault(k, []).append(v)
    a, s = np.array(scores["aligned"]), np.array(scores["supervised"])
    n = min(len(a), len(s))
    win = float(((a[:n] > s[:n]) + 0.5 * (a[:n] == s[:n])).mean())
    rows_out = []
    for name in models:
        ov = {k: overlap(feats[name][k], feats["real"][k]) for k in feats["real"] if feats[name].get(k)}
        rows_out.append(
            {
                "planner": name,
                "mean_score": round(float(np.mean(scores[name])), 4),
                "feature_overlap_with_real": round(float(np.mean(list(ov.values()))), 4),
                "distinct_4grams": round(distinct_ngrams(seqs[name]), 4),
                "continuations": len(scores[name]),
            }
        )
    sup, ali = rows_out
    result = {
        "machine": machine(),
        "supervised": args.supervised,
        "aligned": args.aligned,
        "held_out_conditions": len(rows),
        "win_rate_aligned": round(win, 4),
        "goal_win_rate": 0.7,
        "distribution_guard_ok": ali["feature_overlap_with_real"] >= sup["feature_overlap_with_real"] - GUARD_MARGIN,
        "diversity_guard_ok": ali["distinct_4grams"] >= sup["distinct_4grams"] - GUARD_MARGIN,
        "guard_margin": GUARD_MARGIN,
        "rows": rows_out,
    }
    print(table(rows_out, list(rows_out[0])))
    print(f"win rate of aligned over supervised: {win:.1%} on {n} continuations ({len(rows)} held-out conditions)")
    print(
        f"guards (may drop by <= {GUARD_MARGIN}): distribution {result['distribution_guard_ok']}, "
        f"diversity {result['diversity_guard_ok']}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
