"""One cached step: its outputs are reused when the fingerprint of its inputs is the one recorded with them.

A step's *record* is a JSON file holding ``"fingerprint"`` and whatever the step reports; it is written
last, after the step's outputs, so an interrupted step has no record and is redone. A rerun with the
same inputs reads the record and skips the work::

    record = cached_step("tokenizer", out / "tokenizer_state.json", fingerprint(cfg, files), train)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from src.utils.io import sha256_text, write_json

log = logging.getLogger(__name__)


def fingerprint(*inputs: Any) -> str:
    """The identity of a step's inputs: the SHA-256 of their JSON (lists, dicts, strings, numbers)."""
    return sha256_text(json.dumps(inputs, sort_keys=True))


def recorded(record: str | Path, fp: str) -> dict[str, Any] | None:
    """The record's contents when it was made from the inputs with fingerprint ``fp``, else None."""
    record = Path(record)
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a damaged record is no record: the step is redone
    return data if isinstance(data, dict) and data.get("fingerprint") == fp else None


def cached_step(
    name: str,
    record: str | Path,
    fp: str,
    run: Callable[[], dict[str, Any]],
    outputs: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """Run ``run`` (which writes the step's outputs and returns what the record should hold) unless
    ``record`` holds ``fp`` and every path of ``outputs`` exists. Returns the record."""
    record = Path(record)
    old = recorded(record, fp)
    if old is not None and all(Path(p).exists() for p in outputs):
        log.info("%s up to date: %s", name, record)
        return old
    record.unlink(missing_ok=True)
    new = {"fingerprint": fp, **run()}
    write_json(record, new)
    return new
