"""Audio metrics for the renderer: log-mel distance and chroma agreement with the piano roll.

Chroma is computed from the STFT on the mel's frame grid (same hop, centred frames), folding
every bin between ``fmin`` and ``fmax`` onto its nearest pitch class, weighted by energy. The
roll's chroma folds the sounding notes onto pitch classes. Their per-frame cosine answers "are
the right notes playing at the right time?"; harmonics keep even a perfect render below 1,
so it is read against the FluidSynth reference's own score.
"""

from __future__ import annotations

import numpy as np
import torch

from src.data.mel import MelConfig


def log_mel_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Mean absolute difference of two log-mel spectrograms [n_mels, T] (nats), over their common frames."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = min(a.shape[-1], b.shape[-1])
    return float(np.abs(a[..., :n] - b[..., :n]).mean())


def audio_chroma(audio: np.ndarray, cfg: MelConfig, fmin: float = 55.0, fmax: float = 4200.0) -> np.ndarray:
    """audio [S] -> chroma [12, 1 + S // hop] (L2-normalised per frame; silent frames stay 0)."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    window = torch.hann_window(cfg.n_fft)
    power = torch.stft(x, cfg.n_fft, cfg.hop_length, window=window, center=True, return_complex=True).abs() ** 2
    freqs = np.linspace(0, cfg.sample_rate / 2, 1 + cfg.n_fft // 2)
    keep = (freqs >= fmin) & (freqs <= fmax)
    pc = np.round(12 * np.log2(freqs[keep] / 440.0) + 69).astype(int) % 12
    fold = np.zeros((12, keep.sum()), dtype=np.float32)
    fold[pc, np.arange(keep.sum())] = 1
    chroma = fold @ power.numpy()[keep]
    return _normalise(chroma)


def roll_chroma(roll: np.ndarray) -> np.ndarray:
    """piano roll [128, T] (sounding) -> chroma [12, T] (L2-normalised per frame)."""
    chroma = np.zeros((12, roll.shape[-1]), dtype=np.float32)
    for pitch in range(128):
        chroma[pitch % 12] += roll[pitch] > 0
    return _normalise(chroma)


def _normalise(c: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(c, axis=0, keepdims=True)
    return np.where(norm > 0, c / np.maximum(norm, 1e-12), 0.0)


def chroma_agreement(audio: np.ndarray, roll: np.ndarray, cfg: MelConfig) -> float:
    """Mean per-frame cosine between the audio's chroma and the roll's, over frames where notes sound."""
    a, r = audio_chroma(audio, cfg), roll_chroma(roll)
    n = min(a.shape[1], r.shape[1])
    active = r[:, :n].any(0)
    if not active.any():
        return float("nan")
    return float((a[:, :n] * r[:, :n]).sum(0)[active].mean())
