#!/usr/bin/env python
"""Stage 5: a whole song from a prompt, with exact controls, as MIDI, WAV, JSON and a picture.

    python 05_generate_song.py --prompt "a calm folk tune for violin" --style folk --emotion peaceful \
        --tempo 96 --form "a,a,b,b" --bars_per_section 8 --seed 1 --output_name demo

Uses checkpoints/aligned/<preset>/best.pt when it exists, else checkpoints/symbolic/<preset>/best.pt,
unless --symbolic_ckpt is given. Audio comes from the neural renderer when its checkpoint exists,
else from FluidSynth with a General MIDI soundfont.

    python 05_generate_song.py --prompts_csv data/raw/musiccaps/musiccaps-public.csv --limit 20

generates one song per caption row: each caption is the prompt, and its tempo, mood, genre and
instrument words set the controls (--style/--emotion/--tempo are the defaults for rows that
name none); outputs/<output_name>_prompts.json lists every row's controls and where they came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from src.data.sources import safe_name
from src.generation.config import GenerationConfig
from src.generation.request import song_request
from src.generation.song import SongRequest
from src.music.vocab import EMOTIONS, STYLES
from src.utils.config import ConfigError, add_config_args, load_config
from src.utils.logging import setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="")
    p.add_argument("--style", default="CLASSICAL", help=" | ".join(STYLES))
    p.add_argument("--emotion", default="HAPPY", help=" | ".join(EMOTIONS))
    p.add_argument("--tempo", type=float, default=None, help="BPM, 30-300 (default: by emotion)")
    p.add_argument("--bars_per_section", type=int, default=8)
    p.add_argument("--form", default="", help="e.g. intro:4,verse,chorus,verse,chorus,outro:4 (default: by style)")
    p.add_argument("--key", default="", help="e.g. 'D minor', 'Bb' (default: the model's choice)")
    p.add_argument(
        "--time_signature",
        default="",
        help="e.g. 3/4, 6/8 (default: a metre word of the prompt: waltz, jig, ...; else 4/4)",
    )
    p.add_argument("--output_name", default="song")
    p.add_argument("--output_dir", default=None)
    p.add_argument("--temperature", type=float, default=None, help="default: the config's sampling.temperature")
    p.add_argument("--top_p", type=float, default=None, help="default: the config's sampling.top_p")
    p.add_argument("--top_k", type=int, default=None, help="0 = off (default: the config's sampling.top_k)")
    p.add_argument(
        "--guidance", type=float, default=None, help="classifier-free guidance scale, 1 = off (default: the config's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--symbolic_ckpt", default=None)
    p.add_argument("--renderer_ckpt", default=None)
    p.add_argument("--skip_neural_render", action="store_true")
    p.add_argument("--preset", default=None, help="tiny | small | full (default: from the config)")
    p.add_argument("--prompts_csv", default=None, help="one song per caption row (MusicCaps' table format)")
    p.add_argument("--limit", type=int, default=0, help="with --prompts_csv: the first N rows (0 = all)")
    add_config_args(p, "config/generation.yaml")
    return p.parse_args(argv)


def validate(a: argparse.Namespace, cfg: GenerationConfig) -> tuple[SongRequest, Path]:
    """Every check before anything is written; a ValueError names the flag."""
    fields = ("prompt", "style", "emotion", "tempo", "form", "bars_per_section", "key", "time_signature")
    fields += ("temperature", "top_p", "top_k", "guidance", "seed")
    req = song_request(cfg, **{k: getattr(a, k) for k in fields})
    if a.num_samples < 1:
        raise ValueError(f"--num_samples: must be >= 1, got {a.num_samples}")
    if not a.output_name or "/" in a.output_name or a.output_name.startswith("."):
        raise ValueError(f"--output_name: {a.output_name!r} must be a plain file name")
    out = Path(a.output_dir or cfg.output_dir)
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ValueError(f"--output_dir: {out} is not writable")
    return req, out


def prompt_jobs(a: argparse.Namespace, cfg: GenerationConfig) -> tuple[list[tuple[SongRequest, str]], list[dict]]:
    """One request per caption row of --prompts_csv, with the controls its words name."""
    from src.data.musiccaps import controls_for, read_prompts

    if a.limit < 0:
        raise ValueError(f"--limit: must be >= 0, got {a.limit}")
    defaults = {e: a.tempo for e in EMOTIONS} if a.tempo is not None else cfg.default_tempo
    jobs, index = [], []
    for p in read_prompts(a.prompts_csv, a.limit):
        c = controls_for(p, a.style.upper(), a.emotion.upper(), defaults)
        row_args = argparse.Namespace(
            **{**vars(a), "prompt": p.caption, "style": c.style, "emotion": c.emotion, "tempo": c.tempo}
        )
        req, _ = validate(row_args, cfg)
        name = f"{a.output_name}_{p.row:04d}_{safe_name(p.id)}"
        jobs.append((req, name))
        index.append({"row": p.row, "id": p.id, "name": name, "caption": p.caption, **dataclasses.asdict(c)})
    return jobs, index


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        overrides = args.overrides + ([f"preset={args.preset}"] if args.preset else [])
        cfg = load_config(GenerationConfig, args.config, overrides)
        req, out_dir = validate(args, cfg)
        jobs, index = prompt_jobs(args, cfg) if args.prompts_csv else ([(req, args.output_name)], [])
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from src.generation.run import run_generation

    try:
        paths = run_generation(
            jobs,
            cfg,
            out_dir,
            args.num_samples,
            args.symbolic_ckpt,
            args.renderer_ckpt,
            args.skip_neural_render,
        )
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        logging.getLogger("05_generate_song").error("%s", e)
        return 1
    if index:
        from src.data.musiccaps import summary
        from src.utils.io import write_json

        listing = out_dir / f"{args.output_name}_prompts.json"
        write_json(listing, {"prompts_csv": args.prompts_csv, "summary": summary(index), "rows": index})
        paths.append(listing)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
