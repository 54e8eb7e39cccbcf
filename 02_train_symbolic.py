#!/usr/bin/env python
"""Stage 2: train the hierarchical symbolic planner.

    python 02_train_symbolic.py --config config/symbolic_tiny.yaml [--set train.max_steps=100]
    torchrun --nproc_per_node=8 02_train_symbolic.py --config config/symbolic_full.yaml

Reads data/processed/<preset>/ (stage 1); writes checkpoints/symbolic/{last,best}.pt and
TensorBoard logs under runs/symbolic/<run>/. Rerunning resumes from last.pt.
"""

from __future__ import annotations

import argparse
import logging
import sys

from src.training.entry import load_stage_config, run_training
from src.training.symbolic import SymbolicConfig, train
from src.utils.config import add_config_args

log = logging.getLogger("02_train_symbolic")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, "config/symbolic_tiny.yaml")
    args = parser.parse_args(argv)
    return run_training(train, load_stage_config(SymbolicConfig, args), log)


if __name__ == "__main__":
    sys.exit(main())
