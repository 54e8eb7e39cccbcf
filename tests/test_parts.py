"""Parts an instrument can play: program augmentation (re-voicing) in training and the part limits of sampling."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from src.music.form import parse_form
from src.music.instruments import PLAYABLE_RANGE, max_voices, part_facts, revoice_choices
from src.music.tokenizer import TokenCodec
from src.training.datasets import TokenDataset


@pytest.fixture(scope="module")
def revoiced_checkpoint(micro_data, tmp_path_factory) -> Path:
    """A micro planner trained two steps with half its pieces re-voiced (what it records does not need more)."""
    from src.training.symbolic import train
    from tests.conftest import micro_planner_config

    dcfg, _ = micro_data
    out = tmp_path_factory.mktemp("revoiced_ckpt")
    cfg = micro_planner_config(dcfg.processed_dir, out, revoice=0.5)
    train(cfg)
    return Path(cfg.out_dir) / "best.pt"


def revoiced_generator(ckpt: Path, **controls):
    from src.generation.song import SongControls, SongGenerator
    from src.models.builders import codec_from_checkpoint, load_planner

    model, state = load_planner(ckpt)
    return SongGenerator(model, codec_from_checkpoint(state), state["data_stats"], SongControls(**controls))


@pytest.fixture(scope="module")
def codec(micro_data) -> TokenCodec:
    cfg, _ = micro_data
    return TokenCodec.from_file(Path(cfg.processed_dir) / "tokenizer.json")


def test_codec_parts_agree_with_the_decoded_score(micro_data, codec):
    """Each part's lowest and highest pitch and most notes at once, read off the tokens, are the decoded score's."""
    cfg, _ = micro_data
    ds = TokenDataset(cfg.processed_dir, "train")
    for i in range(min(len(ds), 12)):
        ids = ds.ids(i)
        facts = part_facts(codec.decode(ids))
        parts = codec.parts(ids)
        assert set(parts) == set(facts), i
        for p, (low, high, voices) in parts.items():
            pitches = [n.pitch for t in codec.decode(ids).tracks if t.program == p for n in t.notes]
            assert (low, high, voices) == (min(pitches), max(pitches), facts[p]["most_at_once"]), (i, p)


def test_revoice_choices_fit_range_and_players():
    """A four-voice part goes only to instruments without a limit on notes at once; a melody to any whose range
    holds it after the smallest octave move."""
    chords = revoice_choices(48, 76, 4)
    assert chords and all(max_voices(p) is None for p, _ in chords)
    for p, move in revoice_choices(62, 86, 1):
        low, high = PLAYABLE_RANGE[p]
        assert low <= 62 + move and 86 + move <= high and move % 12 == 0
    assert (42, -12) in revoice_choices(62, 86, 1)  # a fiddle tune an octave down on a cello
    assert not any(p == 58 for p, _ in revoice_choices(62, 86, 2))  # a tuba plays one note at a time


def test_revoiced_pieces_are_the_same_music_on_other_instruments(micro_data, codec):
    """Every part moves whole onto another program that can play it (octaves only); rhythm unchanged; the
    conditions name the new programs and withhold the caption; seeded."""
    from src.music.conditions import Conditions
    from src.music.tokenizer import note_multiset

    cfg, _ = micro_data
    plain = TokenDataset(cfg.processed_dir, "train")
    aug = TokenDataset(cfg.processed_dir, "train", codec=codec, revoice=1.0, seed=3)
    changed = 0
    for i in range(min(len(plain), 12)):
        ids, shift, moved, programs = aug.augmented(i)
        if programs is None:
            continue
        changed += programs != plain.rows[i]["programs"]
        before, after = codec.parts(plain.ids(i)), codec.parts(ids)
        assert len(after) == len(before) and set(after) == set(programs) - {128}
        a, b = note_multiset(codec.decode(plain.ids(i))), note_multiset(codec.decode(ids))
        assert sorted((s, d) for (_, _, s, d) in a.elements()) == sorted((s, d) for (_, _, s, d) in b.elements())
        for p, (low, high, voices) in after.items():
            lo, hi = PLAYABLE_RANGE[p]
            assert lo <= low and high <= hi and voices <= (max_voices(p) or voices), (i, p)
        assert np.array_equal(ids, TokenDataset(cfg.processed_dir, "train", codec=codec, revoice=1.0, seed=3).ids(i))
        cond = Conditions.from_row(plain.rows[i], np.zeros(384, np.float32), programs=programs)
        assert cond.programs == programs and cond.text is None
    assert changed >= 6
    half = TokenDataset(cfg.processed_dir, "train", codec=codec, revoice=0.5)
    share = np.mean([half.augmented(i).programs is not None for i in range(len(half))])
    assert 0.25 < share < 0.75


def test_revoice_reach_counts_the_pieces_an_instrument_can_take(micro_data, codec):
    cfg, _ = micro_data
    ds = TokenDataset(cfg.processed_dir, "train", codec=codec, revoice=0.3)
    reach = ds.revoice_reach()
    assert reach.get(42, 0) > 0 and max(reach.values()) <= len(ds)  # fiddle tunes fit a cello an octave down
    assert 40 not in reach or reach[40] < len(ds)


def test_revoiced_checkpoint_counts_instruments_it_saw_through_re_voicing(revoiced_checkpoint):
    """The checkpoint records the re-voicing share and reach; a flute is then seen, not reassigned by register."""
    g = revoiced_generator(revoiced_checkpoint, min_program_pieces=5)
    assert g.stats["revoice"]["share"] == 0.5 and g.stats["program_counts"].get(73, 0) < 5
    assert g.seen_pieces(73) >= 5 and not g.unseen([73, 42])


@pytest.mark.parametrize("prompt", ["solo horn", "solo violin", "horn and violin"])
def test_part_limits_keep_parts_playable(micro_checkpoint, prompt):
    """With the part limits the sampled tokens (raw) never put more notes at once on a player than it has (a horn
    one: a monophonic part never overlaps itself), nor a note outside its range; every note is on the named
    instruments; the JSON says the limits were on."""
    from src.generation.song import SongRequest

    g = revoiced_generator(micro_checkpoint, min_program_pieces=0)
    style = "CLASSICAL"
    notes = 0
    for seed in range(3):
        song = g.generate(SongRequest(prompt=prompt, style=style, seed=seed), None, parse_form("a:4", 4))
        assert song.facts["part_limits"] and g.fallbacks == 0
        for name, part in song.facts["raw"]["parts"].items():
            assert part["out_of_range"] == 0, (seed, name, part)
            assert part["most_at_once"] <= (max_voices(part["program"]) or 99), (seed, name, part)
            notes += part["notes"]
        assert song.facts["raw"]["named_share"] in (None, 1.0)
    assert notes > 0


def test_without_part_limits_the_micro_model_writes_chords_out_of_range_on_a_violin(micro_checkpoint):
    """The limits above are what keeps the parts playable: this micro model writes chorale chords on a violin,
    some below its lowest string, when they are off."""
    from src.generation.song import SongRequest

    g = revoiced_generator(micro_checkpoint, min_program_pieces=0, part_limits=False)
    most, out = Counter(), 0
    for seed in range(3):
        song = g.generate(SongRequest(prompt="violin", style="CLASSICAL", seed=seed), None, parse_form("a:4", 4))
        assert song.facts["part_limits"] is None
        violin = song.facts["raw"]["parts"].get("Violin", {})
        most[violin.get("most_at_once", 0)] += 1
        out += violin.get("out_of_range", 0)
    assert max(most) > 2 and out > 0, (most, out)


def test_the_grammar_gives_drum_pitches_to_the_drum_kit_only(codec):
    """A PitchDrum follows only the drum kit's Program, a Pitch only another program's."""
    from src.models.sampling import Grammar

    g = Grammar(codec)
    kind = [codec.base_type[int(b[0])] if len(b) else "" for b in codec.bpe_to_base]
    for program, want in ((128, "PitchDrum"), (40, "Pitch")):
        token = next(i for i, b in enumerate(codec.bpe_to_base) if list(b) == [codec.program_to_base[program]])
        nxt = {kind[j] for j in g.table[token].nonzero().flatten().tolist()}
        assert nxt == {want}, (program, nxt)


class NoteHungryStepper:
    """No model: every token equally likely except those holding a Program (a new note), e^4 times likelier, and
    those that end one note and start the next in one BPE token, e^8 times: sampling writes as many notes at once
    as the masks let it (an adversarial writer)."""

    def __init__(self, codec: TokenCodec):
        import torch

        kinds = [[codec.base_type[b] for b in base.tolist()] for base in codec.bpe_to_base]
        notes = [
            4.0 * ("Program" in k) + 4.0 * ("Duration" in k[: k.index("Program")] if "Program" in k else 0)
            for k in kinds
        ]
        self.logits = torch.tensor(notes, dtype=torch.float32)[None]

    def start(self, prompt):
        return self.logits

    def step(self, token):
        return self.logits


@pytest.mark.parametrize("prompt", ["horn", "violin", "trumpet and cello"])
def test_part_limits_hold_for_any_token_the_masks_allow(micro_checkpoint, prompt):
    """Tokens drawn uniformly from what the masks allow (no model) still never overlap a monophonic part, never
    put three notes on a bowed string and never leave a range: the limits hold by construction, BPE merges
    (a Duration and the next Position in one token, two notes of one instrument in one token) included."""
    from src.generation.song import SongControls, SongGenerator, SongRequest
    from src.models.builders import codec_from_checkpoint, load_planner

    model, state = load_planner(micro_checkpoint)
    codec = codec_from_checkpoint(state)
    controls = SongControls(min_program_pieces=0, key_attempts=1)
    g = SongGenerator(model, codec, state["data_stats"], controls, lambda *_: NoteHungryStepper(codec))
    notes = 0
    for seed in range(8):
        song = g.generate(SongRequest(prompt=prompt, style="FOLK", seed=seed), None, parse_form("a:4", 4))
        assert g.fallbacks == 0
        for name, part in song.facts["raw"]["parts"].items():
            assert part["out_of_range"] == 0, (seed, name, part)
            assert part["most_at_once"] <= (max_voices(part["program"]) or 99), (seed, name, part)
            notes += part["notes"]
    assert notes >= 16


def test_part_limits_count_the_note_a_merged_token_closes(codec):
    """A BPE token that ends the open note and starts another ("Velocity Duration Program ...") adds both: with two
    notes already at a position (one still open), it may not start a third; once both sound, no third note and
    no return to that position, while a position where they have ended is free."""
    import torch

    from src.generation.limits import PartLimits

    single = {int(b[0]): i for i, b in enumerate(codec.bpe_to_base) if len(b) == 1}
    vocab = codec.tok.vocab
    limits = PartLimits(codec, [52], 32, voices={52: 2})  # a choir of two singers: the micro BPE merges its notes

    def feed(*names: str) -> torch.Tensor:
        for name in names:
            limits.feed(single[vocab[name]])
        return limits.mask()

    here = torch.from_numpy((limits.first_program == 52) & (limits.program_at < 0))  # a note at this position
    merged = here & torch.from_numpy(limits.lead_length >= 0)  # ... written with the open note's Duration
    ok = feed("Bar_None", "TimeSig_4/4", "Position_8", "Program_52", "Pitch_60", "Velocity_79", "Duration_1.0.8")
    ok = feed("Program_52", "Pitch_64")
    assert merged.any() and not ok[merged].any()
    ok = feed("Velocity_79", "Duration_1.0.8")
    assert not ok[here].any() and not ok[single[vocab["Position_8"]]]
    assert ok[single[vocab["Position_16"]]]  # both notes end at 16


def test_a_named_instrument_the_model_leaves_silent_gets_one_unrestricted_sample(micro_checkpoint):
    """Held to a flute it has (almost) never seen, the micro model writes no note; the song is then sampled on its
    own instruments and reassigned to the flute by register, and the JSON says both (never a silent song)."""
    from src.generation.song import SongRequest

    g = revoiced_generator(micro_checkpoint, min_program_pieces=0)
    for seed in range(2):
        song = g.generate(SongRequest(prompt="solo flute", style="FOLK", seed=seed), None, parse_form("a:4", 4))
        fix = song.facts["fixups"]
        assert song.facts["raw"]["parts"] == {} and fix["unrestricted_resample"] and fix["voices_reassigned"]
        flute = song.facts["delivered"]["parts"]["Flute"]
        assert set(song.facts["delivered"]["parts"]) == {"Flute"} and song.facts["notes"] > 0
        assert flute["most_at_once"] == 1 and flute["out_of_range"] == 0  # reassigned, then made playable
        assert any("wrote no note for Flute" in n for n in song.notes)


def test_voices_reassigned_to_a_solo_instrument_are_made_playable():
    """Register reassignment onto a flute folds its notes into the flute's range and keeps one note at a time
    (the highest of a chord): a solo flute never plays the chorale's chords."""
    from symusic import Note, Score, Track

    from src.generation.arrange import assign_instruments

    score = Score(480)
    choir = Track("choir", 52, False)
    for start in (0, 480, 960):
        for pitch in (48, 55, 64, 72):  # a four-voice chord each beat
            choir.notes.append(Note(start, 480, pitch, 80))
    score.tracks.append(choir)
    out, note = assign_instruments(score, [73])
    facts = part_facts(out)[73]
    assert facts == {"notes": 3, "most_at_once": 1, "out_of_range": 0} and "dropped" in note
    assert [n.pitch for n in out.tracks[0].notes] == [72, 72, 72]


def test_folding_into_range_moves_only_out_of_range_notes_by_octaves():
    """After the key's transposition a part can leave its instrument's range: folding brings it back by octaves,
    so every pitch class (and the key) stays, no note is added or dropped, and drums are left alone."""
    from symusic import Note, Score, Track

    from src.generation.arrange import fold_into_ranges

    s = Score(480)
    violin, kit = Track(program=40), Track(program=0, is_drum=True)
    for i, pitch in enumerate((50, 60, 105)):  # below G3, inside, above the violin's top
        violin.notes.append(Note(i * 480, 480, pitch, 80))
    kit.notes.append(Note(0, 120, 30, 80))
    s.tracks.extend([violin, kit])
    out, moved = fold_into_ranges(s)
    assert [n.pitch for n in out.tracks[0].notes] == [62, 60, 93] and moved == 2
    assert [n.pitch for n in out.tracks[1].notes] == [30] and [n.pitch for n in s.tracks[0].notes] == [50, 60, 105]
