"""``report.md`` + ``metrics.json`` + PNG plots for an evaluation (see :mod:`src.eval.evaluate`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from src.music.features import HISTOGRAM_METRICS, RHYTHM_NAMES, SCALAR_METRICS, TEXTURE_METRICS
from src.utils.io import atomic_path, write_text

CONTROLS = ("tempo", "bars", "instruments", "key", "emotion", "style")
# (control, the model's own column, the delivered column) of the raw-versus-delivered table
RAW_DELIVERED = (
    ("mode (valence)", "raw_mode", "mode"),
    ("arousal", "raw_arousal", "arousal"),
    ("key", "raw_key", "key"),
    ("tempo", "raw_tempo", "tempo"),
    ("instruments", "raw_named_share", "instruments"),
)
FIXUPS = ("fix_resampled", "fix_transposed", "fix_parallel_mode", "fix_reassigned")


def fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def plot_features(result: dict, path: Path) -> None:
    """Every feature's distribution: each set overlaid on the real test split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = [*SCALAR_METRICS, *HISTOGRAM_METRICS]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(feats) / cols), cols, figsize=(4 * cols, 2.8 * math.ceil(len(feats) / cols)))
    sets = {"real test": result["test"], **result["sets"]}
    for ax, f in zip(axes.ravel(), feats):
        for i, (name, pieces) in enumerate(sets.items()):
            vals = np.stack([p.metrics[f] for p in pieces])
            if f in HISTOGRAM_METRICS:
                labels = RHYTHM_NAMES if f != "pitch_class_histogram" else [str(k) for k in range(12)]
                ax.plot(range(len(labels)), vals.mean(0), marker="o", ms=3, label=name, lw=2 if i == 0 else 1)
                ax.set_xticks(range(len(labels)), labels, fontsize=6)
            else:
                ax.hist(
                    vals,
                    bins=20,
                    density=True,
                    histtype="step" if i else "stepfilled",
                    alpha=1 if i else 0.3,
                    label=name,
                )
        ax.set_title(f, fontsize=9)
    for ax in axes.ravel()[len(feats) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def plot_rolls(result: dict, path: Path, per_set: int = 2) -> None:
    """A few piano rolls of every set (first bars), beside a real test piece."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = {"real test": result["test"], **{k: v for k, v in result["sets"].items() if "ceiling" not in k}}
    fig, axes = plt.subplots(len(sets), per_set, figsize=(6 * per_set, 2.2 * len(sets)), squeeze=False)
    for row, (name, pieces) in zip(axes, sets.items()):
        for ax, p in zip(row, pieces[:per_set]):
            n = p.notes[p.notes[:, 0] < p.tpq * 32] if len(p.notes) else p.notes
            if len(n):
                ax.barh(n[:, 2], n[:, 1] / p.tpq, left=n[:, 0] / p.tpq, height=0.9)
            ax.set_title(f"{name}: {p.name}", fontsize=7)
            ax.set_xlabel("beats", fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def write_report(result: dict, out_dir: Path, command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_features(result, out_dir / "features.png")
    plot_rolls(result, out_dir / "piano_rolls.png")
    table = result["table"]
    main = md_table(
        ["set", "pieces", "mean overlap ↑", "mean KL ↓", "distinct 4-grams", "real vs set ↓", "unscored ↓", *CONTROLS],
        [
            [
                r["set"],
                r["pieces"],
                r["mean_overlap"],
                r["mean_kl"],
                r["distinct_4grams"],
                r["real_vs_set_accuracy"],
                r["real_vs_set_unscored"],
                *(r.get(f"control_{c}", float("nan")) for c in CONTROLS),
            ]
            for r in table
        ],
    )
    generated = [r for r in table if "control_raw_mode" in r]
    raw_delivered = md_table(
        ["set", *(f"{c}: raw / delivered" for c, _, _ in RAW_DELIVERED), *(f[4:] for f in FIXUPS)],
        [
            [
                r["set"],
                *(
                    f"{fmt(r.get(f'control_{a}', float('nan')))} / {fmt(r[f'control_{b}'])}"
                    for _, a, b in RAW_DELIVERED
                ),
                *(r.get(f"control_{f}", float("nan")) for f in FIXUPS),
            ]
            for r in generated
        ],
    )
    tex = result["texture"]
    texture_table = md_table(
        ["set", "style", "pieces", *TEXTURE_METRICS],
        [
            [name, style, t["pieces"], *(t[k] for k in TEXTURE_METRICS)]
            for name, by in tex.items()
            for style, t in by.items()
        ],
    )
    per_feature = md_table(
        ["feature", "real test mean", *(r["set"] for r in table)],
        [
            [
                f,
                result["features"][table[0]["set"]][f]["mean_real"],
                *(
                    f"{result['features'][r['set']][f]['overlap']:.3f} / {result['features'][r['set']][f]['kl']:.3f}"
                    for r in table
                ),
            ]
            for f in result["features"][table[0]["set"]]
        ],
    )
    judges = md_table(
        ["judge", "classes", "accuracy on the real test split", "test pieces"],
        [[k, ", ".join(j["classes"]), j["test_accuracy"], j["test_pieces"]] for k, j in result["judges"].items()],
    )
    s, split = result["sampling"], result["split"]
    left = result.get("conditions_left_out", [])
    left_out = (
        f"{len(left)} condition(s) left out: " + "; ".join(f"{r['id']} ({r['reason']})" for r in left) + ".\n"
        if left
        else ""
    )
    masks = "with the song generator's masks" if result["controls"]["masks"] else "plain sampling (the grammar only)"
    text = f"""# Evaluation report

`{command}`

{result["conditions"]} held-out conditions ({split} split of `{result["data_dir"]}`) × {result["num_samples"]} samples,
songs of at most {result["max_bars"]} bars in each piece's own section form, seed {result["seed"]}, sampled at
temperature {s["temperature"]:g}, top-p {s["top_p"]:g}, guidance {s["guidance"]:g} {masks} (stage 5's defaults).
Every set is compared with the {result["real_test_pieces"]} real {split} pieces, each cut to its first
{result["max_bars"]} bars like the songs (and the training pieces too), so that length does not tell them apart.
The first row compares the real {split} split with {result["ceiling_pieces"]} training pieces, as many as each
generated set has songs (the ceiling); the bigram row is a per-style token bigram that writes its songs
through the same song generator as the planners (same masks, key plan, re-sampling and fix-ups; the floor).
{left_out}
## Main table

{main}

- **mean overlap / mean KL**: per feature, Yang & Lerch (2020): the overlapping area (1 = same) and KL divergence
  (0 = same) between the set's intra-set distance distribution and its distances to the real test pieces,
  averaged over {len(result["features"][table[0]["set"]])} features.
- **distinct 4-grams**: share of distinct token 4-grams among the same number of 4-grams from every set (the real
  test split: {result["real_test_distinct_4grams"]:.3f}).
- **real vs set**: 5-fold cross-validated accuracy of a logistic regression telling the real test pieces from
  the set's pieces (equal numbers of each) on every per-piece feature and texture measure below; 0.5 means
  indistinguishable. Its ceiling row is the real-vs-real baseline. Neither training nor DPO optimises it, but some of
  its inputs are measures that DPO's heuristic scores (notes in key, polyphony, onset density, groove, empty bars,
  repetition, pitch range). **unscored**: the same classifier without those seven, on the measures DPO's reward
  does not see (pitch-class entropy and count, notes per bar, bar self-similarity, texture, the histograms).
- **controls**: share of songs whose measured tempo, bar count, named instruments (songs whose prompt names any),
  estimated key, and judged emotion and style match the request. The generator enforces tempo, bars and key by
  construction (the key by re-sampling, transposition and parallel-mode mapping; see README).

## Controls: what the model wrote (raw) and what was delivered

{raw_delivered}

- **raw**: the first sample, as the model wrote it, before any fix-up: mode (valence) against the emotion's
  (major for HAPPY and PEACEFUL), arousal (onsets per second at the requested tempo on the emotion's side of
  {result["arousal_threshold"]:g}), the requested key, the tempo token within 10% of the request, and the
  mean share of notes on the instruments a prompt names. **delivered**: the written song (instruments: every
  named instrument plays). The right-hand columns say how often each fix-up fired: another sample drawn
  because the mode missed, a transposition onto the tonic, the parallel-mode mapping, voices reassigned
  by register.

## Texture against the real pieces of each style

{texture_table}

- **voices_per_beat**: notes sounding together on a sixteenth grid, where anything sounds; **empty_beat_rate**:
  beats in which nothing sounds; **sounding_run_beats**: mean length of the stretches without a gap.

## Judges

{judges}

## Per feature (overlap / KL against the real test split)

{per_feature}

![features](features.png)

![piano rolls](piano_rolls.png)
"""
    write_text(out_dir / "report.md", text)
    payload = {k: v for k, v in result.items() if k not in ("sets", "test")}
    payload["command"] = command
    write_text(out_dir / "metrics.json", json.dumps(payload, indent=1, default=float))
    return out_dir / "report.md"
