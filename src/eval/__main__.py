"""Evaluate planner checkpoints (or MIDI folders) against held-out real music.

    python -m src.eval --checkpoint checkpoints/symbolic/tiny/best.pt [--checkpoint checkpoints/aligned/tiny/best.pt] \\
        [--num_samples 1] [--conditions 0] [--max_bars 16] [--midi_dir DIR] [--name NAME] \\
        [--config config/eval.yaml] [--set train_pieces=400] [--generation_config config/generation.yaml]

Writes outputs/eval/<name>/report.md (tables, PNG plots) and metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

from src.eval.config import EvalConfig
from src.generation.config import GenerationConfig
from src.utils.config import ConfigError, add_config_args, load_config
from src.utils.logging import setup_logging

log = logging.getLogger("src.eval")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", default=[], help="planner checkpoint (repeatable)")
    p.add_argument("--midi_dir", action="append", default=[], help="a folder of MIDI files to evaluate (repeatable)")
    p.add_argument(
        "--data_dir", default="data/processed/tiny", help="prepared data: held-out conditions and real music"
    )
    p.add_argument("--num_samples", type=int, help="songs per held-out condition")
    p.add_argument("--conditions", type=int, help="held-out conditions to use (0 = every piece of the split)")
    p.add_argument("--split", choices=["test", "validation"], help="the held-out real music")
    p.add_argument("--max_bars", type=int, help="songs follow their piece's section form up to this many bars")
    p.add_argument("--seed", type=int)
    p.add_argument("--no_bigram", action="store_true", help="skip the bigram floor")
    p.add_argument("--name", default="", help="report folder name (default: from the checkpoints)")
    p.add_argument("--out_dir", default="outputs/eval")
    p.add_argument(
        "--generation_config",
        default="config/generation.yaml",
        help="stage 5's settings: the songs are sampled with its sampling defaults and controls",
    )
    add_config_args(p, "config/eval.yaml")  # the defaults of the flags above
    args = p.parse_args(argv)
    setup_logging("INFO")
    try:
        cfg = load_config(EvalConfig, args.config, args.overrides)
        flags = {k: getattr(args, k) for k in ("num_samples", "conditions", "split", "max_bars", "seed")}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
        cfg.bigram = cfg.bigram and not args.no_bigram
        stage5 = load_config(GenerationConfig, args.generation_config, [])
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
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
        result = evaluate(args.checkpoint, args.data_dir, cfg, args.midi_dir, stage5.sampling, stage5.controls)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "python -m src.eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = write_report(result, Path(args.out_dir) / (name or "midi"), command)
    log.info("report: %s", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
