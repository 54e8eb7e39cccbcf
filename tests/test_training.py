"""src.training: the datasets, the shared loop (exact resume, DDP) for the planner and the renderer, and DPO."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from src.models.builders import load_codec, load_planner, resolve_planner_config
from src.models.sampling import Grammar, SamplingConfig, generate
from src.models.symbolic_planner import PlannerConfig, SymbolicPlanner
from src.models.text_encoder import caption_embeddings
from src.music.conditions import NULL_KEY, Conditions, batch
from src.music.theory import parse_key
from src.music.tokenizer import BOS, IGNORE, TokenCodec, load_tokenizer, note_multiset
from src.music.vocab import DRUMS, EMOTIONS
from src.training.datasets import AudioPairDataset, PlannerDataset, TokenDataset, balanced_repeats
from src.training.dpo import dpo_loss, reference_copy, sequence_logps
from src.training.symbolic import SymbolicConfig, mode_contrast_loss, train
from src.utils.config import save_config
from src.utils.io import read_jsonl
from tests.conftest import ROOT, micro_alignment_config, micro_planner_config, micro_renderer_config, tiny_model


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


def test_parallel_mode_augmentation_flips_mode_emotion_and_withholds_the_caption(micro_data):
    """Pieces moved to the parallel mode sound in it, and their conditions say so (key mode, emotion valence),
    without the caption that names the old key and mood."""
    from src.music.notes import notes_array
    from src.music.theory import estimate_key

    dcfg, _ = micro_data
    codec = load_codec(dcfg.processed_dir)
    plain = TokenDataset(dcfg.processed_dir, "train", 0, 0, codec)
    moved = TokenDataset(dcfg.processed_dir, "train", 0, 0, codec, parallel_mode=1.0)
    flips, tried = 0, 0
    for i, row in enumerate(moved.rows[:20]):
        ids, shift, was_moved = moved.ids_and_shift(i)
        if not was_moved:
            continue
        tried += 1
        before = estimate_key(notes_array(codec.decode(plain.ids(i))))[1]
        flips += estimate_key(notes_array(codec.decode(ids)))[1] != before
        c = Conditions.from_row(row, np.ones(384), 0, shift, parallel=True)
        assert c.text is None and (c.key >= 12) == (row["mode"] == "major")
        assert (c.emotion in ("SAD", "TENSE")) == (row["emotion"] in ("HAPPY", "PEACEFUL"))
    assert tried >= 15 and flips >= 0.8 * tried
    half = TokenDataset(dcfg.processed_dir, "train", 0, 0, codec, parallel_mode=0.5)
    share = np.mean([half.ids_and_shift(i)[2] for i in range(len(half))])
    assert 0.25 < share < 0.75 and half.ids_and_shift(3)[2] == half.ids_and_shift(3)[2]  # seeded


def test_balance_draws_the_rarer_mode_of_each_style_more_often():
    """Temperature sampling over (style, mode): 0 leaves the data as it is, 1 evens each style's modes, a style
    with one mode is untouched."""
    rows = [{"style": "FOLK", "mode": "major"}] * 9 + [{"style": "FOLK", "mode": "minor"}] * 1
    rows += [{"style": "JAZZ", "mode": "minor"}] * 3

    def seen(balance: float) -> Counter:
        return Counter(
            (r["style"], r["mode"]) for r, n in zip(rows, balanced_repeats(rows, balance).tolist()) for _ in range(n)
        )

    assert seen(0.0) == Counter({("FOLK", "major"): 9, ("FOLK", "minor"): 1, ("JAZZ", "minor"): 3})
    assert seen(0.5) == Counter({("FOLK", "major"): 9, ("FOLK", "minor"): 3, ("JAZZ", "minor"): 3})
    assert seen(1.0) == Counter({("FOLK", "major"): 9, ("FOLK", "minor"): 9, ("JAZZ", "minor"): 3})


def test_mode_balanced_windows_repeat_pieces_with_draws_of_their_own(micro_data):
    """A balanced training set lists each piece as often as balanced_repeats says; a piece's first draw is the
    unbalanced set's example, its repeats get their own augmentation."""
    dcfg, _ = micro_data
    codec = load_codec(dcfg.processed_dir)
    cfg = PlannerConfig(block_size=48, max_bars=16)
    emb = caption_embeddings(dcfg.processed_dir)
    kw = {"revoice": 1.0, "seed": 0}
    plain = PlannerDataset(dcfg.processed_dir, "train", cfg, codec, emb, **kw)
    even = PlannerDataset(dcfg.processed_dir, "train", cfg, codec, emb, **kw, balance=1.0)
    repeats = balanced_repeats(plain.pieces.rows, 1.0)
    assert repeats.max() > 1 and len(even) == repeats.sum() > len(plain)
    assert even.draws[0] == (0, 0) and plain.draws[0] == (0, 0)
    assert np.array_equal(even.pieces.augmented(0, 0).ids, plain.pieces.augmented(0).ids)
    piece = int(np.flatnonzero(repeats > 1)[0])
    copies = [even.pieces.augmented(piece, d).programs for d in range(int(repeats[piece]))]
    assert len({tuple(p or ()) for p in copies}) > 1  # the repeats are voiced by other instruments


def test_key_relative_pieces_sound_on_tonic_c_and_say_so(micro_data):
    """key_relative: each piece is moved to tonic C (the nearer octave that fits), its key condition C in its
    own mode; training and validation windows alike; transposition on top of it is refused."""
    from src.music.notes import notes_array
    from src.music.theory import estimate_key

    dcfg, _ = micro_data
    codec = load_codec(dcfg.processed_dir)
    plain = TokenDataset(dcfg.processed_dir, "train", 0, 0, codec)
    rel = TokenDataset(dcfg.processed_dir, "train", 0, 0, codec, key_relative=True)
    moved = 0
    for i, row in enumerate(rel.rows[:20]):
        ids, shift, _ = rel.ids_and_shift(i)
        assert shift in ((-row["key_tonic"]) % 12, (-row["key_tonic"]) % 12 - 12) and abs(shift) <= 6
        assert Conditions.from_row(row, None, 0, shift).key == (12 if row["mode"] == "minor" else 0)
        before = estimate_key(notes_array(codec.decode(plain.ids(i))))[0]
        after = estimate_key(notes_array(codec.decode(ids)))[0]
        moved += after == (before + shift) % 12
    assert moved == 20
    assert rel.off_tonic_c() == []  # every micro piece fits on C: none is left in its own key
    cfg = PlannerConfig(block_size=48, max_bars=16)
    emb = caption_embeddings(dcfg.processed_dir)
    val = PlannerDataset(dcfg.processed_dir, "validation", cfg, codec, emb, eval_windows=1, key_relative=True)
    assert all(int(val[i]["key"]) in (0, 12, NULL_KEY) for i in range(len(val)))
    with pytest.raises(ValueError, match="key_relative"):
        TokenDataset(dcfg.processed_dir, "train", 3, 0, codec, key_relative=True)


def test_planner_sets_take_each_augmentation_from_its_own_config_key(micro_data):
    """Regression: a positional slip once trained with train.revoice as the parallel-mode share and no re-voicing."""
    from src.training.symbolic import TrainConfig, planner_sets

    dcfg, _ = micro_data
    codec = load_codec(dcfg.processed_dir)
    tc = TrainConfig(parallel_mode=0.1, revoice=0.3, seed=5)
    emb = np.zeros((999, 384))
    train_ds, val_ds = planner_sets(tc, dcfg.processed_dir, PlannerConfig(), codec, emb)
    p = train_ds.pieces
    assert (p.parallel_mode, p.revoice, p.transpose, p.seed, p.key_relative) == (0.1, 0.3, 0, 5, False)
    assert train_ds.windows is None and val_ds.windows and val_ds.pieces.revoice == val_ds.pieces.parallel_mode == 0
    rel, _ = planner_sets(TrainConfig(key_relative=True), dcfg.processed_dir, PlannerConfig(), codec, emb)
    assert rel.pieces.key_relative


def test_validation_windows_start_on_a_bar_like_training_windows(micro_data):
    dcfg, _ = micro_data
    codec = load_codec(dcfg.processed_dir)
    cfg = PlannerConfig(block_size=48, max_bars=16)
    ds = PlannerDataset(
        dcfg.processed_dir, "validation", cfg, codec, caption_embeddings(dcfg.processed_dir), eval_windows=3
    )
    later = [(p, s) for p, s in ds.windows if s > 0]
    assert later, "no piece is long enough for a second window"
    for piece, start in ds.windows:
        seq = np.concatenate([[BOS], ds.pieces.ids(piece)])
        assert start == 0 or codec.starts_bar[seq[start]], (piece, start)
    for (p, s), (q, t) in zip(ds.windows, ds.windows[1:]):
        assert p != q or t >= s + cfg.block_size  # no token is scored twice


def test_prepare_writes_pairs_and_dataset_reads_them(micro_data):
    dcfg, summary = micro_data
    ds = AudioPairDataset(dcfg.processed_dir, "train")
    assert summary["audio_segments"]["train"] == len(ds) > 0
    item = ds[0]
    assert item["mel"].shape == (1, 32, 64) and item["roll"].shape == (2, 128, 64)
    assert item["tokens"][0] == 1 and item["tokens_mask"].sum() >= 1
    assert abs(float(item["mel"].mean())) < 3
    index = json.loads((Path(dcfg.processed_dir) / "audio_pairs" / "index.json").read_text())
    assert index["mel"]["n_mels"] == 32 and index["segment_frames"] == 64


def test_a_checkpoint_resumes_only_under_its_own_training_settings(micro_data, tmp_path):
    """A changed train.* setting is an error naming it (not a skip as up to date); more steps resume."""
    dcfg, _ = micro_data
    train(micro_planner_config(dcfg.processed_dir, tmp_path, max_steps=2, eval_every=2))
    with pytest.raises(ValueError, match=r"train\.revoice=0\.0, the config says 0\.3"):
        train(micro_planner_config(dcfg.processed_dir, tmp_path, max_steps=2, eval_every=2, revoice=0.3))
    assert train(micro_planner_config(dcfg.processed_dir, tmp_path, max_steps=3, eval_every=3))["step"] == 3


def test_renderer_training_steps_resume_and_checkpoint(micro_data, tmp_path):
    from src.models.builders import load_renderer
    from src.training.renderer import train

    dcfg, _ = micro_data
    cfg = micro_renderer_config(dcfg.processed_dir, tmp_path, max_steps=2)
    r1 = train(cfg, stop_after=1)
    assert r1["step"] == 1
    r2 = train(cfg)
    assert r2["step"] == 2 and math.isfinite(r2["val_loss"])
    straight = micro_renderer_config(dcfg.processed_dir, tmp_path / "straight", max_steps=2)
    r3 = train(straight)
    assert r3["val_loss"] == pytest.approx(r2["val_loss"], rel=1e-5)  # resume is exact
    model, state = load_renderer(Path(cfg.out_dir) / "best.pt")
    assert state["kind"] == "audio_renderer" and "ema" in state and state["mel"]["n_mels"] == 32
    assert model.cfg.n_mels == 32 and not model.training
    assert list(Path(cfg.run_dir).rglob("events.out.tfevents*"))


def test_planner_training_steps_resume_and_sample(micro_data, tmp_path):
    dcfg, _ = micro_data
    a = train(micro_planner_config(dcfg.processed_dir, tmp_path / "a", max_steps=4, eval_every=2))
    assert np.isfinite(a["val_loss"]) and (tmp_path / "a/ckpt/best.pt").is_file()
    # interrupted after 1 step (with a checkpoint), resumed for 3 more: identical to 4 straight steps
    train(micro_planner_config(dcfg.processed_dir, tmp_path / "b", max_steps=4, eval_every=2), stop_after=1)
    b = train(micro_planner_config(dcfg.processed_dir, tmp_path / "b", max_steps=4, eval_every=2))
    for (n, p), q in zip(a["model"].state_dict().items(), b["model"].state_dict().values()):
        assert torch.equal(p, q), n
    # the checkpoint alone rebuilds the model; sampling is grammatical and seeded
    model, state = load_planner(tmp_path / "a/ckpt/last.pt", dcfg.processed_dir)
    codec = load_codec(dcfg.processed_dir)
    ds = PlannerDataset(
        dcfg.processed_dir, "validation", model.cfg, codec, caption_embeddings(dcfg.processed_dir), eval_windows=1
    )
    cond = {k: torch.as_tensor(np.asarray(v))[None] for k, v in ds[0].items() if k not in ("x", "y")}
    grammar = Grammar(codec)
    outs = [
        generate(
            model,
            lambda b0: cond,
            torch.tensor([[BOS]]),
            60,
            SamplingConfig(guidance=1.5),
            torch.Generator().manual_seed(5),
            grammar,
        )
        for _ in range(2)
    ]
    assert torch.equal(outs[0], outs[1])
    ids = outs[0][0].tolist()
    assert all(grammar.table[a, b] for a, b in zip(ids, ids[1:]) if b != 0)
    score = codec.decode(ids)
    assert score.note_num() > 0


def test_planner_without_validation_data_still_writes_best(micro_data, tmp_path):
    """A user's folder may give no validation piece: best.pt is then the latest checkpoint, and the log says so."""
    import shutil

    from src.utils.io import read_jsonl, write_jsonl

    dcfg, _ = micro_data
    data = tmp_path / "data"
    shutil.copytree(dcfg.processed_dir, data)
    rows = read_jsonl(data / "manifest.jsonl")
    write_jsonl(
        data / "manifest.jsonl", [{**r, "split": "train" if r["split"] == "validation" else r["split"]} for r in rows]
    )
    out = train(micro_planner_config(str(data), tmp_path / "run", max_steps=2, eval_every=1))
    assert np.isnan(out["val_loss"])
    best, last = (torch.load(tmp_path / f"run/ckpt/{n}.pt", weights_only=True) for n in ("best", "last"))
    assert best["step"] == last["step"] == 2


def test_refuses_other_tokenizer(micro_data, tmp_path):
    dcfg, _ = micro_data
    train(micro_planner_config(dcfg.processed_dir, tmp_path, max_steps=1, eval_every=1))
    state = torch.load(tmp_path / "ckpt/last.pt", weights_only=True)
    state["tokenizer_hash"] = "0" * 16
    torch.save(state, tmp_path / "ckpt/last.pt")
    with pytest.raises(ValueError, match="made with tokenizer 0000"):
        train(micro_planner_config(dcfg.processed_dir, tmp_path, max_steps=2, eval_every=1))


STAGES = ("symbolic", "renderer", "alignment")


def stage_run(stage: str, request, out: Path, **train):
    """(config, train function) of a micro run of ``stage`` with its condition dropout on."""
    import importlib

    dcfg, _ = request.getfixturevalue("micro_data")
    mod = importlib.import_module(f"src.training.{stage}")
    if stage == "symbolic":
        train.setdefault("cond_dropout", {f: 0.3 for f in ("text", "style", "emotion", "tempo", "key", "plan")})
        return micro_planner_config(dcfg.processed_dir, out, **train), mod.train
    if stage == "renderer":
        return micro_renderer_config(dcfg.processed_dir, out, **{"cond_dropout": 0.5, **train}), mod.train
    ckpt = request.getfixturevalue("micro_checkpoint")
    return micro_alignment_config(dcfg.processed_dir, dcfg.preference.out_path, ckpt, out, **train), mod.train


@pytest.mark.parametrize("stage", STAGES)
def test_ddp_matches_single_process(stage, request, tmp_path):
    """torchrun with 2 gloo ranks, condition dropout on: parameters identical across ranks and equal to one
    process with the same global batch (each example draws its own dropout and noise, whichever rank has it).
    Two steps of 4 stay inside the first epoch (an epoch's end drops a different remainder per rank).
    Float sums differ in order, and Adam turns a gradient that is ~0 in theory (a bias before a group norm)
    into a full step of either sign: so all but 0.1% of the values must agree to 2e-5, and all to 2 steps.
    In fp32 (amp none): bf16 autocast, which a CPU with native bf16 gets, rounds those sums coarser."""
    single, fit_fn = stage_run(stage, request, tmp_path / "single", max_steps=2, eval_every=2, amp="none")
    ref = fit_fn(single)["model"].state_dict()
    ddp, _ = stage_run(stage, request, tmp_path / "ddp", max_steps=2, eval_every=2, amp="none")
    Path(ddp.out_dir).mkdir(parents=True)
    save_config(ddp, tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, str(ROOT / "tests/ddp_worker.py"), stage, str(tmp_path / "ddp.yaml")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(Path(ddp.out_dir) / "rank0.pt", weights_only=True)
    r1 = torch.load(Path(ddp.out_dir) / "rank1.pt", weights_only=True)
    off, total = 0, 0
    for name in ref:
        assert torch.equal(r0[name], r1[name]), name
        diff = (r0[name].float() - ref[name].float()).abs()
        off, total = off + int((diff > 2e-5 + 1e-4 * ref[name].float().abs()).sum()), total + diff.numel()
        assert float(diff.max()) <= 2 * 2 * single.train.lr, name
    assert off <= total / 1000, f"{off} of {total} values differ from one process's"
    if stage == "symbolic":
        assert not torch.equal(r0["tok.weight"], load_planner_init(ddp)["tok.weight"])


@pytest.mark.parametrize("stage", STAGES)
def test_resume_is_exact_with_dropout_on(stage, request, tmp_path):
    """Interrupted after step 2 (a checkpoint, then a fresh process's resume) with layer and condition dropout
    on: the parameters equal those of an uninterrupted run."""
    drop = {"symbolic": {}, "renderer": {}, "alignment": {"policy_dropout": 0.2}}[stage]
    straight, fit_fn = stage_run(stage, request, tmp_path / "straight", max_steps=4, eval_every=4, **drop)
    resumed, _ = stage_run(stage, request, tmp_path / "resumed", max_steps=4, eval_every=4, **drop)
    for cfg in (straight, resumed):
        if stage == "symbolic":
            cfg.model.dropout = 0.2
        if stage == "renderer":
            cfg.model.dropout = 0.2
    a = fit_fn(straight)["model"].state_dict()
    fit_fn(resumed, stop_after=2)
    torch.manual_seed(1234)  # the process's RNG is elsewhere when it resumes
    b = fit_fn(resumed)["model"].state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_kill_9_and_resume_equals_an_uninterrupted_run(micro_data, tmp_path):
    """Stage 2 as a user runs it, dropout on: SIGKILL after a checkpoint, run the same command again;
    the final parameters equal those of a run that was never interrupted."""
    import signal
    import time

    dcfg, _ = micro_data
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    runs = {}
    for name in ("straight", "killed"):
        cfg = micro_planner_config(dcfg.processed_dir, tmp_path / name, max_steps=60, eval_every=2, log_every=10)
        cfg.model.dropout = 0.2
        save_config(cfg, tmp_path / f"{name}.yaml")
        runs[name] = ([sys.executable, "02_train_symbolic.py", "--config", str(tmp_path / f"{name}.yaml")], cfg)
    cmd, straight = runs["straight"]
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    cmd, killed = runs["killed"]
    last = Path(killed.out_dir) / "last.pt"
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if last.is_file() and torch.load(last, weights_only=True)["step"] >= 10:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = torch.load(last, weights_only=True)["step"]
    assert 10 <= killed_at < 60
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    a = torch.load(Path(straight.out_dir) / "last.pt", weights_only=True)["model"]
    b = torch.load(last, weights_only=True)["model"]
    assert torch.load(last, weights_only=True)["step"] == 60
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} (killed at step {killed_at})"


def load_planner_init(cfg: SymbolicConfig) -> dict:
    """The untrained parameters (same seed): training must have moved them."""
    codec = load_codec(cfg.data_dir)
    torch.manual_seed(cfg.train.seed)
    return SymbolicPlanner(resolve_planner_config(cfg.model, codec)).state_dict()


def test_dpo_loss_equals_a_hand_computation():
    pc, pr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -3.5])
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # pair 1: 0.1 * ((-10 + 11) - (-12 + 11)) = 0.2; pair 2: 0.1 * ((-4 + 5) - (-3 + 3.5)) = 0.05
    expected = (-math.log(1 / (1 + math.exp(-0.2))) - math.log(1 / (1 + math.exp(-0.05)))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(stats["reward_chosen"]) == pytest.approx((0.1 + 0.1) / 2)
    assert float(stats["accuracy"]) == 1.0


def test_a_trained_key_profile_holds_each_mode_s_own_third(micro_checkpoint):
    """30 steps on the micro corpus teach the key profile the modes: the major third above the tonic over the minor
    third in major keys, the other way round in minor keys; the checkpoint alone rebuilds it."""
    model, _ = load_planner(micro_checkpoint)
    major, minor = (model.cfg.key_profile_gain * model.key_profile.detach()).view(2, 12)
    assert major[4] > major[3] and minor[3] > minor[4]
    assert model.pc_counts.sum() > 0 and len(model.cfg.token_pitch_classes) == model.cfg.vocab_size


def test_logps_cover_only_continuation_tokens(micro_checkpoint):
    from src.data.preferences import Pair
    from src.models.builders import codec_from_checkpoint, load_planner
    from src.training.datasets import PreferenceDataset

    model, _ = load_planner(micro_checkpoint)

    pair = Pair("p", {"style": "FOLK"}, prompt=[10, 11, 12], chosen=[20, 21], rejected=[30, 31, 32])
    item = PreferenceDataset([pair], model.cfg, {}, codec_from_checkpoint(_))[0]
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


def test_chosen_and_rejected_share_one_prompt_that_starts_at_a_bar(micro_data):
    """A long prompt loses whole bars from its front, the same for both sides, and the plan moves on as many."""
    from src.data.preferences import Pair
    from src.data.token_store import TokenStore
    from src.training.datasets import PreferenceDataset

    dcfg, _ = micro_data
    codec, store = load_codec(dcfg.processed_dir), TokenStore(dcfg.processed_dir)
    ids = max((store[i] for i in range(len(store))), key=len).astype(np.int64).tolist()
    starts = codec.bar_token_starts(np.asarray(ids))
    assert len(starts) >= 8
    prompt, chosen = ids[: starts[6]], ids[starts[6] : starts[7]]
    rejected = chosen + chosen[-5:]  # 5 tokens longer: the shared prompt must leave room for it
    cfg = PlannerConfig(block_size=len(prompt) + len(rejected) - 2, max_bars=16)  # 1 token short of room
    sections = ["A", "A", "B", "B", "C", "C", "D", "D"]
    pair = Pair("p", {"style": "FOLK", "sections": sections}, prompt=prompt, chosen=chosen, rejected=rejected)
    item = PreferenceDataset([pair], cfg, {}, codec)[0]
    n_c, n_r = ((item[f"y_{s}"] != IGNORE).sum() for s in ("chosen", "rejected"))
    assert (n_c, n_r) == (len(chosen), len(rejected))
    kept = len(prompt) - starts[1]  # the first bar went: the next bar start fits
    assert item["x_chosen"][1] == prompt[starts[1]] and codec.starts_bar[item["x_chosen"][1]]
    assert np.array_equal(item["x_chosen"][: 1 + kept], item["x_rejected"][: 1 + kept])
    assert item["plan_label"][0] != item["plan_label"][1] == item["plan_label"][2]  # "A" "B" "B": one bar on


def test_on_policy_prompt_starts_at_a_bar_and_its_plan_follows_the_window(micro_data, micro_checkpoint, monkeypatch):
    """The on-policy sampler's context keeps whole bars, and its condition function re-slices the plan by the
    bars cut from the prompt plus the window's own bar offset (it used to return one fixed plan)."""
    import src.training.dpo as dpo
    from src.data.token_store import TokenStore
    from src.music.form import section_labels
    from src.utils.io import read_jsonl

    dcfg, _ = micro_data
    import dataclasses
    import types

    codec, store = load_codec(dcfg.processed_dir), TokenStore(dcfg.processed_dir)
    rows = [r for r in read_jsonl(Path(dcfg.processed_dir) / "manifest.jsonl") if r["row"] in store.row_to_item]
    seen = {}

    def fake_generate(model, cond_fn, x0, *args, **kw):
        seen.update(x0=x0, plans=[cond_fn(b)["plan_label"][0].tolist() for b in (0, 2)])
        return x0

    monkeypatch.setattr(dpo, "generate", fake_generate)
    cfg = dpo.OnPolicyConfig(conditions=1, prompt_bars=8)
    long = [r for r in rows if r["n_bars"] > 12]
    row = min(long, key=lambda r: len(store[store.row_to_item[r["row"]]]) / r["n_bars"])  # short bars: some fit
    ids = store[store.row_to_item[row["row"]]].astype(np.int64)
    starts = codec.bar_token_starts(ids)
    planner, _ = load_planner(micro_checkpoint)  # generate is faked: only its config counts, half the prompt fits
    model = types.SimpleNamespace(cfg=dataclasses.replace(planner.cfg, block_size=int(starts[8])))
    dpo.sample_continuations(model, codec, row, store, np.zeros((len(rows) + 999, 384), np.float32), cfg, 2, None)
    x0 = seen["x0"][0, 1:].numpy()
    gone = int(np.searchsorted(starts, starts[8] - len(x0)))  # bars before the context
    assert gone > 0 and codec.starts_bar[x0[0]] and np.array_equal(x0, ids[starts[gone] : starts[8]])
    labels = section_labels(row["sections"])
    for plan, b in zip(seen["plans"], (0, 2)):
        want = labels[gone + b :][: model.cfg.max_bars]
        assert plan[: len(want)] == want


def test_length_normalised_dpo_ignores_a_shift_common_to_every_token():
    """Lowering every token's log-prob by the same amount widens summed DPO's margin when the rejected side is
    longer (a length cue, not quality); the length-normalised rewards do not move."""
    n_c, n_r = torch.tensor([40.0, 90.0]), torch.tensor([72.0, 58.0])
    pc, pr, rc, rr = (
        torch.tensor([-50.0, -80.0]),
        torch.tensor([-90.0, -70.0]),
        torch.tensor([-52.0, -85.0]),
        torch.tensor([-88.0, -69.0]),
    )
    shift = 0.1
    for lengths, moves in ((None, True), ((n_c, n_r), False)):
        before, _ = dpo_loss(pc, pr, rc, rr, 0.2, lengths)
        after, _ = dpo_loss(pc - shift * n_c, pr - shift * n_r, rc, rr, 0.2, lengths)
        assert (abs(float(after - before)) > 1e-3) == moves
    # equal lengths: the same as plain DPO
    same = torch.tensor([60.0, 60.0])
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, 0.2, (same, same))[0], dpo_loss(pc, pr, rc, rr, 0.2)[0])


def test_reference_gets_no_gradient_and_stays_unchanged(micro_checkpoint):
    from src.models.builders import load_planner

    model, _ = load_planner(micro_checkpoint)
    ref = reference_copy(model)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(4, model.cfg.vocab_size, (2, 8))

    cond = batch([Conditions()] * 2, model.cfg)
    lp, _, _ = sequence_logps(model, x, x, cond)
    with torch.no_grad():
        rlp, _, _ = sequence_logps(ref, x, x, cond)
    loss, _ = dpo_loss(lp[:1], lp[1:], rlp[:1], rlp[1:], 0.1)
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in ref.parameters())
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())


def test_exclude_sources_leaves_those_pairs_out_and_rejects_a_name_that_matches_none():
    from src.data.preferences import Pair
    from src.training.alignment import without_sources
    from src.training.dpo import AlignmentConfig

    pairs = [
        Pair(str(i), {}, [], [], [], source=s)
        for i, s in enumerate(["synthetic:stuck_notes", "synthetic:off_grid", "human"])
    ]
    kept = without_sources(pairs, AlignmentConfig(exclude_sources=["synthetic:stuck_notes"]))
    assert [p.source for p in kept] == ["synthetic:off_grid", "human"]
    assert without_sources(pairs, AlignmentConfig()) == pairs
    with pytest.raises(ValueError, match="synthetic:stuck_note match no pair"):
        without_sources(pairs, AlignmentConfig(exclude_sources=["synthetic:stuck_note"]))


def test_pairs_for_a_key_relative_planner_move_onto_tonic_c(micro_data):
    """Each pair's prompt and continuations move by one shift onto tonic C, its key condition with them."""
    from src.data.preferences import load_pairs
    from src.training.alignment import on_tonic_c

    dcfg, _ = micro_data
    codec = load_codec(dcfg.processed_dir)
    pairs = [p for p in load_pairs(dcfg.preference.out_path, codec.tok) if p.conditions.get("key")][:12]
    moved = on_tonic_c(pairs, codec)
    assert len(moved) == len(pairs)
    for a, b in zip(pairs, moved):
        tonic, mode = parse_key(a.conditions["key"])
        assert b.conditions["key"] == f"C {mode}" and b.conditions["text"] == a.conditions["text"]
        shifts = set()
        for old, new in ((a.prompt, b.prompt), (a.chosen, b.chosen), (a.rejected, b.rejected)):
            pitches = [
                sorted(n[1] for n in note_multiset(codec.tok.decode(x)).elements() if n[0] != DRUMS) for x in (old, new)
            ]
            shifts |= {q - p for p, q in zip(*pitches)}
        assert len(shifts) == 1 and (tonic + shifts.pop()) % 12 == 0  # one shift for the pair, onto C


def test_on_policy_counts_are_checked_with_the_field_named(tmp_path):
    from src.training.dpo import AlignmentConfig
    from src.utils.config import ConfigError, load_config

    for text, field in (
        ("on_policy: {conditions: 8, validation_conditions: -1}", "on_policy.validation_conditions must be >= 0"),
        ("on_policy: {conditions: 0, validation_conditions: 4}", "needs on_policy.conditions > 0"),
        ("on_policy: {scorer: {in_key_target: 1.5}}", "in_key_target must be in"),
    ):
        path = tmp_path / "alignment.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=field) as e:
            load_config(AlignmentConfig, str(path))
        assert "alignment.yaml" in str(e.value) and "\n" not in str(e.value)


def test_one_alignment_step_writes_a_checkpoint_stage5_prefers(micro_data, micro_checkpoint, tmp_path):
    from src.generation.config import GenerationConfig
    from src.generation.run import select_checkpoint
    from src.models.builders import load_planner
    from src.training.alignment import train
    from src.training.dpo import AlignmentConfig, DPOTrainConfig

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
    cfg.on_policy.validation_conditions, cfg.on_policy.min_margin = 2, 0.0
    result = train(cfg)
    assert result["step"] == 1 and math.isfinite(result["val_loss"])
    on_policy = json.loads((tmp_path / "aligned/micro/on_policy_pairs.json").read_text())["pairs"]
    manifest = {r["id"]: r["split"] for r in read_jsonl(Path(dcfg.processed_dir) / "manifest.jsonl")}
    assert {p["split"] for p in on_policy} == {"train", "validation"}  # held-out openings make held-out pairs
    assert all(manifest[p["id"].removesuffix("#onpolicy")] == p["split"] for p in on_policy)
    ref_before, _ = load_planner(micro_checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(ref_before.parameters(), result["reference"].parameters()))
    aligned, state = load_planner(tmp_path / "aligned/micro/best.pt")
    assert state["kind"] == "aligned_planner" and state["reference"]["step"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(aligned.parameters(), ref_before.parameters()))
    gcfg = GenerationConfig(
        preset="micro", checkpoints=[str(tmp_path / "aligned/{preset}/best.pt"), str(micro_checkpoint)]
    )
    assert select_checkpoint(gcfg, None)[0] == tmp_path / "aligned/micro/best.pt"


def test_precision_bf16_only_where_the_device_does_it(monkeypatch, micro_data, tmp_path):
    """amp bf16 autocasts on CUDA, and on a CPU only with native bf16 (else fp32, said why); amp none is fp32;
    the checkpoint records what the run trained in."""
    from src.training import loop

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert loop.precision("none", cuda)[0] == "fp32"
    assert loop.precision("fp16", cuda)[0] == "fp16"
    assert loop.precision("fp16", cpu)[0] == "fp32"
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: False)
    dtype, why = loop.precision("bf16", cpu)
    assert dtype == "fp32" and "no native bf16" in why
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: True)
    assert loop.precision("bf16", cpu)[0] == "bf16"
    with loop.autocast("bf16", cpu):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
    dcfg, _ = micro_data
    for amp, want in (("bf16", "bf16"), ("none", "fp32")):
        cfg = micro_planner_config(dcfg.processed_dir, tmp_path / amp, max_steps=1, eval_every=1, amp=amp)
        train(cfg)
        assert torch.load(Path(cfg.out_dir) / "last.pt", weights_only=True)["precision"] == want


def test_mode_contrast_teaches_the_opening_to_tell_the_modes_apart():
    """The mode contrast (train.mode_contrast) starts at log 2 (the conditions change nothing), a few steps on it
    alone make each window's opening likelier under its own key and emotion than under the parallel mode's, and
    windows with neither known are left out."""
    model = tiny_model(cond_bias=True).train()
    cfg = model.cfg
    conds = [
        Conditions(style="FOLK", emotion=e, key=k, plan_label=[0], plan_index=[0])
        for e, k in (("SAD", 14), ("HAPPY", 2), ("TENSE", 21), ("PEACEFUL", 7))
    ]
    cond = batch(conds, cfg)
    x = torch.randint(5, 40, (4, 16))
    data = {"x": x, "y": torch.roll(x, -1, 1)}
    with torch.no_grad():
        start = float(mode_contrast_loss(model, data, cond, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        mode_contrast_loss(model, data, cond, 8).backward()
        opt.step()
    assert start == pytest.approx(math.log(2), abs=0.05)  # at init the bias is zero; cross-attention barely moves it
    with torch.no_grad():
        assert float(mode_contrast_loss(model, data, cond, 8)) < 0.2
    unknown = dict(
        cond, key=torch.full_like(cond["key"], NULL_KEY), emotion=torch.full_like(cond["emotion"], len(EMOTIONS))
    )
    with torch.no_grad():
        assert float(mode_contrast_loss(model, data, unknown, 8)) == 0.0
        # train.contrast_windows: the first windows alone, the rest left out (the same as a batch of those)
        keyed = unknown | {"key": cond["key"]}  # the key known, the emotion not
        part = float(mode_contrast_loss(model, data, keyed, 8, windows=2))
        first_two = {k: v[:2] for k, v in data.items()}, {k: v[:2] for k, v in keyed.items()}
        alone = float(mode_contrast_loss(model, *first_two, 8))
        assert part == pytest.approx(alone) and part != pytest.approx(float(mode_contrast_loss(model, data, keyed, 8)))
    # train.contrast_relative: a second term, against the relative key; it starts at log 2 too and is learnt
    model = tiny_model(cond_bias=True).train()
    with torch.no_grad():
        assert float(mode_contrast_loss(model, data, cond, 8, relative=True)) == pytest.approx(2 * math.log(2), abs=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        mode_contrast_loss(model, data, cond, 8, relative=True).backward()
        opt.step()
    with torch.no_grad():
        assert float(mode_contrast_loss(model, data, cond, 8, relative=True)) < 0.4
