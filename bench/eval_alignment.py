"""Does DPO help? Aligned vs supervised planner on held-out conditions, with two guards.

    .venv/bin/python -m bench.eval_alignment [--aligned checkpoints/aligned/tiny/best.pt] [--conditions 81] \
        [--samples 4] [--split test|validation]

Choose settings on ``--split validation``; report on the test split. For each held-out piece:
its conditions and first 2 bars prompt both planners, each samples ``--samples`` 4-bar
continuations with the same seeds, and the heuristic scorer
(src/music/scoring.py) judges them. Reported:
- win rate: share of (condition, sample) where the aligned continuation scores higher (ties 1/2);
  goal >= 70%;
- distribution guard: per feature (scale consistency, grid alignment, groove, pitch range,
  polyphony, onsets/s, empty bars, silence, repetition), the overlapping area of the histogram
  of generated continuations with that of the real continuations of the same pieces, averaged;
  may fall by at most 0.05;
- diversity guard: distinct 4-grams among an equal number of 4-grams drawn from each model's
  continuations (the raw ratio over all 4-grams is reported too, but falls whenever passages get
  longer), and the mean Jaccard distance between the 4-gram sets of two samples of one condition
  (mode collapse makes them alike); neither may fall by more than 0.05. The held-out pieces' own
  continuations are reported beside them as the reference for the first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import machine, table
from src.data.token_store import TokenStore
from src.eval.metrics import distinct_ngrams, ngrams
from src.models.builders import codec_from_checkpoint, load_planner
from src.models.text_encoder import caption_embeddings
from src.music.scoring import score_tokens
from src.training.dpo import OnPolicyConfig, sample_continuations
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


def within_condition_distance(seqs: list[np.ndarray], samples: int, n: int = 4) -> float:
    """Mean Jaccard distance between the n-gram sets of samples under the same condition (0 = identical)."""
    out = []
    for i in range(0, len(seqs) - samples + 1, samples):
        sets = [set(ngrams(s, n)) for s in seqs[i : i + samples]]
        for a in range(samples):
            for b in range(a + 1, samples):
                union = sets[a] | sets[b]
                out.append(1 - len(sets[a] & sets[b]) / len(union) if union else 0.0)
    return float(np.mean(out)) if out else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supervised", default="checkpoints/symbolic/tiny/best.pt")
    p.add_argument("--aligned", default="checkpoints/aligned/tiny/best.pt")
    p.add_argument("--data_dir", default="data/processed/tiny")
    p.add_argument("--conditions", type=int, default=81)
    p.add_argument("--split", default="test", choices=["test", "validation"], help="validation: for choosing settings")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default="")
    args = p.parse_args()
    models = {
        name: load_planner(path, args.data_dir)
        for name, path in (("supervised", args.supervised), ("aligned", args.aligned))
    }
    codec = codec_from_checkpoint(models["supervised"][1])
    rows = [r for r in read_jsonl(Path(args.data_dir) / "manifest.jsonl") if r["split"] == args.split]
    rows = [rows[i] for i in np.random.default_rng(args.seed).permutation(len(rows))[: args.conditions]]
    store, emb = TokenStore(args.data_dir), caption_embeddings(args.data_dir)
    cfg = OnPolicyConfig()
    scores: dict[str, list[float]] = {k: [] for k in models}
    feats: dict[str, dict[str, list[float]]] = {k: {} for k in [*models, "real"]}
    seqs: dict[str, list[np.ndarray]] = {k: [] for k in models}
    real_seqs: list[np.ndarray] = []  # the held-out pieces' own continuations (one per condition)
    for i, row in enumerate(rows):

        def judge(ids: np.ndarray, row: dict = row) -> dict:
            return score_tokens(ids, codec.tok, row["tempo"], row["time_signature"], row["emotion"])

        for name, (model, state) in models.items():
            gen = torch.Generator().manual_seed(args.seed + i)  # the same draws for both models
            relative = state["data_stats"].get("key_relative", False)
            _, conts, _ = sample_continuations(model, codec, row, store, emb, cfg, args.samples, gen, relative)
            for c in conts:
                s = judge(c)
                scores[name].append(s["total"])
                seqs[name].append(c)
                for k, v in s["features"].items():
                    feats[name].setdefault(k, []).append(v)
        ids = store[store.row_to_item[row["row"]]].astype(np.int64)
        bs = codec.bar_token_starts(ids)
        if len(bs) > cfg.prompt_bars + cfg.continuation_bars:
            passage = ids[bs[cfg.prompt_bars] : bs[cfg.prompt_bars + cfg.continuation_bars]]
            real_seqs.append(passage)
            real = judge(passage)
            for k, v in real["features"].items():
                feats["real"].setdefault(k, []).append(v)
    a, s = np.array(scores["aligned"]), np.array(scores["supervised"])
    n = min(len(a), len(s))
    win = float(((a[:n] > s[:n]) + 0.5 * (a[:n] == s[:n])).mean())
    rows_out = []
    count = min(sum(max(len(x) - 3, 0) for x in group) for group in [*seqs.values(), real_seqs])
    for name in models:
        ov = {k: overlap(feats[name][k], feats["real"][k]) for k in feats["real"] if feats[name].get(k)}
        rows_out.append(
            {
                "planner": name,
                "mean_score": round(float(np.mean(scores[name])), 4),
                "feature_overlap_with_real": round(float(np.mean(list(ov.values()))), 4),
                "distinct_4grams": round(distinct_ngrams(seqs[name]), 4),
                "distinct_4grams_matched": round(distinct_ngrams(seqs[name], count=count, seed=args.seed), 4),
                "within_condition_distance": round(within_condition_distance(seqs[name], args.samples), 4),
                "mean_tokens": round(float(np.mean([len(x) for x in seqs[name]])), 1),
                "continuations": len(scores[name]),
            }
        )
    sup, ali = rows_out
    real_row = {
        "planner": "held-out real music",
        "distinct_4grams": round(distinct_ngrams(real_seqs), 4),
        "distinct_4grams_matched": round(distinct_ngrams(real_seqs, count=count, seed=args.seed), 4),
        "mean_tokens": round(float(np.mean([len(x) for x in real_seqs])), 1),
        "continuations": len(real_seqs),
    }
    result = {
        "machine": machine(),
        "supervised": args.supervised,
        "aligned": args.aligned,
        "split": args.split,
        "held_out_conditions": len(rows),
        "win_rate_aligned": round(win, 4),
        "goal_win_rate": 0.7,
        "distribution_guard_ok": ali["feature_overlap_with_real"] >= sup["feature_overlap_with_real"] - GUARD_MARGIN,
        "diversity_guard_ok": ali["distinct_4grams_matched"] >= sup["distinct_4grams_matched"] - GUARD_MARGIN
        and ali["within_condition_distance"] >= sup["within_condition_distance"] - GUARD_MARGIN,
        "guard_margin": GUARD_MARGIN,
        "matched_4gram_count": count,
        "rows": [*rows_out, real_row],
    }
    print(table(result["rows"], list(rows_out[0])))
    print(f"win rate of aligned over supervised: {win:.1%} on {n} continuations ({len(rows)} held-out conditions)")
    print(
        f"guards (may drop by <= {GUARD_MARGIN}): distribution {result['distribution_guard_ok']}, "
        f"diversity {result['diversity_guard_ok']}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
