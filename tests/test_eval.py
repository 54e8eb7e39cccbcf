"""Evaluation: every metric on hand-made examples, set comparisons, judges, controls, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src.eval import metrics as M
from tests.helpers import TPQ, scale


def test_kde_is_a_density():
    grid = np.linspace(-5, 5, 1001)
    dens = M.kde(np.array([0.0, 0.5, 1.0]), grid)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(M.kde(np.zeros(5), grid)).all()  # identical samples stay finite


def test_compare_sets_same_vs_shifted():
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, 200)
    same = M.compare_sets(rng.normal(0, 1, 200), real)
    shifted = M.compare_sets(rng.normal(4, 1, 200), real)
    assert same["overlap"] > 0.85 and same["kl"] < 0.05
    assert shifted["overlap"] < 0.3 and shifted["kl"] > 1.0
    assert same["inter"] < shifted["inter"]
    hist = M.compare_sets(rng.dirichlet(np.ones(12), 50), rng.dirichlet(np.ones(12), 50))  # vectors
    assert hist["overlap"] > 0.8
    with pytest.raises(ValueError):
        M.compare_sets(np.zeros(1), real)


def test_distinct_ngrams():
    assert M.distinct_ngrams([[1, 2, 3, 4, 1, 2, 3, 4]]) == pytest.approx(4 / 5)
    assert M.distinct_ngrams([[1, 2, 3, 4], [1, 2, 3, 4]]) == 0.5
    long = [list(range(100)) * 2]
    assert M.distinct_ngrams(long) < M.distinct_ngrams(long, count=50)  # matched counts remove length effects


def test_judge_learns_and_reports_its_accuracy():
    from src.eval.judges import Judge

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 3)), rng.normal(5, 1, (40, 3))])
    y = ["SAD"] * 40 + ["HAPPY"] * 40
    judge = Judge.fit("emotion", x, y)
    assert judge.score_on(x, y) == 1.0 and judge.classes == ["HAPPY", "SAD"]


def test_judges_leave_unlabelled_pieces_out():
    """Lakh pieces without a mapped genre have style None: no judge trains or is scored on them."""
    from src.eval.evaluate import Piece, train_judges

    def piece(i: int, style: str | None, emotion: str) -> Piece:
        shift = 0 if emotion == "HAPPY" else 7 + i % 3
        return Piece(f"p{i}", scale() + [0, 0, shift, 0], TPQ, 90.0 + 30 * (style == "POP"), "4/4", [0], [],
                     {"row": {"style": style, "emotion": emotion}}).measure()  # fmt: skip

    train = [piece(i, ("POP", "FOLK", None)[i % 3], ("HAPPY", "SAD")[i % 2]) for i in range(24)]
    judges = train_judges(train, train, seed=0)
    assert judges["style"].classes == ["FOLK", "POP"] and set(judges["emotion"].classes) == {"HAPPY", "SAD"}


def test_control_accuracy_checks_each_control():
    from src.eval.evaluate import Piece, control_accuracy
    from src.generation.song import SongRequest

    req = SongRequest(prompt="a piece for violin", tempo=120.0, form="A:2", key="C major", style="FOLK")
    good = Piece("ok", scale(), TPQ, 120.0, "4/4", [40], [], {"req": req}, {"bars": 2}).measure()
    bad = Piece("bad", scale() + [0, 0, 1, 0], TPQ, 100.0, "4/4", [0], [], {"req": req}, {"bars": 3}).measure()
    acc = control_accuracy([good, bad], {})
    assert acc["tempo"] == acc["bars"] == acc["instruments"] == acc["key"] == 0.5


def test_eval_command_writes_a_deterministic_report(micro_data, micro_checkpoint, tmp_path):
    from src.eval.__main__ import main

    dcfg, _ = micro_data
    args = ["--checkpoint", str(micro_checkpoint), "--data_dir", dcfg.processed_dir, "--conditions", "2"]
    args += ["--max_bars", "4", "--num_samples", "2", "--out_dir", str(tmp_path), "--name"]
    assert main([*args, "a"]) == 0 and main([*args, "b"]) == 0
    metrics = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b")]
    assert metrics[0]["table"] == metrics[1]["table"]  # same seed, same numbers
    rows = {r["kind"]: r for r in metrics[0]["table"]}
    assert set(rows) == {"real", "checkpoint", "baseline"} and rows["checkpoint"]["pieces"] == 4
    assert rows["checkpoint"]["control_tempo"] == 1.0 and rows["checkpoint"]["control_bars"] == 1.0
    assert 0 <= rows["baseline"]["mean_overlap"] <= 1 and set(metrics[0]["judges"]) <= {"emotion", "style"}
    # the floor writes its songs through the same generator: the same controls, raw columns and fix-ups
    controls = {k for k in rows["checkpoint"] if k.startswith("control_")}
    assert controls == {k for k in rows["baseline"] if k.startswith("control_")}
    assert {"control_raw_mode", "control_fix_parallel_mode", "control_mode"} <= controls
    assert rows["baseline"]["control_tempo"] == 1.0 and rows["baseline"]["control_bars"] == 1.0
    assert rows["real"]["pieces"] == rows["checkpoint"]["pieces"]  # the ceiling is a set of the same size
    for k in ("real_vs_set_accuracy", "real_vs_set_unscored"):
        assert 0 <= rows["checkpoint"][k] <= 1 or np.isnan(rows["checkpoint"][k])
    assert set(metrics[0]["texture"]) >= {"real test", "bigram (floor)"}
    for f in ("report.md", "features.png", "piano_rolls.png"):
        assert (tmp_path / "a" / f).stat().st_size > 0
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2


def test_texture_counts_voices_gaps_and_runs():
    from src.music.features import texture

    chorale = np.array([[b * TPQ, TPQ, p, 0] for b in range(8) for p in (48, 55, 64, 72)])
    t = texture(chorale, TPQ)
    assert t["voices_per_beat"] == 4 and t["empty_beat_rate"] == 0 and t["sounding_run_beats"] == 8
    fragments = np.array([[0, TPQ, 60, 0], [4 * TPQ, TPQ // 2, 62, 0], [4 * TPQ, TPQ // 2, 65, 0]])
    t = texture(fragments, TPQ)  # beats 0 and 4 sound, 1-3 are empty: 3 of 5 beats
    assert t["voices_per_beat"] == pytest.approx((4 * 1 + 2 * 2) / 6)
    assert t["empty_beat_rate"] == pytest.approx(3 / 5) and t["sounding_run_beats"] == pytest.approx(0.75)
    tail = np.array([[0, TPQ, 60, 0], [TPQ + TPQ // 8, TPQ // 16, 62, 0]])  # a short note after the last grid point
    assert texture(tail, TPQ)["voices_per_beat"] == 1


def test_silent_openings_are_bars_with_nothing_sounding_in_their_first_quarter():
    from src.music.features import silent_openings

    bar = 4 * TPQ
    notes = np.array(
        [
            [3 * TPQ, TPQ, 67, 0],  # bar 0: a pickup (the first bar is never counted)
            [bar + TPQ // 2, TPQ, 64, 0],  # bar 1: starts inside its first quarter
            [2 * bar + 2 * TPQ, 3 * TPQ, 60, 0],  # bar 2 opens silent; held over into bar 3
            [4 * bar + TPQ, TPQ, 62, 0],  # bar 4 opens with a quarter of rest
        ]
    )
    assert silent_openings(notes, TPQ, "4/4") == [2, 4]
    assert silent_openings(notes, TPQ, "4/4", bars=7) == [2, 4, 5, 6]
    # bars of 3 quarters: bar 3's note starts as its first quarter ends, and is held into bar 4
    assert silent_openings(notes, TPQ, "3/4") == [2, 3, 5]
    assert silent_openings(notes[:0], TPQ, "4/4") == []


def test_real_vs_generated_classifier_sees_a_difference_and_not_a_copy():
    from src.eval.evaluate import Piece, real_vs_generated

    rng = np.random.default_rng(0)

    def piece(i: int, voices: int) -> Piece:
        notes = [[b * TPQ, TPQ, 60 + 3 * v + int(rng.integers(0, 3)), 0] for b in range(16) for v in range(voices)]
        return Piece(f"p{i}", np.array(notes), TPQ, 100.0, "4/4", [0], []).measure()

    real = [piece(i, 4) for i in range(20)]
    for unscored in (False, True):  # without the heuristic's measures, voices still show in texture and notes a bar
        assert real_vs_generated(real, [piece(i, 1) for i in range(20)], seed=0, unscored=unscored) > 0.9
        assert real_vs_generated(real, [piece(i, 4) for i in range(20, 40)], seed=0, unscored=unscored) < 0.75
    assert np.isnan(real_vs_generated(real[:3], real[3:6], seed=0))
    assert len(real[0].realism_features()) - len(real[0].realism_features(unscored=True)) == 7


def test_songs_do_not_depend_on_how_many_processes_make_them(micro_data, micro_checkpoint):
    """The report's songs from two worker processes equal those made one by one in this process."""
    from src.eval.config import EvalConfig
    from src.eval.evaluate import generate_sets
    from src.generation.song import SongControls
    from src.models.sampling import SamplingConfig
    from src.models.text_encoder import caption_embeddings
    from src.utils.io import read_jsonl

    dcfg, _ = micro_data
    rows = [r for r in read_jsonl(Path(dcfg.processed_dir) / "manifest.jsonl") if r["time_signature"] == "4/4"][:4]
    text = caption_embeddings(dcfg.processed_dir)
    threads = torch.get_num_threads()
    songs = {
        workers: generate_sets(
            [str(micro_checkpoint)],
            dcfg.processed_dir,
            SongControls(),
            rows,
            text,
            EvalConfig(num_samples=2, max_bars=2, workers=workers),
            SamplingConfig(temperature=0.9, top_p=0.95),
        )[str(micro_checkpoint)]
        for workers in (1, 2)
    }
    assert len(songs[2]) == 8 and [p.ids for p in songs[1]] == [p.ids for p in songs[2]]
    assert [p.name for p in songs[2]] == [f"{r['id']}#{j}" for r in rows for j in range(2)]
    assert torch.get_num_threads() == threads  # the one-process path gives this process its threads back


def test_real_pieces_are_cut_to_the_songs_length(micro_data):
    """With max_bars the real pieces are their first max_bars bars: tokens and notes stop at that bar line."""
    from src.eval.evaluate import real_pieces
    from src.models.builders import load_codec
    from src.music.notes import bar_ticks

    dcfg, _ = micro_data
    codec = load_codec(dcfg.processed_dir)
    whole = {p.name: p for p in real_pieces(dcfg.processed_dir, "train", codec)}
    cut = real_pieces(dcfg.processed_dir, "train", codec, max_bars=2)
    longer = 0
    for p in cut:
        assert len(codec.bar_token_starts(np.array(p.ids))) <= 2
        if p.time_signature == "4/4" and len(p.notes):
            assert p.notes[:, 0].max() < 2 * bar_ticks(p.tpq, "4/4")
        longer += len(whole[p.name].ids) > len(p.ids)
        assert whole[p.name].ids[: len(p.ids)] == p.ids
    assert longer > 0  # some pieces were longer than two bars
