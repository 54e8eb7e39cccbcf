"""Writing a song's artefacts atomically: MIDI, WAV, JSON and a picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from src.music.form import Section
from src.music.instruments import instrument_name, track_program
from src.utils.io import atomic_path, write_text


def write_midi(score: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        score.dump_midi(str(tmp))


def write_wav(audio: np.ndarray, sample_rate: int, path: Path) -> None:
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, format="WAV", subtype="PCM_16")


def write_json(obj: dict[str, Any], path: Path) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_picture(
    score: Any, audio: np.ndarray, sample_rate: int, sections: list[Section], path: Path, title: str
) -> None:
    """Piano roll coloured by instrument with section boundaries, above the audio's mel spectrogram."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qpm = score.tempos[0].qpm
    sec_per_tick = 60.0 / qpm / score.ticks_per_quarter
    num, den = score.time_signatures[0].numerator, score.time_signatures[0].denominator
    bar_s = score.ticks_per_quarter * 4 * num / den * sec_per_tick
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(14, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    cmap = plt.get_cmap("tab10")
    for i, t in enumerate(score.tracks):
        arr = t.notes.numpy()
        if len(arr["time"]):
            ax.barh(
                arr["pitch"],
                arr["duration"] * sec_per_tick,
                left=arr["time"] * sec_per_tick,
                height=0.9,
                color=cmap(i % 10),
                label=instrument_name(track_program(t)),
            )
    for s in sections:
        ax.axvline(s.start_bar * bar_s, color="k", lw=0.8, ls="--")
        ax.text(s.start_bar * bar_s, ax.get_ylim()[1], f" {s.name}", va="top", fontsize=8)
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_mels=96), ref=np.max)
    ax2.imshow(mel, origin="lower", aspect="auto", extent=(0, len(audio) / sample_rate, 0, mel.shape[0]), cmap="magma")
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("mel bin")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
