"""How often real bars open with a rest: the evidence for ``controls.sounding_downbeats``.

    .venv/bin/python -m bench.bar_openings [--data_dir data/processed/tiny] [--max_bars 16] \
        [--out docs/results/bar_openings_tiny.json]

Every piece of every split, cut to its first ``--max_bars`` bars as the evaluation report cuts them, decoded
from its tokens: per style, the share of bars after the first in which nothing sounds during the first
quarter note (no note starts there and none is held over the bar line), and the share of pieces whose first
bar opens that way (a pickup). Stage 5's ``sounding_downbeats`` forbids the first and allows the second.
"""

from __future__ import annotations

import argparse
from collections import Counter

from bench.common import machine, table
from src.eval.evaluate import real_pieces
from src.models.builders import load_codec
from src.music.features import silent_openings
from src.music.notes import bar_ticks
from src.utils.io import write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default="data/processed/tiny")
    ap.add_argument("--max_bars", type=int, default=16)
    ap.add_argument("--out", default="docs/results/bar_openings_tiny.json")
    args = ap.parse_args(argv)
    codec = load_codec(args.data_dir)
    count: Counter[tuple[str, str]] = Counter()
    for split in ("train", "validation", "test"):
        for p in real_pieces(args.data_dir, split, codec, max_bars=args.max_bars):
            if not len(p.notes):
                continue
            bars = -(-int((p.notes[:, 0] + p.notes[:, 1]).max()) // bar_ticks(p.tpq, p.time_signature))
            count[p.style, "pieces"] += 1
            count[p.style, "bars"] += bars - 1
            count[p.style, "silent"] += len(silent_openings(p.notes, p.tpq, p.time_signature, bars))
            count[p.style, "pickups"] += int(not (p.notes[:, 0] < p.tpq).any())
    rows = [
        {
            "style": s,
            "pieces": count[s, "pieces"],
            "bars after the first": count[s, "bars"],
            "silent openings": count[s, "silent"],
            "share": round(count[s, "silent"] / max(1, count[s, "bars"]), 4),
            "first bar opens silent": round(count[s, "pickups"] / count[s, "pieces"], 3),
        }
        for s in sorted({s for s, _ in count})
    ]
    print(table(rows, list(rows[0])))
    out = {"machine": machine(), "args": vars(args), "rows": rows}
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
