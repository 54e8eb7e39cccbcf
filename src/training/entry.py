"""What every training stage script shares: config loading, torchrun setup, one-line errors, a summary."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from src.training.distributed import DistInfo, cleanup_distributed, setup_distributed
from src.utils.config import ConfigError, load_config
from src.utils.logging import setup_logging

T = TypeVar("T")


def load_stage_config(cls: type[T], args: argparse.Namespace) -> T:
    """``--config`` + ``--set`` into ``cls``; a bad config is one line on stderr and exit code 2."""
    try:
        return load_config(cls, args.config, args.overrides)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def run_training(
    train: Callable[[Any, DistInfo], dict], cfg: Any, log: logging.Logger, metric: str = "val loss"
) -> int:
    """Run ``train(cfg, info)`` on this rank; missing inputs and bad data end with one line and exit code 2."""
    info = setup_distributed(cfg.train.device)
    setup_logging("INFO" if info.is_main else "WARNING")
    try:
        result = train(cfg, info)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        log.error("%s", e)
        cleanup_distributed(wait=False)  # peers may be elsewhere: do not wait for them
        return 2
    cleanup_distributed()
    if info.is_main:
        log.info(
            "done: step %d, %s %.4f (best %.4f), %.2fM parameters",
            result["step"],
            metric,
            result["val_loss"],
            result["best_val"],
            result["params"] / 1e6,
        )
    return 0
