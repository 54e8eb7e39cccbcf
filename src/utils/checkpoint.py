"""Atomic checkpoints that carry their model config and the tokenizer's hash."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from src.utils.io import atomic_path

log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, expect_tokenizer_hash: str | None = None, made_by: str = "") -> dict[str, Any]:
    """Load with ``weights_only=True``; refuse a checkpoint made with another tokenizer."""
    path = Path(path)
    if not path.is_file():
        hint = f"; create it with: {made_by}" if made_by else ""
        raise FileNotFoundError(f"{path}: checkpoint not found{hint}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    have = state.get("tokenizer_hash")
    if expect_tokenizer_hash is not None and have != expect_tokenizer_hash:
        raise ValueError(
            f"{path}: made with tokenizer {have}, but the data uses tokenizer {expect_tokenizer_hash}; "
            "retrain, or point the config at the data it was trained on"
        )
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
