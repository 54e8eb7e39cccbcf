"""Download (and verify, and extract) public datasets without preparing them.

    python -m src.data.fetch pop909 maestro lakh musiccaps [--raw_dir data/raw] [--mirror DIR_OR_URL]

Stage 1 does the same on its own for the sources its config enables; this is for fetching
ahead of time, or on a machine with internet for a mirror folder (``data/raw/<name>/downloads``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from src.data.downloads import DownloadError, fetch
from src.data.lakh_source import LakhConfig, LakhSource
from src.data.maestro_source import MaestroConfig, MaestroSource
from src.data.musiccaps import MUSICCAPS
from src.data.pop909_source import POP909Config, POP909Source
from src.utils.logging import setup_logging

DATASETS = ("pop909", "maestro", "lakh", "musiccaps")


def fetch_dataset(name: str, raw_dir: Path, mirror: str) -> Path:
    """The dataset's files under ``raw_dir/<name>/``; returns the main file or folder."""
    if name == "musiccaps":
        return fetch(MUSICCAPS, raw_dir / name, mirror)
    source = {
        "pop909": lambda: POP909Source(POP909Config(enabled=True), mirror),
        "maestro": lambda: MaestroSource(MaestroConfig(enabled=True), mirror),
        "lakh": lambda: LakhSource(LakhConfig(enabled=True), mirror),
    }[name]()
    pieces, _ = source.collect(raw_dir, workers=1)
    logging.getLogger("fetch").info("%s: %d pieces", name, len(pieces))
    return raw_dir / name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", choices=DATASETS)
    p.add_argument("--raw_dir", default="data/raw")
    p.add_argument("--mirror", default="", help="folder or http(s) address holding the datasets' files")
    args = p.parse_args(argv)
    setup_logging()
    try:
        for name in args.datasets:
            print(fetch_dataset(name, Path(args.raw_dir), args.mirror))
    except (DownloadError, RuntimeError, ValueError) as e:
        logging.getLogger("fetch").error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
