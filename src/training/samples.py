"""Periodic training samples: a short continuation written as MIDI and as a piano-roll image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from src.data.planner_dataset import BOS
from src.data.tokenizer import TokenCodec
from src.models.sampling import Grammar, SamplingConfig, generate
from src.models.symbolic_planner import SymbolicPlanner
from src.utils.io import atomic_path


def piano_roll_figure(score, title: str = ""):
    """A matplotlib figure of a symusic Score's notes, coloured by program."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3))
    cmap = plt.get_cmap("tab20")
    q = score.ticks_per_quarter
    for i, track in enumerate(score.tracks):
        arr = track.notes.numpy()
        if len(arr["time"]):
            ax.barh(
                arr["pitch"],
                arr["duration"] / q,
                left=arr["time"] / q,
                height=0.8,
                color=cmap(i % 20),
                label=f"prog {track.program}",
            )
    ax.set_xlabel("beats")
    ax.set_ylabel("pitch")
    ax.set_title(title)
    if score.tracks:
        ax.legend(loc="upper right", fontsize=6)
    fig.tight_layout()
    return fig


def log_sample(
    model: SymbolicPlanner, ds, codec: TokenCodec, writer, step: int, run_dir: Path, n_tokens: int, seed: int
) -> None:
    """Sample under the first validation window's conditions; write MIDI and a piano roll."""
    item = ds[0]
    dev = next(model.parameters()).device
    cond = {k: torch.as_tensor(np.asarray(v))[None].to(dev) for k, v in item.items() if k not in ("x", "y")}
    gen = torch.Generator().manual_seed(seed + step)
    ids = generate(
        model,
        lambda bar0: cond,
        torch.tensor([[BOS]], device=dev),
        n_tokens,
        SamplingConfig(top_p=0.95),
        gen,
        Grammar(codec),
    )
    score = codec.tok.decode([int(t) for t in ids[0, 1:] if t > 3])
    out = run_dir / "samples" / f"step_{step:07d}.mid"
    with atomic_path(out) as tmp:
        score.dump_midi(str(tmp))
    writer.add_figure("sample/piano_roll", piano_roll_figure(score, f"step {step}"), step)
