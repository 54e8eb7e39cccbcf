"""Validation curves of the pipeline's training runs, from their TensorBoard logs.

    .venv/bin/python -m bench.training_curves [--runs runs] [--preset tiny] [--out docs/results/curves_tiny.json]
        [--stages planner "aligned planner"] [--trained_on "one H100 (lent)"]

For each stage (planner, renderer, aligned planner) the validation loss at every evaluation and the
training rate, so a choice of step counts (how the tiny pipeline's 30 minutes are shared) can be read
off the run that made the checkpoints. ``machine`` is where the logs were read; ``trained_on`` (when given)
where the runs trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import machine
from src.utils.io import write_text

STAGES = {"planner": "symbolic", "renderer": "renderer", "aligned planner": "aligned"}


def curves(run_dir: Path) -> dict[str, list[list[float]]]:
    """Tag -> [[step, value], ...] of the run's scalars (its latest event file)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {t: [[e.step, round(e.value, 4)] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--out", default="docs/results/curves_tiny.json")
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    ap.add_argument("--trained_on", default="", help="the machine the runs trained on, when not this one")
    args = ap.parse_args()
    result: dict = {"machine": machine(), "args": vars(args), "stages": {}}
    for name in args.stages:
        folder = STAGES[name]
        run = Path(args.runs) / folder / args.preset
        if not run.is_dir():
            raise SystemExit(f"{run}: no run; train it with: bash run_full_pipeline.sh --preset {args.preset}")
        tags = {t: sorted({int(s): v for s, v in points}.items()) for t, points in curves(run).items()}
        rates = sorted(v for _, v in tags.get("units_per_s", []))
        result["stages"][name] = {
            "validation": tags.get("val/loss", []),
            "units_per_s_median": rates[len(rates) // 2] if rates else None,
        }
        print(f"{name}: " + ", ".join(f"{s}: {v}" for s, v in tags.get("val/loss", [])))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
