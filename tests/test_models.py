"""src.models: the planner (shapes, causality, sizes, save/load, sampling) and the renderer
(diffusion maths, U-Net, vocoder)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from src.data.mel import MelConfig, log_mel
from src.models.audio_renderer import AudioRenderer, RendererConfig
from src.models.builders import load_planner, planner_without_tokenizer
from src.models.diffusion import (
    DiffusionConfig,
    alphas_cumprod,
    ddim_sample,
    ddim_timesteps,
    q_sample,
    split_prediction,
    training_target,
)
from src.models.sampling import PlannerStepper, SamplingConfig, filter_logits
from src.models.symbolic_planner import PlannerConfig, SymbolicPlanner
from src.models.vocoder import mel_to_audio
from src.music.conditions import (
    NULL_KEY,
    Conditions,
    batch,
    null_conditions,
    parallel_conditions,
    relative_conditions,
)
from src.music.theory import relative_key
from src.music.vocab import EMOTIONS
from src.training.symbolic import SymbolicConfig
from src.utils.checkpoint import load_checkpoint, save_checkpoint
from src.utils.config import load_config
from tests.conftest import ROOT, tiny_model


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


def test_planner_shapes():
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
def test_planner_parameter_counts(preset, target, vocab):
    cfg = load_config(SymbolicConfig, ROOT / f"config/symbolic_{preset}.yaml")
    model = SymbolicPlanner(planner_without_tokenizer(cfg.model, vocab))
    assert abs(model.num_params() - target) / target <= 0.10, model.num_params()


def test_tiny_preset_is_a_few_million():
    cfg = load_config(SymbolicConfig, ROOT / "config/symbolic_tiny.yaml")
    n = SymbolicPlanner(planner_without_tokenizer(cfg.model, 512)).num_params()
    assert 2e6 <= n <= 6e6


# tokens 10..21 hold one note each, of pitch class 0..11; token 30 a C major triad; the rest none
PITCH_CLASSES = [[i - 10] if 10 <= i < 22 else [0, 4, 7] if i == 30 else [] for i in range(64)]


def test_cached_equals_uncached_decoding():
    m = tiny_model(cond_bias=True, key_profile=True, token_pitch_classes=PITCH_CLASSES)
    torch.nn.init.normal_(m.cond_bias.weight)  # trained, it is not zero
    torch.nn.init.normal_(m.key_profile)
    cond = some_cond(m.cfg, 1)
    seq = torch.randint(4, 64, (1, 40))  # longer than block_size: the window slides
    for guidance, mode in ((1.0, 0.0), (2.0, 0.0), (1.0, 3.0), (2.0, 3.0)):
        steppers = [
            PlannerStepper(m, lambda b0: cond, SamplingConfig(use_cache=c, guidance=guidance, mode_guidance=mode))
            for c in (True, False)
        ]
        outs = [[s.start(seq[:, :1])] for s in steppers]
        for t in range(1, seq.shape[1]):
            for s, o in zip(steppers, outs):
                o.append(s.step(seq[:, t]))
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_parallel_conditions_flip_the_mode_and_the_valence_only():
    m = tiny_model()
    cond = some_cond(m.cfg, 2)
    cond["key"] = torch.tensor([3, NULL_KEY])  # E-flat major, unknown
    cond["emotion"] = torch.tensor([EMOTIONS.index("SAD"), len(EMOTIONS)])
    par = parallel_conditions(cond)
    assert par["key"].tolist() == [15, NULL_KEY]  # E-flat minor; unknown stays unknown
    assert par["emotion"].tolist() == [EMOTIONS.index("PEACEFUL"), len(EMOTIONS)]
    assert all(torch.equal(par[k], cond[k]) for k in cond if k not in ("key", "emotion"))


def test_mode_guidance_pushes_away_from_its_negative():
    """Mode guidance adds scale x (logits - the negative's logits) to the (CFG-guided) logits; the negative is
    key and emotion unknown, the parallel mode's or the relative key's."""
    m = tiny_model(cond_bias=True)
    torch.nn.init.normal_(m.cond_bias.weight)
    cond = some_cond(m.cfg, 1)
    seq = torch.randint(4, 64, (1, 6))

    def logits(c: dict, **kw) -> torch.Tensor:
        return PlannerStepper(m, lambda b0: c, SamplingConfig(**kw)).start(seq)

    plain, par, null = logits(cond), logits(parallel_conditions(cond)), logits(null_conditions(cond, m.cfg))
    unknown = {"key": torch.full_like(cond["key"], NULL_KEY), "emotion": torch.full_like(cond["key"], len(EMOTIONS))}
    unkeyed = logits(cond | unknown)
    assert not torch.allclose(plain, par) and not torch.allclose(plain, unkeyed)
    guided = logits(cond, mode_guidance=2.0, mode_negative="parallel")
    torch.testing.assert_close(guided, plain + 2.0 * (plain - par), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(cond, mode_guidance=2.0), plain + 2.0 * (plain - unkeyed), atol=1e-5, rtol=1e-5)
    cfg_guided = null + 1.5 * (plain - null)
    both = logits(cond, guidance=1.5, mode_guidance=2.0, mode_negative="parallel")
    torch.testing.assert_close(both, cfg_guided + 2.0 * (plain - par), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="mode_guidance"):
        SamplingConfig(mode_guidance=-1.0)
    rel = logits(relative_conditions(cond))
    torch.testing.assert_close(
        logits(cond, mode_guidance=2.0, mode_negative="relative"), plain + 2.0 * (plain - rel), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="mode_negative"):
        SamplingConfig(mode_negative="dorian")


def test_relative_conditions_keep_the_notes_and_move_the_tonic():
    m = tiny_model()
    cond = some_cond(m.cfg, 4)
    cond["key"] = torch.tensor([0, 21, 14, NULL_KEY])  # C major, A minor, D minor, unknown
    cond["emotion"] = torch.tensor([EMOTIONS.index("HAPPY"), EMOTIONS.index("SAD"), len(EMOTIONS), 0])
    rel = relative_conditions(cond)
    assert rel["key"].tolist() == [21, 0, 5, NULL_KEY]  # A minor, C major, F major; unknown stays unknown
    for key in range(24):  # the same relative key as the one the bench names (tonic + 12 x minor)
        tonic, mode = relative_key(key % 12, "minor" if key >= 12 else "major")
        moved = relative_conditions(cond | {"key": torch.tensor([key] * 4)})["key"]
        assert moved.tolist() == [tonic + 12 * (mode == "minor")] * 4
    assert rel["emotion"].tolist() == parallel_conditions(cond)["emotion"].tolist()
    assert all(torch.equal(rel[k], cond[k]) for k in cond if k not in ("key", "emotion"))


def test_cond_bias_starts_at_zero_and_learns_from_the_conditions():
    """The logit bias from the pooled conditions starts as no bias, and the loss reaches it and, through it,
    the key's embedding."""
    m = tiny_model(cond_bias=True)
    idx = torch.randint(4, 64, (2, 24))
    cond = some_cond(m.cfg)
    assert m.cond_bias.weight.abs().sum() == 0
    m(idx, cond).log_softmax(-1)[..., 7].sum().backward()
    assert m.cond_bias.weight.grad.abs().sum() > 0 and m.key.weight.grad[3].abs().sum() > 0
    other = dict(cond, key=cond["key"] + 12)  # the parallel minor
    with torch.no_grad():
        before = m(idx[:, :1], cond) - m(idx[:, :1], other)  # cross-attention's share alone
        torch.nn.init.normal_(m.cond_bias.weight)
        after = m(idx[:, :1], cond) - m(idx[:, :1], other)
    assert not torch.allclose(before, after)  # the bias moves the first token's distribution with the key


def test_key_profile_is_the_same_24_weights_in_every_key():
    """The key profile starts as no bias; it biases each token by the weights of its notes' intervals above the
    key's tonic in the key's mode (so moving the key moves the bias with it), adds nothing for an unknown key,
    and the loss reaches it."""
    m = tiny_model(key_profile=True, token_pitch_classes=PITCH_CLASSES)
    idx, cond = torch.randint(4, 64, (2, 24)), some_cond(m.cfg)
    assert m.key_profile.abs().sum() == 0
    m(idx, cond).log_softmax(-1)[..., 13].sum().backward()
    g = m.key_profile.grad  # the key is E-flat major: token 13 (pitch class 3) is its tonic, interval 0 of major
    assert g[0] != 0 and g[12:].abs().sum() == 0  # a major key trains the major weights only
    with torch.no_grad():
        torch.nn.init.normal_(m.key_profile)
        bias = m.key_bias(torch.tensor([0, 12, 2, NULL_KEY]))  # C major, C minor, D major, unknown
    w = m.key_profile.detach()
    torch.testing.assert_close(bias[0, 10:22], w[:12])  # C major: pitch class = interval
    torch.testing.assert_close(bias[1, 10:22], w[12:])  # C minor: the minor weights
    torch.testing.assert_close(bias[2, 10:22], w[:12].roll(2))  # D major: interval 0 on pitch class 2
    torch.testing.assert_close(bias[0, 30], w[0] + w[4] + w[7])  # a triad sums its notes
    assert bias[0, :10].abs().sum() == 0 and bias[3].abs().sum() == 0  # no notes; unknown key
    with pytest.raises(ValueError, match="token_pitch_classes"):
        tiny_model(key_profile=True)


def test_builder_gives_the_key_profile_each_token_s_pitch_classes(micro_data):
    from src.models.builders import load_codec, resolve_planner_config

    codec = load_codec(micro_data[0].processed_dir)
    cfg = resolve_planner_config(PlannerConfig(key_profile=True), codec)
    pitch_tokens = [i for i, b in enumerate(codec.bpe_to_base) if any(codec.base_type[x] == "Pitch" for x in b)]
    assert pitch_tokens and all(cfg.token_pitch_classes[i] for i in pitch_tokens)
    for i in pitch_tokens[:5]:
        assert cfg.token_pitch_classes[i] == [
            codec.base_pitch[x] % 12 for x in codec.bpe_to_base[i].tolist() if x in codec.base_pitch
        ]
    assert resolve_planner_config(PlannerConfig(), codec).token_pitch_classes == []  # only when it is asked for


def test_batched_sliding_window_cuts_each_row_at_its_own_bar():
    """Two rows whose bars fall at different places: after the window slides, each row's logits equal those of
    the row stepped alone (cut at its own bar, its plan re-sliced from its own first bar)."""
    from src.music.conditions import shift_plan

    m = tiny_model()
    seqs = torch.full((2, 60), 9)
    seqs[0, ::5], seqs[1, ::7] = 4, 4  # a bar every 5 tokens in row 0, every 7 in row 1
    base = some_cond(m.cfg, 2)
    for c in (True, False):
        cfg = SamplingConfig(use_cache=c)
        both = PlannerStepper(m, lambda b0: shift_plan(base, b0, m.cfg), cfg)
        alone = [
            PlannerStepper(m, lambda b0, i=i: shift_plan({k: v[i : i + 1] for k, v in base.items()}, b0, m.cfg), cfg)
            for i in range(2)
        ]
        got = [both.start(seqs[:, :1])] + [both.step(seqs[:, t]) for t in range(1, 60)]
        for i, s in enumerate(alone):
            want = [s.start(seqs[i : i + 1, :1])] + [s.step(seqs[i : i + 1, t]) for t in range(1, 60)]
            torch.testing.assert_close(torch.cat([g[i : i + 1] for g in got]), torch.cat(want), atol=1e-5, rtol=1e-5)
        assert both.rows is not None and alone[0].bar0 != alone[1].bar0  # they did slide apart


def test_a_dropped_plan_hides_its_labels_indices_and_length():
    """Condition dropout of the plan leaves the encoder nothing of it: two plans of different forms and
    lengths encode the same once dropped."""
    from src.music.conditions import COND_FIELDS, drop_fields

    m = tiny_model()
    a = batch([Conditions(style="FOLK", plan_label=[0, 0, 1, 1, 0], plan_index=[0, 1, 0, 1, 0])], m.cfg)
    b = batch([Conditions(style="FOLK", plan_label=[0, 1], plan_index=[0, 0])], m.cfg)
    drop = torch.tensor([[f == "plan" for f in COND_FIELDS]])
    ea, eb = (m.encode(drop_fields(c, drop, m.cfg)) for c in (a, b))
    assert torch.equal(ea[1], eb[1])
    keep = ea[1][0, 0, 0]
    torch.testing.assert_close(ea[0][:, keep], eb[0][:, keep])
    assert not torch.equal(m.encode(a)[1], m.encode(b)[1])  # kept, the plans differ


def test_load_planner_takes_the_ema_weights(tmp_path):
    """best.pt is chosen on the EMA weights' validation loss: those are the weights stage 5 and DPO load."""
    m, ema = tiny_model(seed=1), tiny_model(seed=2)
    state = {"model": m.state_dict(), "ema": ema.state_dict(), "model_config": dataclasses.asdict(m.cfg)}
    save_checkpoint(tmp_path / "m.pt", {**state, "tokenizer_hash": "abc"})
    loaded, _ = load_planner(tmp_path / "m.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ema.state_dict().values()))


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


def tiny_renderer(seed: int = 0, **kw) -> AudioRenderer:
    torch.manual_seed(seed)
    cfg = RendererConfig(
        vocab_size=40,
        max_tokens=12,
        n_mels=16,
        frames=32,
        d_token=16,
        token_layers=1,
        token_heads=2,
        channels=[8, 16],
        attn_levels=[0, 1],
        heads=2,
        roll_channels=2,
        **kw,
    )
    model = AudioRenderer(cfg).eval()
    for p in model.parameters():  # zero-initialised output layers would hide every dependency
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    return model


def inputs(B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, 16, 32, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    tokens = torch.randint(3, 40, (B, 12), generator=g)
    mask = torch.ones(B, 12, dtype=torch.bool)
    mask[B - 1, 8:] = False
    roll = (torch.rand(B, 2, 128, 32, generator=g) > 0.97).float()
    return x, t, tokens, mask, roll


def test_schedule_reference_values():
    lin = alphas_cumprod(DiffusionConfig(schedule="linear"))
    assert lin[0].item() == pytest.approx(0.9999, abs=1e-12)
    assert lin[499].item() == pytest.approx(0.0785872429, rel=1e-8)
    assert lin[999].item() == pytest.approx(4.0358298e-05, rel=1e-6)  # as diffusers' DDPMScheduler
    cos = alphas_cumprod(DiffusionConfig(schedule="cosine"))
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert cos[0].item() == pytest.approx(f(1) / f(0), rel=1e-10)
    assert cos[499].item() == pytest.approx(0.4938435904, rel=1e-8)
    assert (cos[1:] < cos[:-1]).all()
    assert ddim_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 0)


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_target_and_prediction_invert_each_other(prediction):
    abar = alphas_cumprod(DiffusionConfig())
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([10, 500, 990])
    x_t = q_sample(x0, t, noise, abar)
    target = training_target(x0, noise, t, abar, prediction)
    for i in range(3):
        x0_hat, eps_hat = split_prediction(target[i], x_t[i], float(abar[t[i]]), prediction)
        assert torch.allclose(x0_hat, x0[i], atol=1e-4) and torch.allclose(eps_hat, noise[i], atol=1e-4)


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_ddim_recovers_a_point_mass_with_the_exact_denoiser(prediction):
    """For data that is always c, the ideal denoiser is known in closed form; DDIM (eta=0) must return c."""
    abar = alphas_cumprod(DiffusionConfig())
    c = torch.full((1, 1, 2, 3), 0.7)

    def exact(x, t):
        a = abar[t[0]].item()
        eps = (x - math.sqrt(a) * c) / math.sqrt(1 - a)
        return eps if prediction == "eps" else math.sqrt(a) * eps - math.sqrt(1 - a) * c

    out = ddim_sample(
        exact, (1, 1, 2, 3), abar, steps=10, generator=torch.Generator().manual_seed(0), prediction=prediction
    )
    assert torch.allclose(out, c, atol=1e-4)


def test_ddim_is_a_pure_function_of_its_generator():
    model = tiny_renderer()
    _, _, tokens, mask, roll = inputs(1)
    cond = model.condition(tokens, mask, roll)
    abar = alphas_cumprod(model.cfg.diffusion)

    def den(x, t):
        return model.denoise(x, t, cond)

    def run(seed: int, eta: float) -> torch.Tensor:
        return ddim_sample(den, (1, 1, 16, 32), abar, 4, eta, torch.Generator().manual_seed(seed))

    torch.manual_seed(123)  # the global RNG must not matter
    a = run(0, 0.0)
    torch.manual_seed(999)
    assert torch.equal(a, run(0, 0.0))
    assert not torch.allclose(a, run(1, 0.0))
    assert torch.equal(run(0, 1.0), run(0, 1.0)) and not torch.allclose(run(0, 1.0), a)


def test_renderer_shapes_and_condition_dependence():
    model = tiny_renderer()
    x, t, tokens, mask, roll = inputs()
    with torch.no_grad():
        out = model(x, t, tokens, mask, roll)
        assert out.shape == x.shape
        dropped = model(x, t, tokens, mask, roll, drop=torch.tensor([True, False]))
    assert not torch.allclose(out[0], dropped[0]) and torch.allclose(out[1], dropped[1], atol=1e-5)


def test_token_order_changes_the_output():
    model = tiny_renderer()
    x, t, tokens, mask, roll = inputs()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    shuffled = tokens.clone()
    shuffled[:, :8] = tokens[:, perm]
    with torch.no_grad():
        a, b = model(x, t, tokens, mask, roll), model(x, t, shuffled, mask, roll)
    assert (a - b).abs().max() > 1e-3


def test_padding_tokens_are_ignored():
    model = tiny_renderer()
    x, t, tokens, mask, roll = inputs()
    other = tokens.clone()
    other[1, 8:] = 5  # row 1 is padded from position 8 on
    with torch.no_grad():
        assert torch.allclose(model(x, t, tokens, mask, roll), model(x, t, other, mask, roll), atol=1e-5)


def test_piano_roll_timing_reaches_the_output_at_its_frames():
    """A note added to the roll changes the output most around its own frames (timing is local)."""
    model = tiny_renderer()
    x, t, tokens, mask, roll = inputs(1)
    roll = torch.zeros_like(roll)
    roll2 = roll.clone()
    roll2[0, :, 60, 4:6] = 1.0
    with torch.no_grad():
        diff = (model(x, t, tokens, mask, roll) - model(x, t, tokens, mask, roll2)).abs()[0, 0].sum(0)
    assert diff[:10].sum() > 3 * diff[22:].sum()


@pytest.mark.parametrize("preset,target", [("tiny", 3.45e6), ("small", 25e6), ("full", 92e6)])
def test_renderer_parameter_counts(preset, target):
    from src.training.renderer import RendererTrainingConfig

    cfg = load_config(RendererTrainingConfig, ROOT / f"config/renderer_{preset}.yaml").model
    n_mels = 64 if preset == "tiny" else 128
    mcfg = RendererConfig(**{**cfg.__dict__, "vocab_size": 512, "max_tokens": 384, "n_mels": n_mels, "frames": 256})
    assert abs(AudioRenderer(mcfg).num_params() - target) / target < 0.1


def test_griffin_lim_inverts_a_magnitude_mel():
    cfg = MelConfig()
    sr = cfg.sample_rate
    t = np.arange(sr) / sr
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    mel = log_mel(audio, cfg)
    back = mel_to_audio(mel, cfg, n_iter=32, generator=torch.Generator().manual_seed(0))
    assert abs(len(back) - len(audio)) <= cfg.hop_length
    spectrum = np.abs(np.fft.rfft(back))
    freqs = np.arange(len(spectrum)) * sr / len(back)
    assert abs(freqs[np.argmax(spectrum)] - 440) < 15  # within a 64-bin mel band there
    assert (spectrum[np.abs(freqs - 440) < 60] ** 2).sum() > 0.8 * (spectrum**2).sum()
    mel_back = log_mel(back, cfg)
    n = min(mel.shape[1], mel_back.shape[1])
    peak = mel.max()  # compare the loud bins only (levels are peak-normalised)
    loud = mel[:, :n] > peak - 4
    assert (mel_back[:, :n][loud] - (mel[:, :n][loud] - peak + mel_back.max())).abs().mean() < 1.0
