"""Time to generate a 64-bar song in four sections (tokens only, no audio).

    .venv/bin/python -m bench.bench_generation [--tiny_ckpt checkpoints/symbolic/tiny/best.pt] [--device cpu]

Tiny uses the trained checkpoint. Small uses config/symbolic_small.yaml with random weights
(no small checkpoint is trained on this machine): its songs are noise, and its token count per
bar is set by the sampler's bar budget, so its time is an upper bound for that model size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from bench.common import machine, table
from src.generation.song import SongControls, SongGenerator, SongRequest
from src.models.builders import codec_from_checkpoint, load_planner
from src.models.sampling import SamplingConfig
from src.models.symbolic_planner import SymbolicPlanner
from src.music.form import parse_form
from src.training.symbolic import SymbolicConfig
from src.utils.config import load_config

FORM = "a:16,b:16,a:16,c:16"


def time_song(gen: SongGenerator, seed: int, device: torch.device) -> tuple[float, int]:
    sections = parse_form(FORM, 16)
    req = SongRequest(style="FOLK", emotion="HAPPY", tempo=120.0, seed=seed, sampling=SamplingConfig(top_p=0.95))
    rng = np.random.default_rng(seed)
    text = rng.normal(size=384).astype(np.float32)
    t = time.perf_counter()
    song = gen.generate(req, text, sections)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, len(song.ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny_ckpt", default="checkpoints/symbolic/tiny/best.pt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    device = torch.device(args.device)
    tiny, state = load_planner(args.tiny_ckpt)
    codec = codec_from_checkpoint(state)
    stats = state["data_stats"]
    small_cfg = load_config(SymbolicConfig, "config/symbolic_small.yaml").model
    torch.manual_seed(0)
    small = SymbolicPlanner(
        dataclasses.replace(
            small_cfg,
            vocab_size=tiny.cfg.vocab_size,
            bar_token_ids=tiny.cfg.bar_token_ids,
            token_pitch_classes=tiny.cfg.token_pitch_classes,
        )
    ).eval()
    rows = []
    for name, model, weights in (("tiny", tiny, "trained"), ("small", small, "random")):
        gen = SongGenerator(model.to(device), codec, stats, SongControls(variation=0.25))
        runs = [time_song(gen, s, device) for s in range(args.repeats)]
        secs = [r[0] for r in runs]
        toks = [r[1] for r in runs]
        rows.append(
            {
                "planner": name,
                "weights": weights,
                "params_M": round(model.num_params() / 1e6, 2),
                "tokens": int(np.mean(toks)),
                "seconds": round(float(np.mean(secs)), 2),
                "tokens_per_s": round(float(np.sum(toks) / np.sum(secs)), 1),
            }
        )
    print(f"machine: {machine()}; device {device}; song: 64 bars, form {FORM}; mean of {args.repeats} seeds")
    print(table(rows, ["planner", "weights", "params_M", "tokens", "seconds", "tokens_per_s"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "device": str(device), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
