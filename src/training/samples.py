"""Periodic training samples: a short continuation written as MIDI and as a piano-roll image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from src.data.mel import MelConfig
from src.models.audio_renderer import sample_mels
from src.models.sampling import Grammar, SamplingConfig, generate
from src.models.symbolic_planner import SymbolicPlanner
from src.models.vocoder import mel_to_audio
from src.music.conditions import shift_plan
from src.music.tokenizer import BOS, TokenCodec
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
        lambda bar0: shift_plan(cond, bar0, model.cfg),
        torch.tensor([[BOS]], device=dev),
        n_tokens,
        SamplingConfig(top_p=0.95),
        gen,
        Grammar(codec),
    )
    score = codec.decode(ids[0, 1:].tolist())
    out = run_dir / "samples" / f"step_{step:07d}.mid"
    with atomic_path(out) as tmp:
        score.dump_midi(str(tmp))
    writer.add_figure("sample/piano_roll", piano_roll_figure(score, f"step {step}"), step)


def mel_figure(mels: list[np.ndarray], titles: list[str]):
    """Log-mel spectrograms [n_mels, F] one above the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.2 * len(mels)), squeeze=False)
    lo, hi = min(float(m.min()) for m in mels), max(float(m.max()) for m in mels)
    for ax, m, title in zip(axes[:, 0], mels, titles):
        ax.imshow(m, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    return fig


@torch.no_grad()
def log_render_sample(model, item: dict, extras: dict, writer, step: int, steps: int, seed: int) -> None:
    """Render one validation segment; log its audio and mel beside the FluidSynth reference's."""
    mel_cfg = MelConfig(**extras["mel"])
    mean, std = extras["mel_mean"], extras["mel_std"]
    gen = torch.Generator().manual_seed(seed)
    x = sample_mels(model, item["tokens"][None], item["tokens_mask"][None], item["roll"][None], steps, generator=gen)
    pred = x[0, 0].float().cpu() * std + mean
    ref = item["mel"][0] * std + mean
    for name, mel in (("neural", pred), ("reference", ref)):
        audio = mel_to_audio(mel, mel_cfg, generator=torch.Generator().manual_seed(seed))
        writer.add_audio(f"render/{name}", torch.from_numpy(audio)[None], step, sample_rate=mel_cfg.sample_rate)
    fig = mel_figure([ref.numpy(), pred.numpy()], ["FluidSynth reference", f"renderer, step {step}"])
    writer.add_figure("render/mel", fig, step)
