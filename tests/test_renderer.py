"""Stage 3: diffusion maths, the renderer model, aligned pairs, crossfade, training and 05's neural audio."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.audio_pairs import (
    REFERENCE_TEMPO,
    AudioPairDataset,
    AudioPairsConfig,
    notes_in_seconds,
    piano_roll,
    piece_pairs,
    window_notes,
)
from src.data.tokenizer import load_tokenizer
from src.generation.neural_render import crossfade
from src.models.audio_renderer import AudioRenderer, RendererConfig
from src.models.diffusion import (
    DiffusionConfig,
    alphas_cumprod,
    ddim_sample,
    ddim_timesteps,
    q_sample,
    split_prediction,
    training_target,
)
from src.models.vocoder import MelConfig, log_mel, mel_to_audio
from src.utils.config import load_config
from tests.conftest import ROOT, micro_renderer_config


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


# ----------------------------------------------------------------------------- schedule and sampler


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


# ----------------------------------------------------------------------------- model


def test_shapes_and_condition_dependence():
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
def test_parameter_counts(preset, target):
    from src.training.renderer import RendererTrainingConfig

    cfg = load_config(RendererTrainingConfig, ROOT / f"config/renderer_{preset}.yaml").model
    n_mels = 64 if preset == "tiny" else 128
    mcfg = RendererConfig(**{**cfg.__dict__, "vocab_size": 512, "max_tokens": 384, "n_mels": n_mels, "frames": 256})
    assert abs(AudioRenderer(mcfg).num_params() - target) / target < 0.1


# ----------------------------------------------------------------------------- vocoder


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


# ----------------------------------------------------------------------------- pairs


def write_midi(path: Path, onsets: list[float], pitches: list[int], length: float = 0.4, program: int = 0) -> None:
    import symusic

    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(program=program)
    for on, p in zip(onsets, pitches):
        track.notes.append(symusic.Note(int(on * 960), int(length * 960), p, 100))
    score.tracks.append(track)
    score.dump_midi(str(path))


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
    write_midi(tmp_path / "clicks.mid", onsets, [60, 67, 72, 64, 69, 76], length=0.3)
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


# ----------------------------------------------------------------------------- crossfade


def test_crossfade_has_no_gap_and_no_jump():
    F, O = 16, 4
    a, b, c = np.zeros((2, F)), np.ones((2, F)), np.full((2, F), 2.0)
    out = crossfade([a, b, c], [0, F - O, 2 * (F - O)], 40, O)
    assert out.shape == (2, 40)
    row = out[0]
    assert np.all(np.diff(row) >= 0) and np.abs(np.diff(row)).max() <= 1 / O + 1e-6  # a ramp, never a step
    assert row[0] == 0 and row[F] == 1 and row[-1] == 2
    whole = np.random.default_rng(0).normal(size=(3, 50))
    starts = [0, 12, 24, 36]
    pieces = [np.pad(whole, ((0, 0), (0, 20)))[:, s : s + F] for s in starts]
    assert np.allclose(crossfade(pieces, starts, 50, O), whole, atol=1e-6)  # consistent segments: unchanged


# ----------------------------------------------------------------------------- training and generation


def test_two_training_steps_resume_and_checkpoint(micro_data, tmp_path):
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


def test_generate_song_writes_a_neural_wav_of_the_song_length(micro_checkpoint, micro_renderer, tmp_path):
    import importlib

    import soundfile as sf

    gen = importlib.import_module("05_generate_song")
    rc = gen.main(
        [
            "--symbolic_ckpt",
            str(micro_checkpoint),
            "--renderer_ckpt",
            str(micro_renderer),
            "--form",
            "a,b",
            "--bars_per_section",
            "2",
            "--output_dir",
            str(tmp_path),
            "--output_name",
            "n",
            "--tempo",
            "100",
            "--set",
            "neural.steps=3",
            "--set",
            "neural.griffin_lim_iters=4",
            "--set",
            "neural.overlap_frames=8",
        ]
    )
    assert rc == 0
    meta = json.loads((tmp_path / "n.json").read_text())
    assert meta["renderer"].startswith("neural") and meta["render"]["segments"] >= 2
    audio, sr = sf.read(tmp_path / "n.wav")
    assert sr == 16000
    expected = meta["facts"]["duration_s"] + 1.0
    assert abs(len(audio) / sr - expected) <= 256 / sr + 1e-6
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_missing_renderer_checkpoint_is_a_clear_error(micro_checkpoint, tmp_path):
    import importlib

    gen = importlib.import_module("05_generate_song")
    rc = gen.main(
        [
            "--symbolic_ckpt",
            str(micro_checkpoint),
            "--renderer_ckpt",
            str(tmp_path / "none.pt"),
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert rc != 0 and not list(tmp_path.glob("*.wav"))


def test_notes_in_seconds_follow_tempo(tmp_path):
    import symusic

    write_midi(tmp_path / "a.mid", [0.5, 1.0], [60, 62])
    notes = notes_in_seconds(symusic.Score(str(tmp_path / "a.mid")))
    assert np.allclose(notes[:, 0], [0.5, 1.0], atol=1e-3) and np.allclose(notes[:, 1] - notes[:, 0], 0.4, atol=1e-3)


@pytest.mark.parametrize(
    "cfg", [MelConfig(), MelConfig(n_mels=128), MelConfig(sample_rate=22050, fmin=0.0, fmax=11025.0)]
)
def test_mel_filterbank_equals_librosa(cfg):
    import librosa

    from src.models.vocoder import mel_filterbank

    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    assert np.allclose(mel_filterbank(cfg), ref, atol=1e-7)
