"""Evaluate planner checkpoints (or MIDI folders) against held-out real music.

    python -m src.eval --checkpoint checkpoints/symbolic/tiny/best.pt [--checkpoint checkpoints/aligned/tiny/best.pt] \\
        [--num_samples 1] [--conditions 0] [--midi_dir DIR] [--name NAME]

Writes outputs/eval/<name>/report.md (tables, PNG plots) and metrics.json.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from src.utils.logging import setup_logging

log = logging.getLogger("src.eval")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", default=[], help="planner checkpoint (repeatable)")
    p.add_argument("--midi_dir", action="append", default=[], help="a folder of MIDI files to evaluate (repeatable)")
    p.add_argument(
        "--data_dir", default="data/processed/tiny", help="prepared data: held-out conditions and real music"
    )
    p.add_argument("--num_samples", type=int, default=1, help="songs per held-out condition")
    p.add_argument("--conditions", type=int, default=0, help="held-out conditions to use (0 = every test piece)")
    p.add_argument("--max_bars", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_bigram", action="store_true", help="skip the bigram floor")
    p.add_argument("--name", default="", help="report folder name (default: from the checkpoints)")
    p.add_argument("--out_dir", default="outputs/eval")
    args = p.parse_args(argv)
    setup_logging("INFO")
    if args.num_samples < 1 or args.max_bars < 1 or args.conditions < 0:
        print("error: --num_samples and --max_bars must be >= 1, --conditions >= 0", file=sys.stderr)
        return 2
    for path in [*args.checkpoint, *args.midi_dir]:
        if not Path(path).exists():
            print(f"error: {path}: not found", file=sys.stderr)
            return 2
    if not (Path(args.data_dir) / "manifest.jsonl").is_file():
        print(f"error: {args.data_dir}: no prepared data; create it with: bash 01_prepare_data.sh", file=sys.stderr)
        return 2
    from src.eval.evaluate import evaluate
    from src.eval.report import write_report

    name = args.name or "_vs_".join(Path(c).parent.name + "-" + Path(c).parent.parent.name for c in args.checkpoint)
    try:
        result = evaluate(
            args.checkpoint,
            args.data_dir,
            num_samples=args.num_samples,
            conditions=args.conditions,
            max_bars=args.max_bars,
            seed=args.seed,
            midi_dirs=args.midi_dir,
            with_bigram=not args.no_bigram,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "python -m src.eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = write_report(result, Path(args.out_dir) / (name or "midi"), command)
    log.info("report: %s", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
