"""Are two pipeline runs the same? Every artefact of one preset, compared bit for bit (or tensor for
tensor where a file also carries metadata): data, checkpoints' weights, demo songs, the report.

    .venv/bin/python -m bench.compare_runs OLD_CLONE NEW_CLONE [--preset tiny] [--json out.json]

Made to show that a change which should not change behaviour (a refactor) does not: run
``bash run_full_pipeline.sh`` in a clone before and in a clone after, then compare the two.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import machine


def same_tree(x: object, y: object) -> bool:
    """Equal nested dicts / lists of tensors and plain values (tensors compared exactly)."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and torch.equal(x, y)
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same_tree(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(same_tree(u, v) for u, v in zip(x, y))
    if isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
        return True  # a figure that is undefined in both runs (e.g. the mean of a histogram)
    return x == y


def compare(a: Path, b: Path, preset: str) -> list[dict]:
    rows: list[dict] = []

    def check(what: str, same: bool) -> None:
        rows.append({"artefact": what, "identical": bool(same)})
        print(("same  " if same else "DIFF  ") + what)

    def same_bytes(rel: str) -> bool:
        return (a / rel).read_bytes() == (b / rel).read_bytes()

    def load_json(root: Path, rel: str) -> dict:
        return json.loads((root / rel).read_text())

    proc = f"data/processed/{preset}"
    shards = sorted(f"tokens/{p.name}" for p in (a / proc / "tokens").glob("shard_*.bin"))
    for rel in ["manifest.jsonl", "tokenizer.json", "tokens/index.npy", "caption_embeddings.npy", *shards]:
        check(f"{proc}/{rel}", same_bytes(f"{proc}/{rel}"))
    npz = sorted((a / proc / "audio_pairs").rglob("*.npz"))
    differ = len(npz) != len(list((b / proc / "audio_pairs").rglob("*.npz")))
    for f in npz:
        with np.load(f) as x, np.load(b / f.relative_to(a)) as y:
            differ |= set(x.files) != set(y.files) or any(not np.array_equal(x[k], y[k]) for k in x.files)
    check(f"{proc}/audio_pairs: {len(npz)} pieces' (mel, roll, tokens) arrays", not differ)
    ia, ib = ({**load_json(r, f"{proc}/audio_pairs/index.json"), "fingerprint": ""} for r in (a, b))
    check(f"{proc}/audio_pairs/index.json (less the fingerprint)", ia == ib)
    pairs = [load_json(r, f"data/subsets/{preset}/preference_data.json") for r in (a, b)]
    check("synthetic preference pairs and their summary", all(pairs[0][k] == pairs[1][k] for k in ("pairs", "summary")))
    for stage in ("symbolic", "renderer", "aligned"):
        for name in ("best.pt", "last.pt"):
            rel = f"checkpoints/{stage}/{preset}/{name}"
            x, y = (torch.load(r / rel, map_location="cpu", weights_only=True) for r in (a, b))
            same = x["step"] == y["step"] and all(same_tree(x.get(k), y.get(k)) for k in ("model", "ema", "optimizer"))
            check(f"{rel} (step {x['step']}: weights, EMA, optimiser state)", same)
    rel = f"checkpoints/aligned/{preset}/on_policy_pairs.json"
    check(rel + " (pairs)", load_json(a, rel)["pairs"] == load_json(b, rel)["pairs"])
    for f in sorted((a / "outputs").glob("demo_*")):
        rel = f"outputs/{f.name}"
        if f.suffix in (".mid", ".wav"):
            check(rel, same_bytes(rel))
        elif f.suffix == ".json":
            x, y = load_json(a, rel), load_json(b, rel)
            check(f"{rel} (settings, facts, notes)", all(x[k] == y[k] for k in ("settings", "facts", "notes")))
    rel = f"outputs/eval/{preset}/metrics.json"
    x, y = load_json(a, rel), load_json(b, rel)  # the command line that made it may differ (its config file)
    check(f"{rel} (every figure; less the command line)", same_tree({**x, "command": ""}, {**y, "command": ""}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rows = compare(args.old, args.new, args.preset)
    same = sum(r["identical"] for r in rows)
    print(f"{same} of {len(rows)} artefacts identical")
    if args.json:
        out = {"machine": machine(), "preset": args.preset, "identical": same, "artefacts": len(rows), "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
