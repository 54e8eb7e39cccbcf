"""Stage 1 on real corpus pieces: round trip, vocabulary, splits, labels, sources, resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from src.data.folder_source import FolderSource, FolderSourceConfig
from src.data.labels import LabelConfig, analyse
from src.data.prepare import main as prepare_main
from src.data.prepare import prepare
from src.data.splits import SplitConfig, split_of
from src.data.token_store import TokenDataset, TokenStore
from src.data.tokenizer import TokenCodec, load_tokenizer, note_multiset
from src.eval import metrics as F
from src.utils.io import atomic_path, read_jsonl


def manifest(cfg) -> list[dict]:
    return read_jsonl(Path(cfg.processed_dir) / "manifest.jsonl")


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


def test_splits_deterministic_and_disjoint(micro_data):
    cfg, _ = micro_data
    rows = manifest(cfg)
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r["split"])
        assert r["split"] == split_of(r["group"], cfg.splits)
    assert all(len(s) == 1 for s in groups.values()), "a work appears in two splits"
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
        assert r["caption"] and r["key"].split()[0] in F.PITCH_CLASSES


def make_midi(path: Path, qpm: float, num: int, den: int, pitches: list[int], program: int = 0) -> None:
    s = Score(480)
    s.tempos.append(Tempo(0, qpm))
    s.time_signatures.append(TimeSignature(0, num, den))
    t = Track(program=program)
    for i, p in enumerate(pitches):
        t.notes.append(Note(i * 240, 240, p, 90))
    s.tracks.append(t)
    s.dump_midi(str(path))


def test_folder_source_with_corrupt_file(tmp_path):
    d = tmp_path / "midi"
    d.mkdir()
    a_minor = [57, 60, 64, 69, 72, 76, 71, 68, 64, 59, 57, 45] * 4
    make_midi(d / "good.mid", 97.0, 3, 4, a_minor, program=24)
    (d / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (d / "empty.mid").write_bytes(b"")
    (d / "notes.txt").write_text("not music")
    make_midi(d / "silent.mid", 120.0, 4, 4, [])
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


def test_folder_source_end_to_end_lists_rejects(tmp_path):
    d = tmp_path / "midi"
    d.mkdir()
    for i in range(10):
        make_midi(d / f"song{i}.mid", 100.0 + i, 4, 4, [60 + (i + k) % 12 for k in range(40)])
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
        ]
    )
    assert rc == 0
    rejected = read_jsonl(out / "rejected.jsonl")
    assert [Path(r["path"]).name for r in rejected] == ["broken.mid"]
    assert len(read_jsonl(out / "manifest.jsonl")) == 10


def test_bad_cli_input_exits_2(tmp_path):
    assert prepare_main(["--config", "config/data_tiny.yaml", "--set", "labels.phrase_bars=0"]) == 2
    make_midi(tmp_path / "a.mid", 100.0, 4, 4, list(range(60, 80)))
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


def test_dataset_transposition(micro_data):
    cfg, _ = micro_data
    tok = load_tokenizer(Path(cfg.processed_dir) / "tokenizer.json")
    codec = TokenCodec(tok)
    plain = TokenDataset(cfg.processed_dir, "train")
    aug = TokenDataset(cfg.processed_dir, "train", transpose=3, seed=1, codec=codec)
    ids = plain.ids(0)
    assert np.array_equal(codec.encode_base(codec.to_base(ids)), ids)  # BPE codec is exact
    up = codec.transpose(ids, 2)
    a = note_multiset(tok.decode(ids.tolist()))
    b = note_multiset(tok.decode(up.tolist()))
    assert Counter({(p, n + 2, s, d): c for (p, n, s, d), c in a.items()}) == b
    assert np.array_equal(aug.ids(0), TokenDataset(cfg.processed_dir, "train", 3, 1, codec).ids(0))
    assert plain[0]["row"]["split"] == "train"


def test_cached_tokens_take_this_runs_labels(tmp_path):
    """A label setting changed on a rerun: the token shards stay, the manifest's labels follow."""
    d = tmp_path / "midi"
    d.mkdir()
    for i in range(10):
        make_midi(d / f"song{i}.mid", 100.0 + i, 4, 4, [60 + (i + k) % 12 for k in range(40)])
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


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_segmentation_and_key_on_hand_made_examples():
    a = frozenset({(60, 0), (64, 4)})
    b = frozenset({(50, 0), (53, 8)})
    labels, index = F.segment_sections([a, a, b, b, a, a], phrase_bars=2)
    assert labels == [0, 0, 1, 1, 0, 0] and index == [0, 1, 0, 1, 0, 1]
    c_major = np.array([[i * 480, 480, p, 0] for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60])])
    assert F.estimate_key(c_major)[:2] == (0, "major")
    assert F.scale_consistency(c_major, 0, "major") == 1.0
    assert F.bar_starts(4000, 480, [(0, 3, 4)]).tolist() == [0, 1440, 2880]
    assert json.dumps(F.key_name(9, "minor")) == '"A minor"'


def test_corpus_names_are_unique_in_nested_collections():
    from src.data.music21_source import CorpusCollection, corpus_files, corpus_name
    from src.data.sources import safe_name

    files = corpus_files(CorpusCollection(name="haydn", style="CLASSICAL", pattern="haydn/*/*.mxl"))
    names = [safe_name(corpus_name(f, with_suffix=False)) for f in files]
    assert len(files) > 1 and len(set(names)) == len(names)
    bach = corpus_files(CorpusCollection(name="bach", style="CLASSICAL", pattern="bach/bwv66.6.mxl"))
    assert corpus_name(bach[0]) == "bwv66.6.mxl" and corpus_name(bach[0], with_suffix=False) == "bwv66.6"
