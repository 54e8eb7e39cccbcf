"""Renderer speed: training segments/s and DDIM rendering real-time factor (RTF) per preset.

    .venv/bin/python -m bench.bench_renderer [--presets tiny small] [--device cpu|cuda] [--steps 50] \
        [--set train.amp=none]

Models come from config/renderer_<preset>.yaml with random weights and random inputs (speed
only; no quality claim). RTF = seconds spent sampling one segment's mel with ``--steps`` DDIM
steps / the segment's duration (below 1 is faster than real time). Griffin-Lim is timed apart
(``--griffin_lim``, needs librosa) because it runs once per song, not per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from bench.common import machine, sync, table
from src.models.audio_renderer import AudioRenderer
from src.models.diffusion import alphas_cumprod, ddim_sample
from src.training.loop import SampleRandom, autocast, precision
from src.training.renderer import RendererTrainingConfig, diffusion_loss, training_draws
from src.utils.config import load_config

MEL = {"tiny": 64, "small": 128, "full": 128}  # n_mels of config/data_<preset>.yaml
SECONDS_PER_SEGMENT = 256 * 256 / 16000  # 256 frames at hop 256, 16 kHz


def build(
    preset: str, device: torch.device, overrides: list[str] | None = None
) -> tuple[AudioRenderer, RendererTrainingConfig]:
    cfg = load_config(RendererTrainingConfig, f"config/renderer_{preset}.yaml", overrides)
    mcfg = dataclasses.replace(cfg.model, vocab_size=512, max_tokens=256, n_mels=MEL[preset], frames=256)
    torch.manual_seed(0)
    return AudioRenderer(mcfg).to(device), cfg


def inputs(model: AudioRenderer, B: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    c = model.cfg
    return {
        "mel": torch.randn(B, 1, c.n_mels, c.frames, generator=g).to(device),
        "tokens": torch.randint(3, c.vocab_size, (B, c.max_tokens), generator=g).to(device),
        "tokens_mask": (torch.arange(c.max_tokens)[None] < 150).expand(B, -1).to(device),
        "roll": (torch.rand(B, 2, 128, c.frames, generator=g) > 0.97).float().to(device),
    }


def bench(preset: str, device: torch.device, steps: int, reps: int, overrides: list[str]) -> dict:
    model, cfg = build(preset, device, overrides)
    tc = cfg.train
    B = tc.micro_batch
    batch = inputs(model, B, device)
    abar = alphas_cumprod(model.cfg.diffusion)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    keys = torch.arange(B)
    dtype = precision(tc.amp, device)[0]  # what stage 3 trains in on this device
    times = []
    for i in range(reps + 2):
        sync(device)
        t = time.perf_counter()
        with autocast(dtype, device):
            draws = training_draws(SampleRandom(keys + i), batch["mel"].shape[1:], len(abar))
            loss = diffusion_loss(model, batch, abar, model.cfg.diffusion.prediction, draws, 0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    train_sps = B / (sum(times) / len(times))
    model.eval()
    one = {k: v[:1] for k, v in batch.items()}
    cond = model.condition(one["tokens"], one["tokens_mask"], one["roll"])

    def den(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast(dtype, device):
            return model.denoise(x, t, cond)

    shape = (1, 1, model.cfg.n_mels, model.cfg.frames)
    with torch.no_grad():
        ddim_sample(den, shape, abar, 2, device=device)  # warm-up
        sync(device)
        t = time.perf_counter()
        ddim_sample(den, shape, abar, steps, generator=torch.Generator().manual_seed(0), device=device)
        sync(device)
    seconds = time.perf_counter() - t
    return {
        "preset": preset,
        "device": device.type,
        "params_M": round(model.num_params() / 1e6, 2),
        "micro_batch": B,
        "precision": dtype,
        "train_segments_per_s": round(train_sps, 1),
        "ddim_steps": steps,
        "segment_s": SECONDS_PER_SEGMENT,
        "ddim_seconds_per_segment": round(seconds, 3),
        "rtf_ddim": round(seconds / SECONDS_PER_SEGMENT, 3),
    }


def time_griffin_lim(n_mels: int, seconds: float = 30.0, iters: int = 32) -> dict:
    from src.data.mel import MelConfig
    from src.models.vocoder import mel_to_audio

    cfg = MelConfig(n_mels=n_mels)
    frames = int(seconds * cfg.sample_rate / cfg.hop_length)
    mel = torch.randn(n_mels, frames, generator=torch.Generator().manual_seed(0)) - 3
    t = time.perf_counter()
    mel_to_audio(mel, cfg, iters)
    took = time.perf_counter() - t
    return {"n_mels": n_mels, "seconds": seconds, "iters": iters, "rtf_griffin_lim": round(took / seconds, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--griffin_lim", action="store_true")
    p.add_argument("--set", action="append", default=[], help="config overrides (train.amp=none)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    dev = torch.device(args.device)
    rows = [bench(preset, dev, args.steps, args.reps, args.set) for preset in args.presets]
    print(table(rows, list(rows[0])))
    result = {"machine": machine(), "overrides": args.set, "rows": rows}
    if args.griffin_lim:
        result["griffin_lim"] = [time_griffin_lim(MEL[p]) for p in args.presets]
        print(table(result["griffin_lim"], list(result["griffin_lim"][0])))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(result["machine"])


if __name__ == "__main__":
    main()
