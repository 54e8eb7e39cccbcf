"""What a planner's key profile learned: its 24 weights (times the gain), per mode and interval above the tonic.

    .venv/bin/python -m bench.key_profile [--checkpoints A.pt B.pt] [--out docs/results/key_profile_tiny.json]

Each weight is added to the logit of every token that holds a note that many semitones above the conditioned
key's tonic, in that key's mode (src/models/symbolic_planner.py). Nothing is sampled: this reads the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import machine, table
from src.models.builders import load_planner
from src.utils.io import write_text

INTERVALS = ["1", "b2", "2", "b3", "3", "4", "#4", "5", "b6", "6", "b7", "7"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", nargs="+", default=["checkpoints/symbolic/tiny/best.pt"])
    ap.add_argument("--out", default="docs/results/key_profile_tiny.json")
    args = ap.parse_args()
    rows = []
    for path in args.checkpoints:
        model, state = load_planner(path)
        if model.key_profile is None:
            raise SystemExit(f"{path}: this planner has no key profile (model.key_profile: false)")
        weights = (model.cfg.key_profile_gain * model.key_profile.detach()).view(2, 12).tolist()
        for mode, w in zip(("major", "minor"), weights):
            row = {"checkpoint": path, "gain": model.cfg.key_profile_gain, "step": state.get("step"), "mode": mode}
            rows.append(row | {i: round(v, 2) for i, v in zip(INTERVALS, w)})
    print(f"# Key profiles ({machine()})\n")
    print(table(rows, ["checkpoint", "gain", "mode", *INTERVALS]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), json.dumps({"machine": machine(), "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
