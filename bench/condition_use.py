"""Which conditions a planner uses: its loss on held-out windows with each condition field nulled or changed.

    .venv/bin/python -m bench.condition_use [--checkpoints A.pt B.pt] [--tokens 64] \
        [--out docs/results/condition_use_tiny.json]

Every validation piece's opening window (its first ``block_size`` tokens, where the decoder has no earlier
tokens and only the conditions say what comes) is scored twice: over its first ``--tokens`` targets (the
opening) and over the whole window. Variants: every field true; one field at a time replaced by its null
value (the one condition dropout trains); the key moved to its parallel mode or five semitones up; key and
emotion moved to the parallel mode together, with the prompt and without it (compare with "text null"); text,
key and emotion together nulled (every source of the mode); everything nulled. A field the model uses costs
loss when it is taken away: the table gives each variant's loss minus the true conditions' loss (nats per
token). Nothing is sampled, so this measures the model itself, not the song generator's masks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.common import machine, table
from src.models.builders import codec_from_checkpoint, load_planner
from src.music.conditions import COND_FIELDS, NULL_KEY, drop_fields, parallel_conditions
from src.training.symbolic import validation_windows
from src.utils.io import write_text


def variants(cond: dict[str, torch.Tensor], cfg: Any) -> dict[str, dict[str, torch.Tensor]]:
    """The conditions of a batch as given, with fields nulled, and with the key changed."""
    B = cond["style"].shape[0]

    def null(*names: str) -> dict[str, torch.Tensor]:
        drop = torch.zeros(B, len(COND_FIELDS), dtype=torch.bool)
        for n in names:
            drop[:, COND_FIELDS.index(n)] = True
        return drop_fields(cond, drop, cfg)

    key = cond["key"]
    known = key < NULL_KEY  # key ids: tonic + 12 * minor
    out = {"true": cond, **{f"{f} null": null(f) for f in COND_FIELDS}}
    out["key: parallel mode"] = {**cond, "key": parallel_conditions(cond)["key"]}
    out["key: +5 semitones"] = {**cond, "key": torch.where(known, (key % 12 + 5) % 12 + 12 * (key // 12), key)}
    out["key and emotion: parallel mode"] = parallel_conditions(cond)
    out["text null; key and emotion: parallel mode"] = parallel_conditions(null("text"))  # against "text null"
    out["text, key, emotion null"] = null("text", "key", "emotion")
    out["all null"] = null(*COND_FIELDS)
    return out


@torch.no_grad()
def condition_use(ckpt: str, data_dir: str, tokens: int) -> dict[str, Any]:
    model, state = load_planner(ckpt)
    model.eval()
    codec = codec_from_checkpoint(state)
    ds = validation_windows(model.cfg, state, data_dir, codec, 1)
    sums: dict[str, dict[str, float]] = {}
    counts = {"opening": 0, "window": 0}
    for batch in DataLoader(ds, batch_size=32):
        x, y = batch.pop("x"), batch.pop("y")
        spans = {"opening": slice(0, tokens), "window": slice(0, y.shape[1])}
        for span, sl in spans.items():
            counts[span] += int((y[:, sl] != -100).sum())
        for name, cond in variants(batch, model.cfg).items():
            logits = model(x, cond)  # (B, T, V)
            nll = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100, reduction="none")  # (B, T)
            for span, sl in spans.items():
                sums.setdefault(name, {}).setdefault(span, 0.0)
                sums[name][span] += float(nll[:, sl].sum())
    loss = {name: {span: s / counts[span] for span, s in v.items()} for name, v in sums.items()}
    kind = "aligned" if state.get("kind") == "aligned_planner" else "supervised"
    rows = [
        {
            "checkpoint": f"{kind}: {Path(ckpt).parent.name}",
            "variant": name,
            "opening_loss": round(v["opening"], 4),
            "opening_delta": round(v["opening"] - loss["true"]["opening"], 4),
            "window_loss": round(v["window"], 4),
            "window_delta": round(v["window"] - loss["true"]["window"], 4),
        }
        for name, v in loss.items()
    ]
    return {"checkpoint": ckpt, "step": state["step"], "pieces": len(ds), "tokens": counts, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--checkpoints", nargs="+", default=["checkpoints/symbolic/tiny/best.pt", "checkpoints/aligned/tiny/best.pt"]
    )
    ap.add_argument("--data_dir", default="data/processed/tiny")
    ap.add_argument("--tokens", type=int, default=64, help="targets counted as the opening of each window")
    ap.add_argument("--out", default="docs/results/condition_use_tiny.json")
    args = ap.parse_args()
    t0 = time.time()
    results = [condition_use(c, args.data_dir, args.tokens) for c in args.checkpoints]
    out = {"machine": machine(), "args": vars(args), "seconds": round(time.time() - t0, 1), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), json.dumps(out, indent=1))
    print(f"# Condition use ({machine()}, {out['seconds']} s): loss with a field taken away minus the true loss\n")
    cols = ["checkpoint", "variant", "opening_loss", "opening_delta", "window_loss", "window_delta"]
    print(table([r for res in results for r in res["rows"]], cols))


if __name__ == "__main__":
    main()
