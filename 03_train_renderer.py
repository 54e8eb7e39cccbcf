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

from src.training.distributed import cleanup_distributed, setup_distributed
from src.training.renderer import RendererTrainingConfig, train
from src.utils.config import ConfigError, add_config_args, load_config
from src.utils.logging import setup_logging

log = logging.getLogger("03_train_renderer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, "config/renderer_tiny.yaml")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(RendererTrainingConfig, args.config, args.overrides)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = setup_distributed(cfg.train.device)
    setup_logging("INFO" if info.is_main else "WARNING")
    try:
        result = train(cfg, info)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        log.error("%s", e)
        return 2
    finally:
        cleanup_distributed()
    if info.is_main:
        log.info(
            "done: step %d, val loss %.4f (best %.4f), %.2fM parameters",
            result["step"],
            result["val_loss"],
            result["best_val"],
            result["params"] / 1e6,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
