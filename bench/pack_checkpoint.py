"""Move a checkpoint's inference part through a channel that takes files of at most 16 MiB.

    python bench/pack_checkpoint.py pack CHECKPOINT OUT_DIR NAME    # NAME.part0of3, NAME.part1of3, ...
    python bench/pack_checkpoint.py join IN_DIR NAME CHECKPOINT     # the pieces back into one file

``pack`` drops what only resuming needs (optimiser, scheduler, scaler, RNG states); the model weights,
its config and the checkpoint's extras are kept bit for bit, and both ends print the bytes' SHA-256. Each
piece's name carries the count, so ``join`` refuses an incomplete set (a piece left behind by the channel).
Used by ``bench/small_on_gpu.sh`` (a lent GPU machine sends back at most 8 files of 16 MiB each).
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from pathlib import Path

import torch

from src.utils.io import atomic_path

CHUNK = 16 * 2**20 - 4096
RESUME_ONLY = ("optimizer", "scheduler", "scaler", "rng")


def pack(src: str, out_dir: str, name: str) -> None:
    state = torch.load(src, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k not in RESUME_ONLY}
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    count = -(-len(data) // CHUNK)
    for i in range(count):
        Path(out_dir, f"{name}.part{i}of{count}").write_bytes(data[i * CHUNK : (i + 1) * CHUNK])
    print(name, len(data), hashlib.sha256(data).hexdigest(), "step", state.get("step"), "val", state.get("val_loss"))


def join(in_dir: str, name: str, dst: str) -> None:
    found = {}
    for p in Path(in_dir).glob(f"{name}.part*"):
        if m := re.fullmatch(r"part(\d+)of(\d+)", p.suffix[1:]):
            found[(int(m[1]), int(m[2]))] = p
    if not found:
        sys.exit(f"pack_checkpoint: no {name}.part* in {in_dir}")
    counts = {n for _, n in found}
    if len(counts) != 1 or sorted(i for i, _ in found) != list(range(counts.pop())):
        sys.exit(f"pack_checkpoint: {in_dir}: {name}.part* is not one complete set ({sorted(found)})")
    data = b"".join(found[k].read_bytes() for k in sorted(found))
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)
    print(dst, len(data), hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    commands = {"pack": pack, "join": join}
    if len(sys.argv) != 5 or sys.argv[1] not in commands:
        sys.exit(__doc__.split("\n\n")[1])
    commands[sys.argv[1]](*sys.argv[2:])
