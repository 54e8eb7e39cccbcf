"""Which notes of a key real music uses, and which of them the preference pairs reward: the evidence for
counting a minor key's raised 6th and 7th as in the key (``src.music.theory.key_pitch_classes``).

    .venv/bin/python -m bench.scale_degrees [--data_dir data/processed/tiny] \
        [--pairs data/subsets/tiny/preference_data.json checkpoints/aligned/tiny/on_policy_pairs.json] \
        [--out docs/results/scale_degrees_tiny.json]

Real pieces: every train piece, decoded from its tokens, against its labelled key. Per style and mode, the share
of pitched notes outside the natural scale (the major scale; in minor the natural minor), on the raised 6th and
on the raised 7th (in minor), and outside the key as ``key_pitch_classes`` now counts it.
Pair files: for the pairs in a minor key, per source, the same shares in the chosen and in the rejected
continuations, so that one sees whether the pairs teach the planner to drop a minor key's leading tone.
And, for every pair, the heuristic's in-key measure (the share of notes in the key estimated from the passage,
as the ``in_key`` term scores it) per source and side: its mean, quartiles and the share of passages wholly in
key. The real continuations (the chosen side of the synthetic pairs) are the real level that
``ScorerConfig.in_key_target`` can be set to.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import machine, table
from src.eval.evaluate import real_pieces
from src.models.builders import load_codec
from src.music.notes import notes_array
from src.music.theory import MAJOR_SCALE, MINOR_SCALE, estimate_key, key_pitch_classes, parse_key, scale_consistency
from src.utils.io import write_json

COLS = ["notes", "outside natural scale", "raised 6th", "raised 7th", "outside key"]
NATURAL = {"major": MAJOR_SCALE, "minor": MINOR_SCALE}


def degrees(notes: np.ndarray, tonic: int) -> np.ndarray:
    """Scale degree in semitones above the tonic (0..11) of every pitched note."""
    return (notes[notes[:, 3] == 0, 2] - tonic) % 12


def shares(degs: np.ndarray, mode: str) -> dict[str, float]:
    """The shares of the module's docstring for degrees ``degs`` of one key's notes."""
    share = lambda hit: round(float(hit.sum()) / max(len(degs), 1), 4)  # noqa: E731
    out: dict[str, float] = {"notes": len(degs), "outside natural scale": share(~np.isin(degs, NATURAL[mode]))}
    if mode == "minor":
        out |= {"raised 6th": share(degs == 9), "raised 7th": share(degs == 11)}
    out["outside key"] = share(~np.isin(degs, key_pitch_classes(0, mode)))
    return out


def real_rows(data_dir: str, codec) -> list[dict]:
    found: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for p in real_pieces(data_dir, "train", codec):
        r = p.request["row"]
        found[r["style"], r["mode"]].append(degrees(p.notes, r["key_tonic"]))
    return [
        {"style": s, "mode": m, "pieces": len(d), **shares(np.concatenate(d), m)} for (s, m), d in sorted(found.items())
    ]


def pair_rows(path: str, codec) -> list[dict]:
    pairs = json.loads(Path(path).read_text(encoding="utf-8"))["pairs"]
    found: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for p in pairs:
        tonic, mode = parse_key(p["conditions"]["key"])
        if mode != "minor":
            continue
        for side in ("chosen", "rejected"):
            found[p["source"], side].append(degrees(notes_array(codec.decode(p[side])), tonic))
    return [
        {"file": Path(path).name, "source": s, "side": side, "pairs": len(d), **shares(np.concatenate(d), "minor")}
        for (s, side), d in sorted(found.items())
    ]


def in_key_rows(path: str, codec) -> list[dict]:
    """Per source and side of a pair file: the in_key term's measure over its continuations."""
    pairs = json.loads(Path(path).read_text(encoding="utf-8"))["pairs"]
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for p in pairs:
        for side in ("chosen", "rejected"):
            notes = notes_array(codec.decode(p[side]))
            if len(notes):
                tonic, mode, _ = estimate_key(notes)
                found[p["source"], side].append(scale_consistency(notes, tonic, mode))
    rows = []
    for (s, side), v in sorted(found.items()):
        q = np.quantile(v, [0.25, 0.5, 0.75])
        rows.append({
            "file": Path(path).name, "source": s, "side": side, "passages": len(v), "mean": round(float(np.mean(v)), 4),
            "q25": round(float(q[0]), 4), "median": round(float(q[1]), 4), "q75": round(float(q[2]), 4),
            "all in key": round(float(np.mean(np.asarray(v) == 1.0)), 4),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default="data/processed/tiny")
    ap.add_argument("--pairs", nargs="*", default=[])
    ap.add_argument("--out", default="docs/results/scale_degrees_tiny.json")
    args = ap.parse_args(argv)
    if missing := [p for p in args.pairs if not Path(p).is_file()]:
        ap.error(f"--pairs: no such file: {', '.join(missing)}")
    codec = load_codec(args.data_dir)
    real = real_rows(args.data_dir, codec)
    print(table(real, ["style", "mode", "pieces", *COLS]))
    pairs = [row for path in args.pairs for row in pair_rows(path, codec)]
    if pairs:
        print(table(pairs, ["file", "source", "side", "pairs", *COLS]))
    in_key = [row for path in args.pairs for row in in_key_rows(path, codec)]
    if in_key:
        print(table(in_key, ["file", "source", "side", "passages", "mean", "q25", "median", "q75", "all in key"]))
    write_json(args.out, {"machine": machine(), "args": vars(args), "real": real, "pairs": pairs, "in_key": in_key})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
