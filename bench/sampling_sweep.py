"""Sampling defaults chosen on the validation split: songs under each setting against the real pieces.

    .venv/bin/python -m bench.sampling_sweep [--checkpoint checkpoints/symbolic/tiny/best.pt] \
        [--settings 1.0:1.0 1.0:0.95 0.9:0.95 0.8:0.9] [--plain] [--whole_bars] [--variations 0 0.1] \
        [--max_bars 32] [--seeds 0 1 2] [--out docs/results/sampling_tiny.json]

For each ``temperature:top_p`` setting, one song per validation piece (its caption, style, emotion,
tempo, key, metre and section form, as the evaluation report does on the test split) through stage 5's
song generator; ``--plain`` adds the first setting without the generator's masks (the grammar only),
``--whole_bars`` the first setting with ``controls.whole_bars`` (a bar closes only once it sounds to its end)
switched from config/generation.yaml's choice, ``--variations`` the first setting with each share of a repeated
section's bars re-sampled (``controls.variation``; 0 = the repeat is an exact copy).
Each set is measured with what neither training nor DPO optimises: the real-vs-set classifier
(5-fold cross-validated accuracy; 0.5 = indistinguishable), texture per style against the real
validation pieces, the mean feature overlap, distinct 4-grams, the raw mode against the emotion, the raw
metre (songs whose tokens carry only the metre asked for) and silent bar ends (bars in whose last eighth
note nothing sounds; the real pieces' share is printed beside).
With several ``--seeds`` every setting is sampled once per seed (songs in one-thread worker processes, as
the report makes them) and each measure is the mean over seeds; the classifier's per-seed figures are kept,
because one set of ~100 songs moves it by about ±0.03.
The chosen setting (lowest classifier accuracy, then highest overlap) belongs in config/generation.yaml's
``sampling``; the test split stays for the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, table
from src.eval import metrics as M
from src.eval.config import EvalConfig
from src.eval.evaluate import compare, generate_sets, real_pieces, real_vs_generated, texture_by_style, writable_rows
from src.generation.config import GenerationConfig
from src.models.builders import codec_from_checkpoint, load_planner
from src.models.text_encoder import caption_embeddings
from src.music.notes import bar_ticks
from src.music.vocab import mode_of
from src.utils.config import load_config
from src.utils.io import write_text


def setting(text: str) -> tuple[float, float]:
    t, p = text.split(":")
    return float(t), float(p)


def silent_bar_ends(piece: Any) -> float:
    """Share of a piece's bars in whose last eighth note nothing sounds."""
    notes, tpq = piece.notes, piece.tpq
    if not len(notes):
        return 1.0
    bar = bar_ticks(tpq, piece.time_signature)
    starts, ends = notes[:, 0], notes[:, 0] + notes[:, 1]
    n_bars = int(np.ceil(ends.max() / bar))
    tails = [((b + 1) * bar - tpq // 2, (b + 1) * bar) for b in range(n_bars)]
    return float(np.mean([not ((starts < hi) & (ends > lo)).any() for lo, hi in tails]))


def measure(name: str, songs: list, real: list, seed: int) -> dict[str, Any]:
    """The set's measures against the real validation pieces; texture as the gap to real, per style."""
    tex, real_tex = texture_by_style({"set": songs})["set"], texture_by_style({"real": real})["real"]
    gaps = {
        f"{style}_{k}": round(tex[style][k] - real_tex[style][k], 3)
        for style in sorted(tex)
        for k in ("voices_per_beat", "empty_beat_rate", "sounding_run_beats")
    }
    raw_mode = [s.facts["raw"]["mode"] == mode_of(s.request["req"].emotion) for s in songs]
    comparison = compare(songs, real)
    return {
        "set": name,
        "songs": len(songs),
        "real_vs_set": round(real_vs_generated(real, songs, seed), 3),
        "mean_overlap": round(float(np.mean([c["overlap"] for c in comparison.values()])), 3),
        "distinct_4grams": round(M.distinct_ngrams([s.ids for s in songs], 4, count=20_000, seed=seed), 3),
        "raw_mode": round(float(np.mean(raw_mode)), 3),
        "raw_metre": round(
            float(np.mean([s.facts["raw"]["time_signatures"] == [s.facts["written_metre"]] for s in songs])), 3
        ),
        "silent_bar_ends": round(float(np.mean([silent_bar_ends(s) for s in songs])), 3),
        **gaps,
    }


def mean_over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: each numeric measure averaged over the seeds' rows, the classifier's figures listed."""
    row = {
        k: v if not isinstance(v, float) else round(float(np.mean([r[k] for r in per_seed])), 3)
        for k, v in per_seed[0].items()
    }
    return row | {"songs": sum(r["songs"] for r in per_seed), "per_seed": [r["real_vs_set"] for r in per_seed]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/symbolic/tiny/best.pt")
    ap.add_argument("--data_dir", default="data/processed/tiny")
    ap.add_argument("--settings", nargs="+", default=["1.0:1.0", "1.0:0.95", "0.9:0.95", "0.8:0.9"])
    ap.add_argument("--plain", action="store_true", help="also the first setting without the generator's masks")
    ap.add_argument("--whole_bars", action="store_true", help="also the first setting with controls.whole_bars flipped")
    ap.add_argument("--variations", nargs="*", type=float, default=[], help="the first setting with these variations")
    ap.add_argument("--max_bars", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="sample every setting once per seed")
    ap.add_argument("--workers", type=int, default=0, help="song processes, one thread each (0 = every core)")
    ap.add_argument("--out", default="docs/results/sampling_tiny.json")
    args = ap.parse_args()
    t0 = time.time()
    gcfg = load_config(GenerationConfig, "config/generation.yaml")
    _, state = load_planner(args.checkpoint, args.data_dir)
    codec = codec_from_checkpoint(state)
    real = real_pieces(args.data_dir, "validation", codec, max_bars=args.max_bars)
    rows, left_out = writable_rows([p.request["row"] for p in real], codec)
    text_emb = caption_embeddings(args.data_dir)
    runs = [(f"T {t:g}, top-p {p:g}", (t, p), {}) for t, p in map(setting, args.settings)]
    if args.plain:
        runs.append((runs[0][0] + ", plain", runs[0][1], {"masks": False}))
    if args.whole_bars:  # the first setting with whole bars switched from the config's choice
        flip = not gcfg.controls.whole_bars
        runs.append((runs[0][0] + (", whole bars" if flip else ", no whole bars"), runs[0][1], {"whole_bars": flip}))
    for v in args.variations:
        runs.append((runs[0][0] + f", variation {v:g}", runs[0][1], {"variation": v}))
    result: dict[str, Any] = {"machine": machine(), "args": vars(args), "validation_pieces": len(real)}
    result |= {"conditions": len(rows), "conditions_left_out": left_out, "sets": []}
    result["real_silent_bar_ends"] = round(float(np.mean([silent_bar_ends(p) for p in real])), 3)
    for name, (t, p), changed in runs:
        controls = dataclasses.replace(gcfg.controls, **changed)
        sampling = dataclasses.replace(gcfg.sampling, temperature=t, top_p=p)
        per_seed = []
        for seed in args.seeds:
            cfg = EvalConfig(max_bars=args.max_bars, seed=seed, workers=args.workers)
            songs = generate_sets([args.checkpoint], args.data_dir, controls, rows, text_emb, cfg, sampling)
            per_seed.append(measure(name, songs[args.checkpoint], real, seed))
        row = mean_over_seeds(per_seed) | {"temperature": t, "top_p": p}
        result["sets"].append(row | {"controls": dataclasses.asdict(controls), "changed": changed})
    masked = [s for s in result["sets"] if not s["changed"]]
    best = min(masked, key=lambda s: (s["real_vs_set"], -s["mean_overlap"]))
    result["chosen"] = {"temperature": best["temperature"], "top_p": best["top_p"]}
    result["seconds"] = round(time.time() - t0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), json.dumps(result, indent=1))
    cols = [k for k in result["sets"][0] if k not in ("temperature", "top_p", "controls", "changed", "per_seed")]
    print(f"# Sampling on the validation split: {args.checkpoint} ({machine()}, {result['seconds']} s)\n")
    print(table(result["sets"], cols))
    print(f"\nreal validation pieces: silent bar ends {result['real_silent_bar_ends']}")
    print(f"\nchosen (lowest real-vs-set accuracy, then highest overlap): {result['chosen']}")


if __name__ == "__main__":
    main()
