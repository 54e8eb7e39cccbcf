"""The pipeline's demo songs: one per emotion, in styles the trained checkpoint knows.

    python -m src.generation.demos [--config config/generation.yaml] [--preset tiny] [--force]

Audio comes from the preset's neural renderer when its checkpoint exists, else FluidSynth. A demo
whose JSON already records the current planner and renderer checkpoints (by hash), sampling and song controls
is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from src.generation.config import GenerationConfig
from src.generation.run import run_generation, select_checkpoint
from src.generation.song import SongRequest
from src.models.sampling import SamplingConfig
from src.utils.checkpoint import load_checkpoint
from src.utils.config import add_config_args, load_config
from src.utils.io import sha256_file
from src.utils.logging import setup_logging

log = logging.getLogger("demos")
# emotion -> (styles in order of preference, prompt, tempo, form, key)
DEMOS = {
    "HAPPY": (
        ("FOLK", "POP", "CLASSICAL"),
        "a lively, joyful dance tune for fiddle",
        126.0,
        "a:8,a:8,b:8,b:8",
        "G major",
    ),
    "SAD": (("CLASSICAL", "FOLK"), "a slow and sorrowful chorale for choir", 66.0, "a:8,b:8,a:8", "D minor"),
    "TENSE": (
        ("CLASSICAL", "FOLK"),
        "a restless, dramatic piece for violin and choir",
        132.0,
        "a:8,b:8,b:8,a:8",
        "E minor",
    ),
    "PEACEFUL": (("FOLK", "CLASSICAL"), "a gentle, calm air for flute", 84.0, "a:8,b:8,a:8", "F major"),
}


def demo_requests(known_styles: Iterable[str], sampling: SamplingConfig) -> list[tuple[str, SongRequest]]:
    """(name, request) of each demo song, in the first of its styles that the checkpoint knows."""
    known = set(known_styles)
    return [
        (
            f"demo_{emotion.lower()}",
            SongRequest(
                prompt=prompt,
                style=next((s for s in styles if s in known), styles[0]),
                emotion=emotion,
                tempo=tempo,
                form=form,
                key=key,
                seed=100 + i,
                sampling=sampling,
            ),
        )
        for i, (emotion, (styles, prompt, tempo, form, key)) in enumerate(DEMOS.items())
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(ap, "config/generation.yaml")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(
        GenerationConfig, args.config, args.overrides + ([f"preset={args.preset}"] if args.preset else [])
    )
    try:
        ckpt, _ = select_checkpoint(cfg, None)
    except FileNotFoundError as e:
        log.error("%s", e)
        return 1
    digest = sha256_file(ckpt)[:16]
    renderer = Path(cfg.renderer_checkpoint.format(preset=cfg.preset))
    renderer_digest = sha256_file(renderer)[:16] if renderer.is_file() else None
    out = Path(cfg.output_dir)
    jobs = []
    for name, req in demo_requests(load_checkpoint(ckpt)["data_stats"]["styles"], cfg.sampling):
        meta = out / f"{name}.json"
        if not args.force and meta.is_file():
            old = json.loads(meta.read_text())
            same_sampling = old["settings"].get("sampling") == dataclasses.asdict(req.sampling)
            same_controls = old["settings"].get("controls") == dataclasses.asdict(cfg.controls)
            if (
                same_sampling
                and same_controls
                and old["checkpoint"]["sha256"] == digest
                and old["render"].get("checkpoint_sha256") == renderer_digest
            ):
                log.info("%s: up to date", name)
                continue
        jobs.append((req, name))
    if jobs:
        run_generation(jobs, cfg, out, 1, None, None, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
