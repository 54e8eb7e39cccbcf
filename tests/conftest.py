"""Shared fixtures: a micro corpus prepared once per test session from real music21 pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.data.music21_source import CorpusCollection
from src.data.prepare import DataConfig, prepare
from src.models.symbolic_planner import PlannerConfig
from src.training.symbolic import SymbolicConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def micro_data_config(tmp: Path) -> DataConfig:
    """A handful of chorales and folk tunes: every stage-1 step runs in seconds."""
    cfg = DataConfig(preset="micro", raw_dir=str(tmp / "raw"), processed_dir=str(tmp / "processed"), workers=2)
    cfg.music21.collections = [
        CorpusCollection(
            name="bach",
            style="CLASSICAL",
            pattern="bach/bwv[16]*.mxl",
            max_files=0,
            default_tempo=80.0,
            default_program=52,
        ),
        CorpusCollection(
            name="oneills", style="FOLK", pattern="oneills1850/0001-0050.abc", default_tempo=112.0, default_program=40
        ),
    ]
    cfg.labels.min_notes = 8
    return cfg


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> tuple[DataConfig, dict]:
    tmp = tmp_path_factory.mktemp("micro")
    cfg = micro_data_config(tmp)
    summary = prepare(cfg)
    return cfg, summary


def micro_planner_config(data_dir: str, out: Path, **train) -> SymbolicConfig:
    """A planner small enough to train two steps in a second (mt3-style test overlay)."""

    model = PlannerConfig(
        d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=2, dropout=0.0, block_size=32, max_bars=16, n_text_memory=2
    )
    tc = TrainConfig(
        max_steps=2,
        global_batch=4,
        micro_batch=2,
        lr=1e-3,
        warmup_steps=1,
        eval_every=2,
        eval_windows_per_piece=1,
        log_every=1,
        device="cpu",
    )
    for k, v in train.items():
        setattr(tc, k, v)
    return SymbolicConfig(
        data_dir=data_dir, out_dir=str(out / "ckpt"), run_dir=str(out / "runs"), run_name="t", model=model, train=tc
    )


@pytest.fixture(scope="session")
def micro_checkpoint(micro_data, tmp_path_factory) -> Path:
    """A micro planner trained for a few steps on the micro corpus (real weights, tiny)."""
    from src.training.symbolic import train

    dcfg, _ = micro_data
    out = tmp_path_factory.mktemp("micro_ckpt")
    cfg = micro_planner_config(dcfg.processed_dir, out, max_steps=30, eval_every=30, lr=3e-3)
    train(cfg)
    return Path(cfg.out_dir) / "best.pt"
