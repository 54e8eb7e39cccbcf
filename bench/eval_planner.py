"""Planner quality on the validation split: the model's loss against unigram and bigram
baselines on exactly the same target tokens, and the loss with conditions shuffled.

    .venv/bin/python -m bench.eval_planner --checkpoint checkpoints/symbolic/tiny/best.pt [--json out.json]

Baselines are fitted on the train split's tokens ([BOS] piece [EOS]); the bigram is
interpolated with the unigram, its weight chosen on the validation windows themselves (the
most favourable choice for the baseline).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bench.common import machine, table
from src.models.builders import load_codec
from src.models.symbolic_planner import PlannerConfig
from src.music.tokenizer import BOS, EOS, IGNORE
from src.training.datasets import PlannerDataset, TokenDataset
from src.training.symbolic import val_losses, validation_windows
from src.utils.checkpoint import load_checkpoint


def baselines(data_dir: str, ds: PlannerDataset, vocab: int) -> dict[str, float]:
    train = TokenDataset(data_dir, "train")
    uni = np.ones(vocab)  # add-one
    big = np.zeros((vocab, vocab))
    for i in range(len(train)):
        seq = np.concatenate([[BOS], train.ids(i), [EOS]])
        np.add.at(uni, seq[1:], 1)
        np.add.at(big, (seq[:-1], seq[1:]), 1)
    p_uni = uni / uni.sum()
    p_big = big / np.maximum(big.sum(1, keepdims=True), 1)
    xs, ys = [], []
    for i in range(len(ds)):
        item = ds[i]
        keep = item["y"] != IGNORE
        xs.append(item["x"][keep])
        ys.append(item["y"][keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    out = {"unigram": float(-np.log(p_uni[y]).mean())}
    best = min(
        (float(-np.log(lam * p_big[x, y] + (1 - lam) * p_uni[y]).mean()), lam)
        for lam in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    )
    out["bigram"], out["bigram_lambda"] = best
    out["target_tokens"] = int(len(y))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data_dir", default="")
    ap.add_argument("--windows", type=int, default=2, help="validation windows per piece")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    state = load_checkpoint(args.checkpoint)
    data_dir = args.data_dir or state["data_dir"]
    mcfg = PlannerConfig(**state["model_config"])
    ds = validation_windows(mcfg, state, data_dir, load_codec(data_dir), args.windows)
    losses = val_losses(args.checkpoint, data_dir, args.windows)  # refuses a checkpoint of other data
    base = baselines(data_dir, ds, mcfg.vocab_size)
    rows = [
        {"what": "unigram (train counts)", "val_loss": f"{base['unigram']:.4f}"},
        {"what": f"bigram (interpolated, lambda {base['bigram_lambda']})", "val_loss": f"{base['bigram']:.4f}"},
        {"what": f"planner, step {state['step']}", "val_loss": f"{losses['true']:.4f}"},
        {"what": "planner, prompt embedding shuffled", "val_loss": f"{losses['text_shuffled']:.4f}"},
        {"what": "planner, prompt only (other fields withheld, plan kept)", "val_loss": f"{losses['prompt_only']:.4f}"},
        {"what": "planner, prompt only, shuffled", "val_loss": f"{losses['prompt_only_shuffled']:.4f}"},
        {"what": "planner, no conditions (plan kept)", "val_loss": f"{losses['no_conditions']:.4f}"},
        {"what": "planner, conditions shuffled (plan kept)", "val_loss": f"{losses['shuffled']:.4f}"},
        {"what": "planner, conditions and plan shuffled", "val_loss": f"{losses['shuffled_with_plan']:.4f}"},
    ]
    print(f"machine: {machine()}")
    print(
        f"checkpoint: {args.checkpoint} (step {state['step']}); data: {data_dir}; "
        f"{base['target_tokens']} validation target tokens in {len(ds)} windows"
    )
    print(table(rows, ["what", "val_loss"]))
    gap = losses["shuffled"] - losses["true"]
    print(
        f"conditioning gap: {gap:.4f} nats/token (plan kept), "
        f"{losses['shuffled_with_plan'] - losses['true']:.4f} (plan shuffled too)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "step": state["step"], **base, **losses}, f, indent=2)


if __name__ == "__main__":
    main()
