#!/usr/bin/env python
"""Stage 4: align the planner with preferences (DPO).

    python 04_preference_alignment.py --config config/alignment_tiny.yaml \\
        [--symbolic_ckpt checkpoints/symbolic/tiny/best.pt] [--pref_data data/subsets/tiny/preference_data.json] \\
        [--human_pairs my_pairs.json] [--set train.beta=0.1]

Policy and frozen reference start from the supervised checkpoint; pairs come from stage 1's
synthetic file, on-policy samples (``on_policy.conditions`` > 0) and any human-labelled files in
the same format (README). Writes checkpoints/aligned/<preset>/{last,best}.pt, which stage 5
prefers, and TensorBoard logs under runs/aligned/<run>/. Rerunning resumes from last.pt.
"""

from __future__ import annotations

import argparse
import logging
import sys

from src.training.dpo import AlignmentConfig
from src.training.entry import load_stage_config, run_training
from src.utils.config import add_config_args

log = logging.getLogger("04_preference_alignment")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, "config/alignment_tiny.yaml")
    parser.add_argument("--symbolic_ckpt", default=None, help="supervised planner (default: from the config)")
    parser.add_argument("--pref_data", default=None, help="synthetic pair file (default: from the config)")
    parser.add_argument("--human_pairs", action="append", default=[], help="extra pair files (repeatable)")
    args = parser.parse_args(argv)
    cfg = load_stage_config(AlignmentConfig, args)
    cfg.symbolic_ckpt = args.symbolic_ckpt or cfg.symbolic_ckpt
    cfg.pref_data = args.pref_data or cfg.pref_data
    cfg.extra_pref_data += args.human_pairs
    from src.training.alignment import train

    return run_training(train, cfg, log, metric="validation DPO loss")


if __name__ == "__main__":
    sys.exit(main())
