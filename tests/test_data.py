"""src.data: sources, labels, splits, the token store, renderer pairs, preference pair files, caching."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from src.data.audio_pairs import (
    REFERENCE_TEMPO,
    AudioPairsConfig,
    notes_in_seconds,
    piano_roll,
    piece_pairs,
    window_notes,
)
from src.data.folder_source import FolderSource, FolderSourceConfig
from src.data.labels import LabelConfig, analyse
from src.data.mel import MelConfig
from src.data.prepare import main as prepare_main
from src.data.prepare import prepare
from src.data.splits import SplitConfig, ensure_held_out, split_of
from src.music.theory import PITCH_CLASSES
from src.music.tokenizer import load_tokenizer
from src.utils.io import read_jsonl
from tests.helpers import in_seconds, manifest, melody, midi_folder, write_midi


def test_splits_deterministic_and_disjoint(micro_data):
    cfg, _ = micro_data
    rows = manifest(cfg)
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r["split"])
        assert r["split"] == split_of(r["group"], cfg.splits)
    assert all(len(s) == 1 for s in groups.values()), "a work appears in two splits"
    bach = [r for r in rows if r["id"].startswith("music21/bach/")]
    assert len(bach) >= 5 and any("-" in r["id"] for r in bach)
    for r in bach:  # a work is its catalogue number: movements and variants ("-inst", "-a") of one BWV together
        assert r["group"] == "bach/" + re.match(r"bwv\d+", r["id"].split("/")[-1])[0], r["id"]
    ids = {s: {r["id"] for r in rows if r["split"] == s} for s in ("train", "validation", "test")}
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"])
    # stable values: a changed hash would reshuffle every user's splits
    assert split_of("music21/x", SplitConfig()) == split_of("music21/x", SplitConfig())
    fractions = Counter(split_of(f"g{i}", SplitConfig()) for i in range(20000))
    assert 0.88 < fractions["train"] / 20000 < 0.92


def test_labels_on_known_pieces(micro_data):
    cfg, _ = micro_data
    rows = {r["id"]: r for r in manifest(cfg)}
    bwv66 = rows["music21/bach/bwv66.6"]  # "Christ unser Herr zum Jordan kam", F# minor
    assert bwv66["key"] == "F# minor" and bwv66["mode"] == "minor"
    assert bwv66["emotion"] in ("SAD", "TENSE")
    assert bwv66["time_signature"] == "4/4"
    assert bwv66["tempo"] == 96.0 and bwv66["tempo_marked"]  # its (playback) metronome mark: quarter = 96
    assert bwv66["programs"] == [52] and bwv66["style"] == "CLASSICAL"
    tune = rows["music21/oneills/0001-0050-000"]  # O'Neill's no. 1, "The Enchanted Valley": M:2/4 K:Gm
    assert tune["title"] == "The Enchanted Valley" and tune["original_path"] == "oneills1850/0001-0050.abc#0"
    assert tune["key"] == "G minor" and tune["time_signature"] == "2/4"
    assert tune["style"] == "FOLK" and tune["programs"] == [40]
    for r in rows.values():
        assert len(r["sections"]) == r["n_bars"] == len(r["section_index"])
        assert r["caption"] and r["key"].split()[0] in PITCH_CLASSES


def test_folder_source_with_corrupt_file(tmp_path):
    d = tmp_path / "midi"
    d.mkdir()
    a_minor = [57, 60, 64, 69, 72, 76, 71, 68, 64, 59, 57, 45] * 4
    write_midi(d / "good.mid", melody(a_minor, 240), qpm=97.0, time_signature=(3, 4), program=24)
    (d / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (d / "empty.mid").write_bytes(b"")
    (d / "notes.txt").write_text("not music")
    write_midi(d / "silent.mid", melody([], 240), qpm=120.0, time_signature=(4, 4))
    src = FolderSource(FolderSourceConfig(path=str(d), style="pop"))
    pieces, rejected = src.collect(tmp_path, 1)
    assert [r.reason for r in rejected] == ["not a MIDI file (suffix '.txt')"]
    results = {}
    for p in pieces:
        try:
            results[Path(p.midi_path).name] = analyse(p, LabelConfig())
        except Exception as e:
            results[Path(p.midi_path).name] = str(e)
    assert results["corrupt.mid"].startswith("not a readable MIDI file")
    assert results["empty.mid"] == "empty file"
    assert results["silent.mid"] == "no notes"
    good = results["good.mid"]
    assert good["tempo"] == 97.0 and good["time_signature"] == "3/4" and good["style"] == "POP"
    assert good["key"] == "A minor" and good["programs"] == [24]


def test_folder_source_drops_byte_identical_duplicates(tmp_path):
    """A copy in a subfolder is not a second piece (it would leak across splits); it is listed as a duplicate."""
    d = midi_folder(tmp_path / "midi", 2)
    (d / "old").mkdir()
    (d / "old/song1 copy.mid").write_bytes((d / "song1.mid").read_bytes())
    pieces, rejected = FolderSource(FolderSourceConfig(path=str(d), style="pop")).collect(tmp_path, 1)
    assert sorted(Path(p.midi_path).name for p in pieces) == ["song0.mid", "song1.mid"]
    assert [(Path(r.path).name, r.reason) for r in rejected] == [
        ("song1 copy.mid", "duplicate: the same bytes as song1.mid")
    ]


def test_folder_source_end_to_end_lists_rejects(tmp_path):
    d = midi_folder(tmp_path / "midi", 10)
    (d / "broken.mid").write_bytes(b"\x00" * 100)
    out = tmp_path / "processed"
    rc = prepare_main(
        [
            "--config",
            "config/data_tiny.yaml",
            "--no_music21",
            "--midi_dir",
            str(d),
            "--style",
            "POP",
            "--set",
            f"raw_dir={tmp_path / 'raw'}",
            "--set",
            f"processed_dir={out}",
            "--set",
            "tokenizer.vocab_size=480",
            "--set",  # never the repository's own pair file (a test once replaced a pipeline's)
            f"preference.out_path={tmp_path / 'pairs.json'}",
        ]
    )
    assert rc == 0
    rejected = read_jsonl(out / "rejected.jsonl")
    assert [Path(r["path"]).name for r in rejected] == ["broken.mid"]
    assert len(read_jsonl(out / "manifest.jsonl")) == 10


def test_every_held_out_split_gets_a_work_when_there_are_enough():

    cfg = SplitConfig(validation=0.05, test=0.05)
    groups = [g for g in (f"user/{w}" for w in ("alpha", "bravo", "charlie", "delta")) if split_of(g, cfg) == "train"]
    assert len(groups) == 4  # a small folder: every work hashed into train
    rows = [{"group": g, "split": "train"} for g in groups for _ in range(2)]
    notes = ensure_held_out(rows, cfg)
    by_split = {s: {r["group"] for r in rows if r["split"] == s} for s in ("train", "validation", "test")}
    assert len(by_split["validation"]) == len(by_split["test"]) == 1 and len(by_split["train"]) == 2
    assert all(len({r["split"] for r in rows if r["group"] == g}) == 1 for g in groups)  # works stay whole
    assert len(notes) == 2 and "moved there" in notes[0]
    assert ensure_held_out(rows, cfg) == []  # nothing more to do
    lone = [{"group": "user/alpha", "split": "train"}]
    assert ensure_held_out(lone, cfg) == [
        "no validation split: 1 works are too few to hold one out",
        "no test split: 1 works are too few to hold one out",
    ]


def test_bad_cli_input_exits_2(tmp_path):
    assert prepare_main(["--config", "config/data_tiny.yaml", "--set", "labels.phrase_bars=0"]) == 2
    write_midi(tmp_path / "a.mid", melody(list(range(60, 80)), 240), qpm=100.0, time_signature=(4, 4))
    assert (
        prepare_main(
            [
                "--config",
                "config/data_tiny.yaml",
                "--set",
                "tokenizer.vocab_size=400",
                "--set",
                f"processed_dir={tmp_path}",
                "--no_music21",
                "--midi_dir",
                str(tmp_path),
                "--style",
                "POP",
            ]
        )
        == 2
    )
    assert prepare_main(["--midi_dir", str(tmp_path), "--style", "ROCK", "--no_music21"]) == 2


def test_cached_tokens_take_this_runs_labels(tmp_path):
    """A label setting changed on a rerun: the token shards stay, the manifest's labels follow."""
    d = midi_folder(tmp_path / "midi", 10)
    out = tmp_path / "processed"
    args = ["--config", "config/data_tiny.yaml", "--no_music21", "--midi_dir", str(d), "--style", "POP",
            "--set", f"raw_dir={tmp_path / 'raw'}", "--set", f"processed_dir={out}",
            "--set", "tokenizer.vocab_size=480", "--set", "audio.enabled=false",
            "--set", f"preference.out_path={tmp_path / 'pairs.json'}", "--set", "preference.train_pairs=4",
            "--set", "preference.validation_pairs=0"]  # fmt: skip
    assert prepare_main(args) == 0
    first, shards = read_jsonl(out / "manifest.jsonl"), (out / "tokens" / "meta.json").read_bytes()
    pairs_fp = json.loads((tmp_path / "pairs.json").read_text())["fingerprint"]
    assert prepare_main([*args, "--set", "labels.arousal_threshold=1000"]) == 0
    second = read_jsonl(out / "manifest.jsonl")
    assert (out / "tokens" / "meta.json").read_bytes() == shards  # not re-tokenised
    assert [(r["id"], r["row"], r["n_tokens"]) for r in second] == [(r["id"], r["row"], r["n_tokens"]) for r in first]
    assert {r["emotion"] for r in first} & {"HAPPY", "TENSE"}  # some high arousal at the default threshold
    assert {r["emotion"] for r in second} <= {"SAD", "PEACEFUL"}  # none at 1000 onsets/s
    assert json.loads((tmp_path / "pairs.json").read_text())["fingerprint"] != pairs_fp  # pairs carry labels


def test_rerun_is_cached_and_resumes_after_interruption(micro_data, tmp_path):
    cfg, first = micro_data
    out = Path(cfg.processed_dir)
    before = (out / "tokens" / "shard_000.bin").read_bytes()
    # simulate an interrupted run: a conversion record and the token store's completion mark gone
    done = sorted((Path(cfg.raw_dir) / "music21" / "bach" / "_done").glob("*.json"))[0]
    done.unlink()
    (out / "tokens" / "meta.json").unlink()
    second = prepare(cfg)
    assert second["pieces"] == first["pieces"] and second["tokens"] == first["tokens"]
    assert (out / "tokens" / "shard_000.bin").read_bytes() == before
    assert done.is_file()
    third = prepare(cfg)  # nothing to do: everything is up to date
    assert third["tokens"] == first["tokens"]
    assert not list(out.rglob("*.tmp"))


def test_corpus_names_are_unique_in_nested_collections():
    from src.data.music21_source import CorpusCollection, corpus_files, corpus_name
    from src.data.sources import safe_name

    files = corpus_files(CorpusCollection(name="haydn", style="CLASSICAL", pattern="haydn/*/*.mxl"))
    names = [safe_name(corpus_name(f, with_suffix=False)) for f in files]
    assert len(files) > 1 and len(set(names)) == len(names)
    bach = corpus_files(CorpusCollection(name="bach", style="CLASSICAL", pattern="bach/bwv66.6.mxl"))
    assert corpus_name(bach[0]) == "bwv66.6.mxl" and corpus_name(bach[0], with_suffix=False) == "bwv66.6"


def test_window_notes_keep_exactly_what_sounds():
    notes = np.array(
        [[0.0, 1.0, 60, 90, 0, 0], [0.5, 3.0, 62, 90, 0, 0], [2.0, 2.5, 64, 90, 0, 0], [3.0, 4.0, 65, 90, 0, 0]]
    )
    w = window_notes(notes, 1.0, 3.0)
    assert w[:, 2].tolist() == [62, 64]  # the first note ended at 1.0, the last starts at 3.0
    assert w[0, :2].tolist() == [0.0, 2.0] and w[0, 6] == 1  # carried over, cut at the window's end
    assert w[1, :2].tolist() == [1.0, 1.5] and w[1, 6] == 0
    roll = piano_roll(w, 128, MelConfig())  # 62.5 frames a second
    assert roll[1, 62].max() == 0 and roll[0, 62, 0] == 90  # sounding without an onset
    assert roll[1, 64].nonzero()[0].tolist() == [round(1.0 * 62.5)]


def test_pair_alignment_onsets_in_tokens_are_energy_in_the_mel(micro_data, tmp_path):
    """Decode each segment's tokens; every onset they hold must be a rise of energy at that mel frame."""
    dcfg, _ = micro_data
    tok = load_tokenizer(Path(dcfg.processed_dir) / "tokenizer.json")
    onsets = [0.3, 1.1, 1.9, 2.7, 3.5, 4.3]
    write_midi(
        tmp_path / "clicks.mid", in_seconds(onsets, [60, 67, 72, 64, 69, 76], 0.3), time_signature=None, velocity=100
    )
    cfg = AudioPairsConfig(enabled=True, segment_frames=128, stride_frames=96, max_tokens=64, min_peak=-20)
    arrays, _ = piece_pairs(str(tmp_path / "clicks.mid"), cfg, tok)
    assert len(arrays["mel"]) >= 2
    fps = cfg.mel.sample_rate / cfg.mel.hop_length
    checked = 0
    for k in range(len(arrays["mel"])):
        ids = arrays["tokens"][k, 1 : arrays["n_tokens"][k]].tolist()
        score = tok.decode(ids)
        energy = np.exp(arrays["mel"][k].astype(np.float64)).sum(0)
        for note in score.tracks[0].notes:
            seconds = note.time / score.ticks_per_quarter * 60 / REFERENCE_TEMPO
            f = int(round(seconds * fps))
            if f < 4 or f + 2 >= len(energy):
                continue
            assert energy[f : f + 3].max() > 5 * energy[f - 4], (k, seconds)
            assert arrays["roll"][k, 1, note.pitch, max(0, f - 4) : f + 5].max() > 0  # the roll agrees
            checked += 1
        true_onsets = [o - arrays["start_frame"][k] / fps for o in onsets]
        n_inside = sum(1 for o in true_onsets if 4 / fps <= o < (len(energy) - 2) / fps)
        assert len(score.tracks[0].notes) >= n_inside
    assert checked >= 4


def test_notes_in_seconds_follow_tempo(tmp_path):
    import symusic

    write_midi(tmp_path / "a.mid", in_seconds([0.5, 1.0], [60, 62]), time_signature=None, velocity=100)
    notes = notes_in_seconds(symusic.Score(str(tmp_path / "a.mid")))
    assert np.allclose(notes[:, 0], [0.5, 1.0], atol=1e-3) and np.allclose(notes[:, 1] - notes[:, 0], 0.4, atol=1e-3)


@pytest.mark.parametrize(
    "cfg", [MelConfig(), MelConfig(n_mels=128), MelConfig(sample_rate=22050, fmin=0.0, fmax=11025.0)]
)
def test_mel_filterbank_equals_librosa(cfg):
    import librosa

    from src.data.mel import mel_filterbank

    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    assert np.allclose(mel_filterbank(cfg), ref, atol=1e-7)


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text(json.dumps({"pairs": pairs}))
    return path


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"chosen": [10], "rejected": "x"}, "pairs[0].rejected"),
        ({"chosen": [10]}, "needs 'rejected'"),
        ({"chosen": [10], "rejected": [99999]}, "pairs[0].rejected"),
        ({"chosen": [10], "rejected": [11], "conditions": {"mood": "x"}}, "pairs[0].conditions"),
        ({"chosen_midi": "missing.mid", "rejected": [11]}, "pairs[0].chosen_midi"),
    ],
)
def test_pair_file_errors_name_entry_and_field(micro_data, tmp_path, entry, message):
    from src.data.preferences import load_pairs
    from src.music.tokenizer import load_tokenizer

    tok = load_tokenizer(Path(micro_data[0].processed_dir) / "tokenizer.json")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_pairs(write_pairs(tmp_path / "p.json", [entry]), tok)


def test_pairs_may_point_at_midi_files(micro_data, tmp_path):
    from src.data.preferences import load_pairs
    from src.music.tokenizer import load_tokenizer

    tok = load_tokenizer(Path(micro_data[0].processed_dir) / "tokenizer.json")
    write_midi(tmp_path / "a.mid", in_seconds([0.0, 0.5, 1.0], [60, 62, 64]), time_signature=None, velocity=100)
    write_midi(tmp_path / "b.mid", in_seconds([0.0, 0.5, 1.0], [60, 61, 66]), time_signature=None, velocity=100)
    pairs = load_pairs(
        write_pairs(
            tmp_path / "p.json",
            [{"id": "h1", "conditions": {"style": "FOLK"}, "chosen_midi": "a.mid", "rejected_midi": "b.mid"}],
        ),
        tok,
    )
    assert pairs[0].chosen and pairs[0].chosen != pairs[0].rejected and pairs[0].prompt == []


def test_stage1_synthetic_pairs(micro_data):
    dcfg, summary = micro_data
    data = json.loads(Path(dcfg.preference.out_path).read_text())
    assert summary["preference_pairs"]["pairs"] == len(data["pairs"]) > 0
    for p in data["pairs"]:
        assert p["chosen"] != p["rejected"] and p["source"].startswith("synthetic:")
        assert set(p["scores"]) == {"chosen", "rejected"}


def test_synthetic_pair_ids_are_unique_at_many_pairs(micro_data, tmp_path):
    """Pairs are drawn with replacement; a repeated piece, bar and corruption would make load_pairs stop."""
    import dataclasses

    from src.data.preferences import build_synthetic_pairs, load_pairs
    from src.data.token_store import TokenStore
    from src.music.tokenizer import TokenCodec
    from src.utils.io import write_json

    dcfg, _ = micro_data
    rows = manifest(dcfg)
    codec = TokenCodec.from_file(Path(dcfg.processed_dir) / "tokenizer.json")
    cfg = dataclasses.replace(dcfg.preference, train_pairs=300, validation_pairs=0)
    data = build_synthetic_pairs(cfg, rows, TokenStore(dcfg.processed_dir), codec, "h")
    ids = [p["id"] for p in data["pairs"]]
    assert len(ids) == len(set(ids)) >= 150
    write_json(tmp_path / "pairs.json", data)
    assert len(load_pairs(tmp_path / "pairs.json", codec.tok)) == len(ids)


def test_stage1_rewrites_a_pair_file_another_run_replaced(micro_data):
    """The file's own fingerprint decides whether it is current (not a record beside the data)."""
    from src.data.prepare import prepare

    dcfg, _ = micro_data
    path = Path(dcfg.preference.out_path)
    before = path.read_bytes()
    prepare(dcfg)
    assert path.read_bytes() == before  # up to date: untouched
    path.write_text(json.dumps({"tokenizer_hash": "another", "pairs": []}))
    prepare(dcfg)
    assert path.read_bytes() == before  # rebuilt, identically (seeded)


@pytest.mark.parametrize(
    "title, group",
    [
        ("bwv250", "bwv250"),  # a chorale's number names the work (it used to lose its "v250")
        ("bwv251.mxl", "bwv251"),
        ("bwv244.3", "bwv244"),  # movement 3 of one work
        ("bwv190.7-inst", "bwv190"),  # its instrumental variant
        ("song1", "song1"),
        ("song2.mid", "song2"),
        ("track_02", "track02"),
        ("Yesterday.1", "yesterday"),  # Lakh's second version of a title
        ("Yesterday", "yesterday"),
        ("tune_v2", "tune"),
        ("Tune take 3", "tune"),
        ("Tune (version 2)", "tune"),
    ],
)
def test_work_groups_keep_the_numbers_that_name_a_work(title, group):
    from src.data.sources import normalise_title

    assert normalise_title(title) == group
