#!/usr/bin/env python
"""Stage 3: train the mel-spectrogram diffusion renderer on aligned FluidSynth pairs.

    python 03_train_renderer.py --config config/renderer_tiny.yaml [--set train.max_steps=100]
    torchrun --nproc_per_node=8 03_train_renderer.py --config config/renderer_full.yaml

Reads data/processed/<preset>/audio_pairs/ (stage 1 with audio.enabled); writes
checkpoints/renderer/<preset>/{last,best}.pt (EMA weights, mel parameters, tokenizer) and
TensorBoard logs under runs/renderer/<run>/. Rerunning resumes from last.pt.
"""

from __future__ import annotations

import argparse
import logging
import sys

from src.training.entry import load_stage_config, run_training
from src.training.renderer import RendererTrainingConfig, train
from src.utils.config import add_config_args

log = logging.getLogger("03_train_renderer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, "config/renderer_tiny.yaml")
    args = parser.parse_args(argv)
    return run_training(train, load_stage_config(RendererTrainingConfig, args), log)


if __name__ == "__main__":
    sys.exit(main())
