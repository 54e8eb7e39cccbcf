"""Drums end to end on a micro corpus that has a drum track: stage 1 keeps it, the planner learns it, and a
prompt that names drums gets drums written by the model (the program mask lets the kit through)."""

from __future__ import annotations

from pathlib import Path

import pytest
from symusic import Note, Score, Track

from src.data.folder_source import FolderSourceConfig
from src.data.prepare import DataConfig, prepare
from src.music.vocab import DRUMS
from tests.conftest import micro_planner_config

KICK, SNARE, HAT = 36, 38, 42


def with_drums(midi: Path, out: Path) -> None:
    """The tune with a rock beat under it: kick on beats 1 and 3, snare on 2 and 4, hats on the eighths."""
    score = Score(str(midi))
    tpq, end = score.ticks_per_quarter, score.end()
    kit = Track("drums", 0, True)
    for t in range(0, end, tpq // 2):
        beat, on_beat = divmod(t, tpq)
        kit.notes.append(Note(t, tpq // 4, HAT, 70))
        if not on_beat:
            kit.notes.append(Note(t, tpq // 4, KICK if beat % 2 == 0 else SNARE, 100))
    score.tracks.append(kit)
    score.dump_midi(str(out))


@pytest.fixture(scope="module")
def drum_data(micro_data, tmp_path_factory) -> DataConfig:
    """Stage 1 over the micro corpus's folk tunes, each with a drum track."""
    dcfg, _ = micro_data
    tmp = tmp_path_factory.mktemp("drums")
    folder = tmp / "midi"
    folder.mkdir()
    tunes = sorted(p for p in Path(dcfg.raw_dir).rglob("*.mid") if "oneills" in str(p))
    assert len(tunes) >= 10, "the micro corpus has its folk tunes as MIDI"
    for p in tunes:
        with_drums(p, folder / p.name)
    cfg = DataConfig(preset="drums", raw_dir=str(tmp / "raw"), processed_dir=str(tmp / "processed"), workers=2)
    cfg.music21.enabled = False
    cfg.folders = [FolderSourceConfig(path=str(folder), style="FOLK", name="drummed")]
    cfg.labels.min_notes = 8
    prepare(cfg)
    return cfg


@pytest.fixture(scope="module")
def drum_checkpoint(drum_data, tmp_path_factory) -> Path:
    """A micro planner trained on the drummed tunes."""
    from src.training.symbolic import train

    pcfg = micro_planner_config(
        drum_data.processed_dir, tmp_path_factory.mktemp("drum_planner"), max_steps=40, eval_every=40, lr=3e-3
    )
    train(pcfg)
    return Path(pcfg.out_dir) / "best.pt"


def test_pitch_corruptions_leave_the_drum_track_alone(drum_data):
    import dataclasses

    from src.data.preferences import build_synthetic_pairs
    from src.data.token_store import TokenStore
    from src.music.tokenizer import TokenCodec
    from src.utils.io import read_jsonl

    codec = TokenCodec.from_file(Path(drum_data.processed_dir) / "tokenizer.json")
    rows = read_jsonl(Path(drum_data.processed_dir) / "manifest.jsonl")
    cfg = dataclasses.replace(
        drum_data.preference, corruptions=["parallel_mode", "out_of_key"], train_pairs=20, validation_pairs=0
    )
    pairs = build_synthetic_pairs(cfg, rows, TokenStore(drum_data.processed_dir), codec, "h")["pairs"]
    assert len(pairs) >= 10
    for p in pairs:
        chosen, rejected = codec.decode(p["chosen"]), codec.decode(p["rejected"])
        kit = lambda s: sorted((n.time, n.pitch) for t in s.tracks if t.is_drum for n in t.notes)  # noqa: E731
        tune = lambda s: sorted((n.time, n.pitch) for t in s.tracks if not t.is_drum for n in t.notes)  # noqa: E731
        assert kit(chosen) and kit(chosen) == kit(rejected), p["id"]  # the beat is the same on both sides
        assert tune(chosen) != tune(rejected), p["id"]  # the pitched notes moved


def test_a_checkpoint_that_has_seen_drums_writes_them_when_asked(drum_checkpoint):
    from src.generation.song import SongGenerator, SongRequest
    from src.models.builders import codec_from_checkpoint, load_planner
    from src.music.form import parse_form

    model, state = load_planner(drum_checkpoint)
    g = SongGenerator(model, codec_from_checkpoint(state), state["data_stats"])
    assert not g.unseen([DRUMS]), "every training piece has its drum track: the checkpoint has seen drums"
    wrote = 0
    for seed in range(4):
        req = SongRequest(prompt="a folk tune for fiddle and drums", style="FOLK", tempo=110.0, seed=seed)
        song = g.generate(req, None, parse_form("a:4", 4))
        raw_drums = song.facts["raw"]["parts"].get("drums", {"notes": 0})["notes"]
        wrote += raw_drums > 0
        assert not any("drum" in n for n in song.notes), song.notes  # no mask hid them, no blame on the model
        kit = [t for t in song.score.tracks if t.is_drum]
        assert bool(kit and len(kit[0].notes)) == (raw_drums > 0)  # the delivered song keeps what the model wrote
    assert wrote >= 3, f"the model wrote drums in {wrote} of 4 songs"
