"""Shared fixtures: a micro corpus prepared once per test session from real music21 pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from src.data.audio_pairs import AudioPairsConfig
from src.data.mel import MelConfig
from src.data.music21_source import CorpusCollection
from src.data.preferences import PreferenceConfig
from src.data.prepare import DataConfig, prepare
from src.models.audio_renderer import RendererConfig
from src.models.symbolic_planner import PlannerConfig, SymbolicPlanner
from src.training.dpo import AlignmentConfig, DPOTrainConfig
from src.training.renderer import RendererTrainConfig, RendererTrainingConfig
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
    cfg.audio = AudioPairsConfig(
        enabled=True,
        mel=MelConfig(n_mels=32),
        segment_frames=64,
        stride_frames=64,
        max_tokens=96,
        train_pieces=4,
        validation_pieces=2,
        max_segments_per_piece=3,
    )
    cfg.preference = PreferenceConfig(
        enabled=True, out_path=str(tmp / "subsets/preference_data.json"), train_pairs=10, validation_pairs=4
    )
    return cfg


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> tuple[DataConfig, dict]:
    tmp = tmp_path_factory.mktemp("micro")
    cfg = micro_data_config(tmp)
    summary = prepare(cfg)
    return cfg, summary


def micro_stage(stage_cls: type, train_cls: type, model: Any, data_dir: str, out: Path, train: dict, **defaults: Any):
    """A stage config with a few-step CPU training overlay (mt3-style); ``train`` overrides it."""
    base = dict(max_steps=2, global_batch=4, micro_batch=2, lr=1e-3, warmup_steps=1, eval_every=2, log_every=1)
    tc = train_cls(**{**base, **defaults, "device": "cpu"})
    for k, v in train.items():
        setattr(tc, k, v)
    out_dir, run_dir = str(out / "ckpt"), str(out / "runs")
    return stage_cls(data_dir=data_dir, out_dir=out_dir, run_dir=run_dir, run_name="t", model=model, train=tc)


def micro_planner_config(data_dir: str, out: Path, **train) -> SymbolicConfig:
    """A planner small enough to train two steps in a second, with the presets' key profile."""
    model = PlannerConfig(
        d_model=32,
        n_heads=2,
        n_enc_layers=1,
        n_dec_layers=2,
        dropout=0.0,
        block_size=32,
        max_bars=16,
        n_text_memory=2,
        key_profile=True,
        key_profile_gain=3.0,
    )
    return micro_stage(SymbolicConfig, TrainConfig, model, data_dir, out, train, eval_windows_per_piece=1)


@pytest.fixture(scope="session")
def micro_checkpoint(micro_data, tmp_path_factory) -> Path:
    """A micro planner trained for a few steps on the micro corpus (real weights, tiny)."""
    from src.training.symbolic import train

    dcfg, _ = micro_data
    out = tmp_path_factory.mktemp("micro_ckpt")
    cfg = micro_planner_config(dcfg.processed_dir, out, max_steps=30, eval_every=30, lr=3e-3)
    train(cfg)
    return Path(cfg.out_dir) / "best.pt"


@pytest.fixture(scope="session")
def micro_mode_checkpoint(micro_data, tmp_path_factory) -> Path:
    """A micro planner trained long enough (200 steps) for its key profile to say the mode; at this size and step
    count the profile needs a gain of 30 to get there (the presets' 3 serves 1,200 steps of a larger planner)."""
    from src.training.symbolic import train

    dcfg, _ = micro_data
    out = tmp_path_factory.mktemp("micro_mode_ckpt")
    cfg = micro_planner_config(dcfg.processed_dir, out, max_steps=200, eval_every=200, lr=3e-3)
    cfg.model.key_profile_gain = 30.0
    train(cfg)
    return Path(cfg.out_dir) / "best.pt"


def micro_renderer_config(data_dir: str, out: Path, **train) -> RendererTrainingConfig:
    """A renderer small enough to train a few steps in seconds."""
    model = RendererConfig(
        d_token=32, token_layers=1, token_heads=2, channels=[8, 16], attn_levels=[1], heads=2, roll_channels=2
    )
    return micro_stage(
        RendererTrainingConfig, RendererTrainConfig, model, data_dir, out, train, ema_decay=0.9, val_segments=4
    )


def micro_alignment_config(data_dir: str, pref_data: str, ckpt: Path, out: Path, **train) -> AlignmentConfig:
    """DPO of a micro planner on the micro corpus's synthetic pairs, a few steps."""
    base = dict(max_steps=2, global_batch=4, micro_batch=2, lr=1e-3, warmup_steps=1, eval_every=2, log_every=1)
    tc = DPOTrainConfig(**{**base, **train, "device": "cpu"})
    return AlignmentConfig(
        symbolic_ckpt=str(ckpt),
        data_dir=data_dir,
        pref_data=pref_data,
        out_dir=str(out / "ckpt"),
        run_dir=str(out / "runs"),
        run_name="t",
        train=tc,
    )


@pytest.fixture(scope="session")
def micro_renderer(micro_data, tmp_path_factory) -> Path:
    """A micro renderer trained for a few steps on the micro corpus's audio pairs."""
    from src.training.renderer import train

    dcfg, _ = micro_data
    cfg = micro_renderer_config(
        dcfg.processed_dir, tmp_path_factory.mktemp("micro_renderer"), max_steps=4, eval_every=4
    )
    train(cfg)
    return Path(cfg.out_dir) / "best.pt"


def tiny_model(seed: int = 0, **kw) -> SymbolicPlanner:
    """A planner of a few thousand parameters (64 tokens, 24-token context), seeded, in eval mode."""
    torch.manual_seed(seed)
    cfg = PlannerConfig(
        vocab_size=64,
        d_model=32,
        n_heads=2,
        n_enc_layers=1,
        n_dec_layers=2,
        dropout=0.0,
        block_size=24,
        max_bars=8,
        n_text_memory=2,
        bar_token_ids=[4, 5],
        **kw,
    )
    return SymbolicPlanner(cfg).eval()
