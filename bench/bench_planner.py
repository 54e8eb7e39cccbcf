"""Planner throughput: training tokens/s, sampling tokens/s with and without the KV cache, and
training FLOP/s as a fraction of a large matmul's FLOP/s measured in the same run.

    .venv/bin/python -m bench.bench_planner [--presets tiny small] [--device cpu|cuda] [--set train.amp=none]

Models are built from config/symbolic_<preset>.yaml with random weights and random tokens
(speed only; no quality claim). Training FLOPs per step = 6 x (decoder parameters x target
tokens + encoder parameters x condition positions) + attention (12 x layers x d x T per token).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import machine, matmul_flops, sync, table
from src.models.builders import planner_without_tokenizer
from src.models.sampling import PlannerStepper, SamplingConfig
from src.models.symbolic_planner import SymbolicPlanner
from src.music.conditions import Conditions, batch
from src.training.loop import autocast, precision
from src.training.optim import build_optimizer
from src.training.symbolic import SymbolicConfig
from src.utils.config import load_config


def build(
    preset: str, device: torch.device, overrides: list[str] | None = None
) -> tuple[SymbolicPlanner, SymbolicConfig]:
    cfg = load_config(SymbolicConfig, f"config/symbolic_{preset}.yaml", overrides)
    mcfg = planner_without_tokenizer(cfg.model, 512)
    torch.manual_seed(0)
    return SymbolicPlanner(mcfg).to(device), cfg


def conds(model: SymbolicPlanner, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    c = Conditions(
        text=rng.normal(size=384).astype(np.float32),
        style="FOLK",
        emotion="HAPPY",
        tempo=120.0,
        key=0,
        timesig="4/4",
        programs=[0],
        plan_label=[0] * 16,
        plan_index=list(range(16)),
    )
    return batch([c] * n, model.cfg, device)


def train_flops_per_step(model: SymbolicPlanner, B: int, T: int) -> float:
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters()) + model.head.weight.numel()
    S = model.n_fixed + model.cfg.max_bars
    attn = 12 * model.cfg.n_dec_layers * model.cfg.d_model * T
    return 6 * (dec * B * T + enc * B * S) + attn * B * T


def bench_train(model, cfg, device, steps: int) -> dict:
    B, T = cfg.train.micro_batch, model.cfg.block_size
    if device.type == "cpu":
        B = min(B, 16)
    opt = build_optimizer(model, 1e-4, 0.1, (0.9, 0.95))
    idx = torch.randint(4, 512, (B, T + 1), device=device)
    cond = conds(model, B, device)
    dtype = precision(cfg.train.amp, device)[0]  # what stage 2 trains in on this device

    def step():
        with autocast(dtype, device):
            logits = model(idx[:, :-1], cond)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), idx[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t) / steps
    return {
        "batch": f"{B}x{T}",
        "precision": dtype,
        "train_tok_s": B * T / dt,
        "train_flops": train_flops_per_step(model, B, T) / dt,
    }


@torch.no_grad()
def bench_sample(model, device, n_tokens: int, use_cache: bool) -> float:
    model.eval()
    cond = conds(model, 1, device)
    stepper = PlannerStepper(model, lambda b0: cond, SamplingConfig(use_cache=use_cache))
    gen = torch.Generator().manual_seed(0)
    logits = stepper.start(torch.tensor([[1]], device=device))
    sync(device)
    t = time.perf_counter()
    for _ in range(n_tokens):
        nxt = torch.multinomial(logits.float().softmax(-1).cpu(), 1, generator=gen)[:, 0].to(device)
        logits = stepper.step(nxt)
    sync(device)
    model.train()
    return n_tokens / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--sample_tokens", type=int, default=256)
    ap.add_argument("--set", action="append", default=[], help="config overrides (model.dropout=0.1, train.amp=none)")
    ap.add_argument("--json", default="")
    ap.add_argument("--params_only", action="store_true", help="only print each preset's parameter count")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.params_only:
        for preset in args.presets:
            cfg = load_config(SymbolicConfig, f"config/symbolic_{preset}.yaml")
            vocab = 2048 if preset == "full" else 512  # the vocabulary its data config trains
            n = SymbolicPlanner(planner_without_tokenizer(cfg.model, vocab)).num_params()
            print(f"{preset}: {n:,} parameters (vocabulary {vocab})")
        return
    peak = matmul_flops(
        device, 4096 if device.type == "cuda" else 2048, torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    rows = []
    for preset in args.presets:
        model, cfg = build(preset, device, args.set)
        r = {"preset": preset, "params_M": round(model.num_params() / 1e6, 2), "dropout": model.cfg.dropout}
        r.update(bench_train(model, cfg, device, args.steps))
        r["mfu"] = f"{100 * r['train_flops'] / peak:.0f}%"
        r["train_tok_s"] = round(r["train_tok_s"])
        r["train_GFLOP_s"] = round(r.pop("train_flops") / 1e9, 1)
        n = min(args.sample_tokens, model.cfg.block_size - 1)
        r["sample_tok_s_cache"] = round(bench_sample(model, device, n, True), 1)
        r["sample_tok_s_nocache"] = round(bench_sample(model, device, n, False), 1)
        r["sample_tokens"] = n
        rows.append(r)
    print(f"machine: {machine()}")
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(
        table(
            rows,
            [
                "preset",
                "params_M",
                "batch",
                "dropout",
                "precision",
                "train_tok_s",
                "train_GFLOP_s",
                "mfu",
                "sample_tokens",
                "sample_tok_s_cache",
                "sample_tok_s_nocache",
            ],
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": machine(), "overrides": args.set, "matmul_peak_flops": peak, "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
