"""Run under torchrun by tests/test_training.py: train one stage, then every rank saves its parameters.

usage: ddp_worker.py {symbolic,renderer,alignment} CONFIG.yaml
"""

import importlib
import sys
from pathlib import Path

import torch

from src.training.distributed import cleanup_distributed, setup_distributed
from src.utils.config import load_config

STAGES = {
    "symbolic": ("src.training.symbolic", "SymbolicConfig"),
    "renderer": ("src.training.renderer", "RendererTrainingConfig"),
    "alignment": ("src.training.alignment", "AlignmentConfig"),
}

module, config_class = STAGES[sys.argv[1]]
mod = importlib.import_module(module)
cfg = load_config(getattr(mod, config_class), sys.argv[2])
info = setup_distributed("cpu")
result = mod.train(cfg, info)
torch.save(result["model"].state_dict(), Path(cfg.out_dir) / f"rank{info.rank}.pt")
cleanup_distributed()
