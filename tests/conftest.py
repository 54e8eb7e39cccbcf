"""Shared fixtures: a micro corpus prepared once per test session from real music21 pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.data.music21_source import CorpusCollection
from src.data.prepare import DataConfig, prepare

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def micro_data_config(tmp: Path) -> DataConfig:
    """A handful of chorales and folk tunes: every stage-1 step runs in seconds."""
    cfg = DataConfig(preset="micro", raw_dir=str(tmp / "raw"), processed_dir=str(tmp / "processed"), workers=2)
    cfg.music21.collections = [
        CorpusCollection(name="bach", style="CLASSICAL", pattern="bach/bwv[16]*.mxl", max_files=0,
                         default_tempo=80.0, default_program=52),
        CorpusCollection(name="oneills", style="FOLK", pattern="oneills1850/0001-0050.abc",
                         default_tempo=112.0, default_program=40),
    ]
    cfg.labels.min_notes = 8
    return cfg


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> tuple[DataConfig, dict]:
    tmp = tmp_path_factory.mktemp("micro")
    cfg = micro_data_config(tmp)
    summary = prepare(cfg)
    return cfg, summary
