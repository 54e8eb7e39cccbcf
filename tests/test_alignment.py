"""Stage 4: the heuristic scorer's terms, preference pairs and their validation, the DPO loss and training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.planner_dataset import IGNORE
from src.data.scoring import ScorerConfig, score_notes
from src.models.alignment import dpo_loss, reference_copy, sequence_logps

TPQ = 8  # ticks per beat in the hand-made examples (a 32nd note is one tick)


def melody(pitches: list[int], step: int = 2, dur: int = 2, start: int = 0) -> np.ndarray:
    """Notes (start, duration, pitch, drum) one after another every ``step`` ticks."""
    return np.array([[start + i * step, dur, p, 0] for i, p in enumerate(pitches)], dtype=np.int64)


C_MAJOR_TUNE = [60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 62, 60] * 2  # 4 bars, played twice


def terms(notes: np.ndarray, **kw) -> dict:
    return score_notes(notes, TPQ, kw.pop("qpm", 120.0), kw.pop("ts", [(0, 4, 4)]), **kw)["terms"]


def good() -> np.ndarray:
    return melody(C_MAJOR_TUNE, step=8, dur=8)  # one note a beat, in C major, 8 bars of 4/4


def test_in_key_term():
    bad = good().copy()
    bad[::2, 2] += 1  # every other note a semitone off
    assert terms(good())["in_key"] == 1.0 and terms(bad)["in_key"] < 0.8


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
    g = score_notes(good(), TPQ, 120.0, valid=1.0)
    b = score_notes(good(), TPQ, 120.0, valid=0.5)
    assert g["terms"]["valid"] == 1.0 and b["total"] < g["total"]
    assert score_notes(np.zeros((0, 4), np.int64), TPQ, 120.0)["total"] == 0.0
    with pytest.raises(ValueError):
        ScorerConfig(weights={"nonsense": 1.0})


# ----------------------------------------------------------------------------- DPO maths


def test_dpo_loss_equals_a_hand_computation():
    pc, pr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -3.5])
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # pair 1: 0.1 * ((-10 + 11) - (-12 + 11)) = 0.2; pair 2: 0.1 * ((-4 + 5) - (-3 + 3.5)) = 0.05
    expected = (-math.log(1 / (1 + math.exp(-0.2))) - math.log(1 / (1 + math.exp(-0.05)))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(stats["reward_chosen"]) == pytest.approx((0.1 + 0.1) / 2)
    assert float(stats["accuracy"]) == 1.0


def test_logps_cover_only_continuation_tokens(micro_checkpoint):
    from src.data.preferences import PreferenceDataset
    from src.models.builders import load_planner
    from src.models.conditions import Conditions, batch

    model, _ = load_planner(micro_checkpoint)
    from src.data.preferences import Pair

    pair = Pair("p", {"style": "FOLK"}, prompt=[10, 11, 12], chosen=[20, 21], rejected=[30, 31, 32])
    item = PreferenceDataset([pair], model.cfg, {})[0]
    y = item["y_chosen"]
    assert (y != IGNORE).sum() == 2 and y[3] == 20 and y[4] == 21  # targets after BOS + 3 prompt tokens
    assert (item["y_rejected"] != IGNORE).sum() == 3
    x = torch.as_tensor(item["x_chosen"])[None]
    cond = batch([Conditions(style="FOLK")], model.cfg)
    with torch.no_grad():
        lp, n, logits = sequence_logps(model, x, torch.as_tensor(y)[None], cond)
    manual = logits[0, 3].log_softmax(-1)[20] + logits[0, 4].log_softmax(-1)[21]
    assert int(n) == 2 and float(lp) == pytest.approx(float(manual), rel=1e-5)
    changed = x.clone()
    changed[0, 6:] = 7  # padding after the continuation changes nothing
    with torch.no_grad():
        again = sequence_logps(model, changed, torch.as_tensor(y)[None], cond)[0]
    assert float(again) == pytest.approx(float(lp))


def test_reference_gets_no_gradient_and_stays_unchanged(micro_checkpoint):
    from src.models.builders import load_planner

    model, _ = load_planner(micro_checkpoint)
    ref = reference_copy(model)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(4, model.cfg.vocab_size, (2, 8))
    from src.models.conditions import Conditions, batch

    cond = batch([Conditions()] * 2, model.cfg)
    lp, _, _ = sequence_logps(model, x, x, cond)
    with torch.no_grad():
        rlp, _, _ = sequence_logps(ref, x, x, cond)
    loss, _ = dpo_loss(lp[:1], lp[1:], rlp[:1], rlp[1:], 0.1)
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in ref.parameters())
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())


# ----------------------------------------------------------------------------- pair files


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
    from src.data.tokenizer import load_tokenizer

    tok = load_tokenizer(Path(micro_data[0].processed_dir) / "tokenizer.json")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_pairs(write_pairs(tmp_path / "p.json", [entry]), tok)


def test_pairs_may_point_at_midi_files(micro_data, tmp_path):
    from src.data.preferences import load_pairs
    from src.data.tokenizer import load_tokenizer
    from tests.test_renderer import write_midi

    tok = load_tokenizer(Path(micro_data[0].processed_dir) / "tokenizer.json")
    write_midi(tmp_path / "a.mid", [0.0, 0.5, 1.0], [60, 62, 64])
    write_midi(tmp_path / "b.mid", [0.0, 0.5, 1.0], [60, 61, 66])
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


def test_one_alignment_step_writes_a_checkpoint_stage5_prefers(micro_data, micro_checkpoint, tmp_path):
    from src.generation.run import select_checkpoint
    from src.generation.song import GenerationConfig
    from src.models.alignment import AlignmentConfig, DPOTrainConfig
    from src.models.builders import load_planner
    from src.training.alignment import train

    dcfg, _ = micro_data
    cfg = AlignmentConfig(
        symbolic_ckpt=str(micro_checkpoint),
        data_dir=dcfg.processed_dir,
        pref_data=dcfg.preference.out_path,
        out_dir=str(tmp_path / "aligned/micro"),
        run_dir=str(tmp_path / "runs"),
        run_name="t",
        train=DPOTrainConfig(
            max_steps=1, global_batch=2, micro_batch=2, warmup_steps=1, eval_every=1, lr=1e-3, device="cpu"
        ),
    )
    cfg.on_policy.conditions, cfg.on_policy.samples, cfg.on_policy.max_new_tokens = 2, 2, 24
    cfg.on_policy.min_margin = 0.0
    result = train(cfg)
    assert result["step"] == 1 and math.isfinite(result["val_loss"])
    ref_before, _ = load_planner(micro_checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(ref_before.parameters(), result["reference"].parameters()))
    aligned, state = load_planner(tmp_path / "aligned/micro/best.pt")
    assert state["kind"] == "aligned_planner" and state["reference"]["step"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(aligned.parameters(), ref_before.parameters()))
    gcfg = GenerationConfig(
        preset="micro", checkpoints=[str(tmp_path / "aligned/{preset}/best.pt"), str(micro_checkpoint)]
    )
    assert select_checkpoint(gcfg, None) == tmp_path / "aligned/micro/best.pt"
