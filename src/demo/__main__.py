"""The live demo: type a prompt, hear a new song from this repository's checkpoints.

    python -m src.demo [--preset tiny] [--host 127.0.0.1] [--port 7860] [--max_age_minutes 60]

Loads the planner that stage 5 would (aligned, else supervised; ``--symbolic_ckpt`` to choose) and
the preset's neural renderer when it exists (FluidSynth is always offered), once, then serves the page.
Songs are made one at a time in the order asked for; their files are deleted after ``--max_age_minutes``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from src.demo.app import DemoApp
from src.demo.server import make_server
from src.generation.config import GenerationConfig
from src.utils.config import ConfigError, add_config_args, load_config
from src.utils.logging import setup_logging

log = logging.getLogger("demo")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None, help="tiny | small | full (default: from the config)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--out_dir", default="outputs/demo", help="where songs are written (one folder each)")
    p.add_argument("--max_age_minutes", type=float, default=60.0, help="songs older than this are deleted")
    p.add_argument("--max_bars", type=int, default=128, help="the longest song the page may ask for")
    p.add_argument("--symbolic_ckpt", default=None)
    p.add_argument("--renderer_ckpt", default=None)
    add_config_args(p, "config/generation.yaml")
    args = p.parse_args(argv)
    setup_logging()
    try:
        overrides = args.overrides + ([f"preset={args.preset}"] if args.preset else [])
        cfg = load_config(GenerationConfig, args.config, overrides)
        if args.max_age_minutes <= 0:
            raise ValueError(f"--max_age_minutes: must be > 0, got {args.max_age_minutes}")
        if args.max_bars < 1:
            raise ValueError(f"--max_bars: must be >= 1, got {args.max_bars}")
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = DemoApp(
        cfg, Path(args.out_dir), args.max_age_minutes * 60, args.max_bars, 16, args.symbolic_ckpt, args.renderer_ckpt
    )
    try:
        server = make_server(app, args.host, args.port)
    except OSError as e:
        print(f"error: --port {args.port} on {args.host}: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"demo: http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
