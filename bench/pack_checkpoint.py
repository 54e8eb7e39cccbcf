"""Move a checkpoint's inference part through a channel that takes files of at most 16 MiB.

    python bench/pack_checkpoint.py pack CHECKPOINT OUT_DIR NAME    # NAME.part0, NAME.part1, ...
    python bench/pack_checkpoint.py join IN_DIR NAME CHECKPOINT     # the pieces back into one file

``pack`` drops what only resuming needs (optimiser, scheduler, scaler, RNG states); the model weights,
its config and the checkpoint's extras are kept bit for bit, and both ends print the bytes' SHA-256.
Used by ``bench/small_on_gpu.sh`` (a lent GPU machine sends back at most 8 files of 16 MiB each).
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import torch

CHUNK = 16 * 2**20 - 4096
RESUME_ONLY = ("optimizer", "scheduler", "scaler", "rng")


def pack(src: str, out_dir: str, name: str) -> None:
    state = torch.load(src, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k not in RESUME_ONLY}
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    for i in range(0, len(data), CHUNK):
        Path(out_dir, f"{name}.part{i // CHUNK}").write_bytes(data[i : i + CHUNK])
    print(name, len(data), hashlib.sha256(data).hexdigest(), "step", state.get("step"), "val", state.get("val_loss"))


def join(in_dir: str, name: str, dst: str) -> None:
    parts = sorted(Path(in_dir).glob(f"{name}.part*"), key=lambda p: int(p.suffix.removeprefix(".part")))
    if not parts:
        sys.exit(f"pack_checkpoint: no {name}.part* in {in_dir}")
    data = b"".join(p.read_bytes() for p in parts)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(dst).with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(dst)
    print(dst, len(data), hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    commands = {"pack": pack, "join": join}
    if len(sys.argv) != 5 or sys.argv[1] not in commands:
        sys.exit(__doc__.split("\n\n")[1])
    commands[sys.argv[1]](*sys.argv[2:])
