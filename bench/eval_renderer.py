"""Renderer quality on held-out segments, against the FluidSynth reference, with a ceiling and a floor.

    .venv/bin/python -m bench.eval_renderer --checkpoint checkpoints/renderer/tiny/best.pt [--segments 32]

For each held-out segment (the test split of the audio pairs when it has one, else validation):
- griffin_lim_on_true_mel (the ceiling): FluidSynth's log-mel through the same Griffin-Lim
  vocoder, re-analysed: what the vocoder alone loses;
- neural: the renderer's DDIM mel (``--steps``), then Griffin-Lim;
- noise (the floor): white noise at the reference's loudness.
Metrics: log-mel L1 distance to FluidSynth's mel (nats, lower is better; for neural, its
sampled mel itself) and the chroma agreement of the audio with the segment's piano roll
(cosine, higher is better). Also the real-time
factor of rendering a whole 30 s song with :class:`NeuralRenderer` (DDIM + crossfade + GL).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import machine, table
from src.data.mel import log_mel
from src.eval.audio import chroma_agreement, log_mel_distance
from src.generation.neural_render import NeuralRenderConfig, NeuralRenderer
from src.models.audio_renderer import sample_mels
from src.models.vocoder import mel_to_audio
from src.training.datasets import AudioPairDataset


def evaluate(ckpt: str, segments: int, steps: int, batch: int, seed: int, device: str = "cpu") -> dict:
    nr = NeuralRenderer(ckpt, NeuralRenderConfig(steps=steps, device=device))
    state_dir = torch.load(ckpt, map_location="cpu", weights_only=True)["data_dir"]
    ds = AudioPairDataset(state_dir, "test")
    split = "test"
    if not len(ds):
        ds, split = AudioPairDataset(state_dir, "validation"), "validation"
    idx = np.linspace(0, len(ds) - 1, min(segments, len(ds))).round().astype(int)
    items = [ds[int(i)] for i in idx]
    mel_cfg, mean, std = nr.mel, ds.mean, ds.std
    gen = torch.Generator().manual_seed(seed)
    neural = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        x = sample_mels(
            nr.model,
            torch.stack([c["tokens"] for c in chunk]),
            torch.stack([c["tokens_mask"] for c in chunk]),
            torch.stack([c["roll"] for c in chunk]),
            steps,
            generator=gen,
        )
        neural += list(x[:, 0].float().cpu() * std + mean)
    rows = {k: {"mel_l1": [], "chroma": []} for k in ("griffin_lim_on_true_mel", "neural", "noise")}
    rng = np.random.default_rng(seed)
    for item, pred in zip(items, neural):
        ref = item["mel"][0] * std + mean
        roll = item["roll"][0].numpy()
        g = torch.Generator().manual_seed(seed)
        ref_audio = mel_to_audio(ref, mel_cfg, generator=g)
        neural_audio = mel_to_audio(pred, mel_cfg, generator=torch.Generator().manual_seed(seed))
        noise = rng.normal(size=len(ref_audio)).astype(np.float32)
        noise *= np.sqrt((ref_audio**2).mean() / max((noise**2).mean(), 1e-12))
        rows["neural"]["mel_l1"].append(log_mel_distance(pred, ref))
        rows["neural"]["chroma"].append(chroma_agreement(neural_audio, roll, mel_cfg))
        rows["griffin_lim_on_true_mel"]["mel_l1"].append(log_mel_distance(log_mel(ref_audio, mel_cfg), ref))
        rows["griffin_lim_on_true_mel"]["chroma"].append(chroma_agreement(ref_audio, roll, mel_cfg))
        rows["noise"]["mel_l1"].append(log_mel_distance(log_mel(noise, mel_cfg), ref))
        rows["noise"]["chroma"].append(chroma_agreement(noise, roll, mel_cfg))
    summary = [
        {
            "audio": k,
            "log_mel_L1": round(float(np.nanmean(v["mel_l1"])), 3),
            "chroma_vs_roll": round(float(np.nanmean(v["chroma"])), 3),
        }
        for k, v in rows.items()
    ]
    return {"split": split, "segments": len(items), "ddim_steps": steps, "step": nr.step, "rows": summary}


def song_rtf(ckpt: str, steps: int, seconds: float = 30.0, device: str = "cpu") -> dict:
    """Wall-clock of rendering a 30 s, 4-voice song / 30 s."""
    nr = NeuralRenderer(ckpt, NeuralRenderConfig(steps=steps, device=device))
    rng = np.random.default_rng(0)
    onsets = np.arange(0, seconds, 0.25)
    notes = np.array([[t, t + 0.5, 48 + rng.integers(0, 36), 80, 0, 0] for t in onsets for _ in range(2)])
    t = time.perf_counter()
    audio, facts = nr.render_notes(notes, seconds)
    took = time.perf_counter() - t
    return {"song_s": seconds, "render_s": round(took, 2), "rtf": round(took / seconds, 3), **facts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/renderer/tiny/best.pt")
    p.add_argument("--segments", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    result = {"checkpoint": args.checkpoint, "machine": machine()}
    result.update(evaluate(args.checkpoint, args.segments, args.steps, args.batch, args.seed, args.device))
    result["song"] = song_rtf(args.checkpoint, args.steps, device=args.device)
    print(f"{result['segments']} {result['split']} segments, {args.steps} DDIM steps, step {result['step']}")
    print(table(result["rows"], ["audio", "log_mel_L1", "chroma_vs_roll"]))
    print(table([result["song"]], list(result["song"])))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(result["machine"])


if __name__ == "__main__":
    main()
