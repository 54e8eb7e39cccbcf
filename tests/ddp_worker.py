"""Run under torchrun by tests/test_planner.py: train, then every rank saves its parameters."""

import sys
from pathlib import Path

import torch

from src.training.distributed import cleanup_distributed, setup_distributed
from src.training.symbolic import SymbolicConfig, train
from src.utils.config import load_config

cfg = load_config(SymbolicConfig, sys.argv[1])
info = setup_distributed("cpu")
result = train(cfg, info)
torch.save(result["model"].state_dict(), Path(cfg.out_dir) / f"rank{info.rank}.pt")
cleanup_distributed()
