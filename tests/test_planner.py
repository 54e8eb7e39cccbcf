"""The symbolic planner: shapes, causality, sizes, save/load, sampling, training, DDP."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.planner_dataset import BOS, PlannerDataset, caption_embeddings
from src.models.builders import load_codec, load_planner, resolve_planner_config
from src.models.conditions import Conditions, batch, null_conditions
from src.models.sampling import Grammar, PlannerStepper, SamplingConfig, filter_logits, generate
from src.models.symbolic_planner import PlannerConfig, SymbolicPlanner
from src.training.checkpoint import load_checkpoint, save_checkpoint
from src.training.symbolic import SymbolicConfig, train
from src.utils.config import load_config, save_config
from tests.conftest import ROOT, micro_planner_config


def tiny_model(seed: int = 0, **kw) -> SymbolicPlanner:
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


def some_cond(cfg: PlannerConfig, n: int = 2) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    conds = [
        Conditions(
            text=rng.normal(size=384).astype(np.float32),
            style="FOLK",
            emotion="SAD",
            tempo=90.0 + i,
            key=3,
            timesig="3/4",
            programs=[0, 40],
            plan_label=[0, 0, 1, 1, 0],
            plan_index=[0, 1, 0, 1, 0],
        )
        for i in range(n)
    ]
    return batch(conds, cfg)


def test_shapes():
    m = tiny_model()
    idx = torch.randint(4, 64, (2, 24))
    assert m(idx, some_cond(m.cfg)).shape == (2, 24, 64)
    memory, mask = m.encode(some_cond(m.cfg))
    assert memory.shape == (2, m.n_fixed + m.cfg.max_bars, 32) and mask.shape == (2, 1, 1, m.n_fixed + 8)


def test_causal_through_gradients():
    """No position's logits depend on a later token, directly or through the encoder."""

    class Fixed(torch.nn.Module):
        def __init__(self, e):
            super().__init__()
            self.e = e

        def forward(self, idx):
            return self.e

    m = tiny_model()
    idx = torch.randint(4, 64, (1, 24))
    emb = m.tok(idx).detach().requires_grad_(True)
    m.tok = Fixed(emb)
    t = 10
    m(idx, some_cond(m.cfg, 1))[0, t].sum().backward()
    assert emb.grad[0, t + 1 :].abs().sum() == 0
    assert emb.grad[0, : t + 1].abs().sum(-1).gt(0).all()


def test_late_tokens_do_not_move_early_logits():
    m = tiny_model()
    idx = torch.randint(6, 64, (1, 24))
    other = idx.clone()
    other[0, 12:] = 4  # later tokens changed, including new bar starts
    a, b = m(idx, some_cond(m.cfg, 1)), m(other, some_cond(m.cfg, 1))
    assert torch.equal(a[0, :12], b[0, :12]) and not torch.equal(a[0, 12:], b[0, 12:])


def test_conditions_change_logits():
    m = tiny_model()
    idx = torch.randint(4, 64, (2, 24))
    cond = some_cond(m.cfg)
    assert not torch.allclose(m(idx, cond), m(idx, null_conditions(cond, m.cfg)))


@pytest.mark.parametrize("preset,target,vocab", [("small", 15e6, 512), ("full", 80e6, 2048)])
def test_parameter_counts(preset, target, vocab):
    cfg = load_config(SymbolicConfig, ROOT / f"config/symbolic_{preset}.yaml")
    model = SymbolicPlanner(dataclasses.replace(cfg.model, vocab_size=vocab, bar_token_ids=[4]))
    assert abs(model.num_params() - target) / target <= 0.10, model.num_params()


def test_tiny_preset_is_a_few_million():
    cfg = load_config(SymbolicConfig, ROOT / "config/symbolic_tiny.yaml")
    n = SymbolicPlanner(dataclasses.replace(cfg.model, vocab_size=512, bar_token_ids=[4])).num_params()
    assert 2e6 <= n <= 6e6


def test_cached_equals_uncached_decoding():
    m = tiny_model()
    cond = some_cond(m.cfg, 1)
    seq = torch.randint(4, 64, (1, 40))  # longer than block_size: the window slides
    for guidance in (1.0, 2.0):
        steppers = [
            PlannerStepper(m, lambda b0: cond, SamplingConfig(use_cache=c, guidance=guidance)) for c in (True, False)
        ]
        outs = [[s.start(seq[:, :1])] for s in steppers]
        for t in range(1, seq.shape[1]):
            for s, o in zip(steppers, outs):
                o.append(s.step(seq[:, t]))
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_full_forward_matches_stepper():
    m = tiny_model()
    cond = some_cond(m.cfg, 1)
    seq = torch.randint(4, 64, (1, 20))
    full = m(seq, cond)
    s = PlannerStepper(m, lambda b0: cond, SamplingConfig())
    got = [s.start(seq[:, :1])] + [s.step(seq[:, t]) for t in range(1, 20)]
    torch.testing.assert_close(torch.stack(got, 1), full, atol=1e-5, rtol=1e-5)


def test_filter_logits():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, SamplingConfig(top_k=2), None)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, SamplingConfig(top_p=0.7), None))
    assert kept.tolist() == [[True, True, False, False]]  # p(0)=0.64 < 0.7, so token 1 is kept too
    allowed = torch.tensor([[False, True, True, True]])
    assert torch.isinf(filter_logits(logits, SamplingConfig(), allowed)[0, 0])
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0)


def test_save_load_identical_logits(tmp_path):
    m = tiny_model(seed=3)
    save_checkpoint(
        tmp_path / "m.pt", {"model": m.state_dict(), "model_config": dataclasses.asdict(m.cfg), "tokenizer_hash": "abc"}
    )
    loaded, _ = load_planner(tmp_path / "m.pt")
    idx = torch.randint(4, 64, (2, 24))
    assert torch.equal(m(idx, some_cond(m.cfg)), loaded(idx, some_cond(m.cfg)))
    with pytest.raises(ValueError, match="made with tokenizer abc"):
        load_checkpoint(tmp_path / "m.pt", expect_tokenizer_hash="other")
    with pytest.raises(FileNotFoundError, match="02_train_symbolic.py"):
        load_planner(tmp_path / "missing.pt")


def test_training_steps_resume_and_sample(micro_data, tmp_path):
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
    score = codec.tok.decode([t for t in ids if t > 3])
    assert score.note_num() > 0


def test_refuses_other_tokenizer(micro_data, tmp_path):
    dcfg, _ = micro_data
    train(micro_planner_config(dcfg.processed_dir, tmp_path, max_steps=1, eval_every=1))
    state = torch.load(tmp_path / "ckpt/last.pt", weights_only=True)
    state["tokenizer_hash"] = "0" * 16
    torch.save(state, tmp_path / "ckpt/last.pt")
    with pytest.raises(ValueError, match="made with tokenizer 0000"):
        train(micro_planner_config(dcfg.processed_dir, tmp_path, max_steps=2, eval_every=1))


def test_ddp_matches_single_process(micro_data, tmp_path):
    """torchrun with 2 gloo ranks: parameters identical across ranks and equal to one process
    with the same global batch (every window full, so per-rank means weigh tokens equally)."""
    dcfg, _ = micro_data
    single = micro_planner_config(dcfg.processed_dir, tmp_path / "single", max_steps=3, eval_every=3, cond_dropout={})
    ref = train(single)["model"].state_dict()
    ddp = micro_planner_config(dcfg.processed_dir, tmp_path / "ddp", max_steps=3, eval_every=3, cond_dropout={})
    Path(ddp.out_dir).mkdir(parents=True)
    save_config(ddp, tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, str(ROOT / "tests/ddp_worker.py"), str(tmp_path / "ddp.yaml")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(Path(ddp.out_dir) / "rank0.pt", weights_only=True)
    r1 = torch.load(Path(ddp.out_dir) / "rank1.pt", weights_only=True)
    for name in ref:
        assert torch.equal(r0[name], r1[name]), name
        torch.testing.assert_close(r0[name], ref[name], atol=2e-5, rtol=1e-4)
    assert not torch.equal(r0["tok.weight"], load_planner_init(ddp)["tok.weight"])


def load_planner_init(cfg: SymbolicConfig) -> dict:
    """The untrained parameters (same seed): training must have moved them."""
    codec = load_codec(cfg.data_dir)
    torch.manual_seed(cfg.train.seed)
    return SymbolicPlanner(resolve_planner_config(cfg.model, codec)).state_dict()
