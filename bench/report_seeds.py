"""Several evaluation reports side by side: each set's figures at every report seed and their mean.

    .venv/bin/python -m bench.report_seeds REPORT_DIR... [--out docs/results/round14/report_seeds.md]

Each REPORT_DIR holds a ``metrics.json`` of ``python -m src.eval`` (one report seed each; the seeds may cover
different sets). Per set: the real-vs-set classifier with every measure and without those DPO's heuristic scores
("unscored"), per seed and their mean; per style, voices sounding a beat and the empty-beat rate (mean over the
seeds, and their range); pitch classes a song, the in-key share, emotion (the judge) and the raw mode.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import table
from src.utils.io import write_json, write_text


def collect(dirs: list[Path]) -> dict[str, list[dict]]:
    """Set name -> one row of figures per report seed, in seed order."""
    found: dict[str, list[dict]] = defaultdict(list)
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        for row in m["table"]:
            name, tex, feat = row["set"], m["texture"].get(row["set"], {}), m["features"].get(row["set"], {})
            if any(r["seed"] == m["seed"] for r in found[name]):
                continue  # a set in several reports of one seed (the ceiling): once
            found[name].append({
                "seed": m["seed"], "real vs set": row["real_vs_set_accuracy"], "unscored": row["real_vs_set_unscored"],
                **{f"{s} {k}": tex[s][k] for s in tex for k in ("voices_per_beat", "empty_beat_rate")},
                "pitch classes": feat.get("n_pitch_classes", {}).get("mean_generated"),
                "in key": feat.get("scale_consistency", {}).get("mean_generated"),
                "emotion": row.get("control_emotion"), "raw mode": row.get("control_raw_mode"),
            })  # fmt: skip
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in found.items()}


def summarise(sets: dict[str, list[dict]]) -> list[dict]:
    out = []
    for name, rows in sets.items():
        line: dict = {"set": name, "seeds": " ".join(str(r["seed"]) for r in rows)}
        for k in ("real vs set", "unscored"):
            line[k] = " / ".join(f"{r[k]:.3f}" for r in rows) + f" (**{np.mean([r[k] for r in rows]):.3f}**)"
        for k in sorted({k for r in rows for k in r if k.endswith(("voices_per_beat", "empty_beat_rate"))}):
            v = [r[k] for r in rows if k in r]
            line[k] = f"{np.mean(v):.3f} ({min(v):.2f}–{max(v):.2f})"
        for k in ("pitch classes", "in key", "emotion", "raw mode"):
            v = [r[k] for r in rows if r[k] is not None]
            line[k] = f"{np.mean(v):.3f}" if v else "–"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if missing := [str(d) for d in args.reports if not (d / "metrics.json").is_file()]:
        ap.error(f"no metrics.json in: {', '.join(missing)} (make one with: python -m src.eval ...)")
    sets = collect(args.reports)
    rows = summarise(sets)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    text = table([{c: r.get(c, "–") for c in cols} for r in rows], cols)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
        write_json(Path(args.out).with_suffix(".json"), {"reports": [str(d) for d in args.reports], "sets": sets})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
