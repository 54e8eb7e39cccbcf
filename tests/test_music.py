"""src.music: theory, features, form, the heuristic scorer, the tokenizer (round trip over real files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Track

from src.data.corruptions import corrupt
from src.data.token_store import TokenStore
from src.music import features as F
from src.music.form import parse_form, segment_sections
from src.music.notes import bar_starts
from src.music.scoring import SCORED_FEATURES, ScorerConfig, score_notes
from src.music.theory import estimate_key, key_name, key_pitch_classes, parse_key, scale_consistency
from src.music.tokenizer import load_tokenizer, note_multiset
from tests.helpers import TPQ, manifest, melody, notes_of, scale


def test_vocabulary_is_exactly_512(micro_data):
    cfg, _ = micro_data
    tok = load_tokenizer(Path(cfg.processed_dir) / "tokenizer.json")
    assert len(tok) == 512
    assert tok.is_trained


@pytest.mark.parametrize("which", ["bach/bwv1.6", "bach/bwv66.6", "oneills/0001-0050-000", "oneills/0001-0050-007"])
def test_tokeniser_round_trip(micro_data, which):
    cfg, _ = micro_data
    tok = load_tokenizer(Path(cfg.processed_dir) / "tokenizer.json")
    row = next(r for r in manifest(cfg) if r["id"] == f"music21/{which}")
    original = tok.preprocess_score(Score(row["midi_path"]))  # notes on the tokeniser's grid
    decoded = tok.decode(tok.encode(Path(row["midi_path"])))
    want, got = note_multiset(original), note_multiset(decoded)
    kept = sum((want & got).values()) / sum(want.values())
    assert kept >= 0.99, f"{which}: only {kept:.3f} of notes survive the round trip"
    # ...and the stored shard holds exactly these ids
    store = TokenStore(cfg.processed_dir)
    stored = np.asarray(store[store.row_to_item[row["row"]]])
    assert stored.tolist() == list(tok.encode(Path(row["midi_path"])).ids)


def test_tokenizer_reloads_identically(micro_data, tmp_path):
    cfg, _ = micro_data
    path = Path(cfg.processed_dir) / "tokenizer.json"
    a, b = load_tokenizer(path), load_tokenizer(path)
    midi = manifest(cfg)[0]["midi_path"]
    assert a.encode(Path(midi)).ids == b.encode(Path(midi)).ids
    assert a.vocab_model == b.vocab_model


def test_segmentation_and_key_on_hand_made_examples():
    a = frozenset({(60, 0), (64, 4)})
    b = frozenset({(50, 0), (53, 8)})
    labels, index = segment_sections([a, a, b, b, a, a], phrase_bars=2)
    assert labels == [0, 0, 1, 1, 0, 0] and index == [0, 1, 0, 1, 0, 1]
    c_major = np.array([[i * 480, 480, p, 0] for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60])])
    assert estimate_key(c_major)[:2] == (0, "major")
    assert scale_consistency(c_major, 0, "major") == 1.0
    assert bar_starts(4000, 480, [(0, 3, 4)]).tolist() == [0, 1440, 2880]
    assert json.dumps(key_name(9, "minor")) == '"A minor"'


def test_form_and_key_parsing():
    s = parse_form("intro:4,verse,chorus,verse,chorus,outro:4", 8)
    assert [(x.name, x.bars, x.label, x.start_bar) for x in s][:4] == [
        ("intro", 4, 0, 0),
        ("verse", 8, 1, 4),
        ("chorus", 8, 2, 12),
        ("verse", 8, 1, 20),
    ]
    assert sum(x.bars for x in s) == 40
    assert (
        parse_key("F# minor") == (6, "minor") and parse_key("Bb") == (10, "major") and parse_key("ebm") == (3, "minor")
    )


def test_parallel_mode_mapping():
    from symusic import Score as S

    from src.music.theory import to_parallel_mode

    s = S(480)
    t = Track(program=0)
    for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72]):  # C major scale
        t.notes.append(Note(i * 480, 480, p, 80))
    s.tracks.append(t)
    minor = to_parallel_mode(s, 0, "minor")
    assert [n.pitch for n in minor.tracks[0].notes] == [60, 62, 63, 65, 67, 68, 70, 72]
    back = to_parallel_mode(minor, 0, "major")
    assert [n.pitch for n in back.tracks[0].notes] == [60, 62, 64, 65, 67, 69, 71, 72]


def test_pitch_class_entropy():
    assert F.pitch_class_entropy(notes_of((0, TPQ, 60), (TPQ, TPQ, 72))) == 0.0  # one pitch class
    chromatic = notes_of(*((i * TPQ, TPQ, 60 + i) for i in range(12)))
    assert F.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12))


def test_rhythm_histograms():
    quarters = scale()
    assert F.ioi_histogram(quarters, TPQ)[F.RHYTHM_NAMES.index("1/4")] == 1.0
    assert F.note_length_histogram(quarters, TPQ)[F.RHYTHM_NAMES.index("1/4")] == 1.0
    triplets = notes_of(*((i * TPQ // 3, TPQ // 3, 60) for i in range(7)))
    assert F.ioi_histogram(triplets, TPQ)[F.RHYTHM_NAMES.index("1/12")] == 1.0
    mixed = notes_of((0, TPQ, 60), (TPQ, TPQ // 2, 62), (3 * TPQ // 2, 2 * TPQ, 64))
    hist = F.note_length_histogram(mixed, TPQ)
    assert hist[F.RHYTHM_NAMES.index("1/8")] == pytest.approx(1 / 3) and hist.sum() == pytest.approx(1)


def test_bar_self_similarity():
    a, b = frozenset({(60, 0)}), frozenset({(62, 0)})
    assert F.bar_self_similarity([a, a, a]) == 1.0
    assert F.bar_self_similarity([a, b]) == 0.0
    assert F.bar_self_similarity([a, b, a, b]) == pytest.approx(2 / 3)  # bar 2 new, bars 3-4 repeat


def test_piece_metrics_of_a_scale():
    m = F.piece_metrics(scale(), TPQ, 120.0)
    assert set(m) == {*F.SCALAR_METRICS, *F.HISTOGRAM_METRICS}
    assert m["scale_consistency"] == 1.0 and m["n_pitch_classes"] == 7 and m["notes_per_bar"] == 4
    assert m["polyphony"] == 1.0 and m["empty_bar_rate"] == 0.0 and m["groove_consistency"] == 1.0
    assert m["onsets_per_s"] == pytest.approx(2.0)  # quarters at 120 BPM
    assert m["pitch_range"] == 12 and m["repetition"] == 0.0


SCORER_TPQ = 8  # ticks per beat in the hand-made examples (a 32nd note is one tick)


C_MAJOR_TUNE = [60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 62, 60] * 2  # 4 bars, played twice


def terms(notes: np.ndarray, **kw) -> dict:
    return score_notes(notes, SCORER_TPQ, kw.pop("qpm", 120.0), kw.pop("ts", [(0, 4, 4)]), **kw)["terms"]


def good() -> np.ndarray:
    return melody(C_MAJOR_TUNE, step=8, dur=8)  # one note a beat, in C major, 8 bars of 4/4


def test_scored_features_name_every_measure_behind_the_terms():
    assert set(score_notes(good(), SCORER_TPQ, 120.0)["features"]) == set(SCORED_FEATURES)


def test_in_key_term():
    bad = good().copy()
    bad[1::2, 2] += 1  # every other note a semitone off (the even ones, moved, all lie in F melodic minor)
    assert terms(good())["in_key"] == 1.0 and terms(bad)["in_key"] < 0.8


def test_in_key_target_stops_rewarding_at_the_target_and_leaves_the_measure_alone():
    tune = good().copy()
    tune[3, 2] += 1  # one note of 32 a semitone off: 31/32 = 0.969 in the key
    target = ScorerConfig(in_key_target=0.95)
    assert terms(tune)["in_key"] == pytest.approx(31 / 32, abs=1e-4)
    assert terms(tune, cfg=target)["in_key"] == 1.0 == terms(good(), cfg=target)["in_key"]  # no gain past the target
    bad = good().copy()
    bad[1::2, 2] += 1
    assert terms(bad, cfg=target)["in_key"] < 0.85  # below it, still the share over the target
    scored = score_notes(tune, SCORER_TPQ, 120.0, [(0, 4, 4)], cfg=target)
    assert scored["features"]["scale_consistency"] == pytest.approx(31 / 32)  # the report's measure: unchanged
    with pytest.raises(ValueError, match="in_key_target"):
        ScorerConfig(in_key_target=0.0)


A_MINOR_TUNE = [69, 71, 72, 74, 76, 77, 80, 81, 76, 74, 72, 71, 68, 69, 64, 69] * 2  # with G# leading to A


def test_a_minor_key_s_raised_sixth_and_seventh_are_in_the_key_and_out_of_key_moves_notes_out_of_it():
    tune = melody(A_MINOR_TUNE, step=8, dur=8)
    assert estimate_key(tune)[:2] == (9, "minor")
    assert sorted(key_pitch_classes(9, "minor").tolist()) == [0, 2, 4, 5, 6, 7, 8, 9, 11]  # + F# and G#
    assert scale_consistency(tune, 9, "minor") == 1.0 and terms(tune)["in_key"] == 1.0
    assert scale_consistency(tune, 0, "major") < 0.9  # G# is not in C major: the same notes, another key
    notes = [Note(int(t), int(d), int(p), 80) for t, d, p, _ in tune]
    before = [n.pitch for n in notes]
    rng = np.random.default_rng(0)
    assert corrupt(notes, 0, 10**6, SCORER_TPQ, "out_of_key", np.arange(0, 256, 32), (9, "minor"), rng)
    moved = [n.pitch for n, p in zip(notes, before) if n.pitch != p]
    assert moved and all(p % 12 not in key_pitch_classes(9, "minor") for p in moved)


def test_parallel_mode_corruption_writes_the_passage_in_the_other_mode():
    for pitches, key, other in ((A_MINOR_TUNE, (9, "minor"), (9, "major")), (C_MAJOR_TUNE, (0, "major"), (0, "minor"))):
        tune = melody(pitches, step=8, dur=8)
        notes = [Note(int(t), int(d), int(p), 80) for t, d, p, _ in tune]
        bars, rng = np.arange(0, 256, 32), np.random.default_rng(0)
        assert corrupt(notes, 0, 10**6, SCORER_TPQ, "parallel_mode", bars, key, rng)
        moved = np.array([[n.time, n.duration, n.pitch, 0] for n in notes])
        assert estimate_key(moved)[:2] == other  # the same tune, in the parallel mode
        assert np.abs(moved[:, 2] - tune[:, 2]).max() == 1 and (moved[:, 0] == tune[:, 0]).all()


def test_on_grid_term():
    bad = good().copy()
    bad[1::2, 0] += 1  # a 32nd note late: off the 16th-note grid
    assert terms(good())["on_grid"] == 1.0 and terms(bad)["on_grid"] == pytest.approx(0.5)


def test_groove_term():
    steady = good()
    ragged = np.concatenate([melody([60] * 4, 8, 8, 0), melody([62] * 3, 6, 6, 32), melody([64] * 8, 4, 4, 64)])
    assert terms(steady)["groove"] == 1.0 and terms(ragged)["groove"] < 0.8


def test_structure_term_penalises_a_one_bar_loop():
    loop = melody([60, 64, 67, 72] * 8, 8, 8)  # the same bar eight times
    assert terms(good())["structure"] > 0.9 and terms(loop)["structure"] < 0.6


def test_range_and_polyphony_terms():
    wide = good().copy()
    wide[::2, 2] = 20
    wide[1::2, 2] = 110
    cluster = np.concatenate([good() + [0, 0, k, 0] for k in range(0, 10)])  # ten voices at once
    assert terms(good())["range"] == 1.0 and terms(wide)["range"] < 0.5
    assert terms(good())["polyphony"] == 1.0 and terms(cluster)["polyphony"] < 0.6


def test_density_term_follows_the_emotion():
    fast = melody(C_MAJOR_TUNE, step=2, dur=2)  # 8 onsets a second at 120 BPM
    slow = melody(C_MAJOR_TUNE[:8], step=16, dur=16)  # 1 a second
    assert terms(fast, emotion="HAPPY")["density"] == 1.0 and terms(slow, emotion="HAPPY")["density"] < 0.5
    assert terms(slow, emotion="SAD")["density"] == 1.0 and terms(fast, emotion="SAD")["density"] < 0.5
    assert terms(fast)["density"] is None  # unknown emotion: left out


def test_empty_bars_and_dead_air_terms():
    gappy = np.concatenate([good()[:4], good()[12:] + [0, 0, 0, 0]])  # bars 2-3 silent
    assert terms(good())["no_empty_bars"] == 1.0 and terms(gappy)["no_empty_bars"] < 0.9
    assert terms(good())["no_dead_air"] == 1.0 and terms(gappy)["no_dead_air"] < 0.8


def test_valid_term_and_total():
    g = score_notes(good(), SCORER_TPQ, 120.0, valid=1.0)
    b = score_notes(good(), SCORER_TPQ, 120.0, valid=0.5)
    assert g["terms"]["valid"] == 1.0 and b["total"] < g["total"]
    assert score_notes(np.zeros((0, 4), np.int64), SCORER_TPQ, 120.0)["total"] == 0.0
    with pytest.raises(ValueError):
        ScorerConfig(weights={"nonsense": 1.0})


def test_a_piece_form_keeps_its_repeated_phrases():
    """Stage 1 gives a phrase that repeats the one before it the same letter: the form asks to play it again."""
    from src.music.form import form_of

    assert form_of("AAAABBBBCC", 16) == "A:4,B:4,C:2"
    assert form_of("AAAAAAAABBBBAAAA", 16) == "A:4,A:4,B:4,A:4"
    assert form_of("AAAAAAAAAAAAAAAAAA", 16) == "A:4,A:4,A:4,A:4"  # capped at 16 bars
    assert form_of("AAAAAA", 16, phrase_bars=2) == "A:2,A:2,A:2"
