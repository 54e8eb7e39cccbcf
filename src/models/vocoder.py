"""The mel's inverse: log-mel -> linear magnitude (the filterbank's pseudo-inverse) -> Griffin-Lim audio.

The mel (:mod:`src.data.mel`) is built from the STFT *magnitude*, so inverting it gives a magnitude
spectrogram, which is what Griffin-Lim expects (feeding it power squares every partial's loudness).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from src.data.mel import MelConfig, mel_filters, stft


def mel_to_magnitude(logmel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """log-mel [..., n_mels, T] -> linear STFT magnitude [..., n_fft//2+1, T] (pseudo-inverse, clipped at 0)."""
    _, inv = mel_filters(cfg)
    mel = torch.exp(logmel.float()) * (logmel > cfg.silence + 1e-3)  # the floor stands for silence
    return torch.matmul(inv.to(logmel.device), mel).clamp_min(0.0)


def griffin_lim(
    magnitude: torch.Tensor,
    cfg: MelConfig,
    n_iter: int = 32,
    momentum: float = 0.99,
    length: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): magnitude [..., F, T] -> audio [..., S].

    Phases start random from ``generator`` (zero phase without one); each iteration projects onto
    consistent spectrograms and extrapolates with ``momentum`` (0 = the original algorithm).
    """
    window = torch.hann_window(cfg.n_fft, device=magnitude.device)
    if generator is not None:
        phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * 2 * math.pi
        angles = torch.polar(torch.ones_like(magnitude), phase)
    else:
        angles = torch.ones_like(magnitude, dtype=torch.complex64)
    prev = torch.zeros_like(angles)
    for _ in range(n_iter):
        audio = torch.istft(magnitude * angles, cfg.n_fft, cfg.hop_length, window=window, length=length)
        rebuilt = stft(audio, cfg)
        angles = rebuilt - prev * (momentum / (1 + momentum))
        angles = angles / angles.abs().clamp_min(1e-16)
        prev = rebuilt
    return torch.istft(magnitude * angles, cfg.n_fft, cfg.hop_length, window=window, length=length)


def mel_to_audio(
    logmel: torch.Tensor,
    cfg: MelConfig,
    n_iter: int = 32,
    momentum: float = 0.99,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """log-mel [n_mels, T] -> mono float32 audio of (T - 1) * hop samples, peak 0.9."""
    frames = logmel.shape[-1]
    audio = griffin_lim(mel_to_magnitude(logmel, cfg), cfg, n_iter, momentum, (frames - 1) * cfg.hop_length, generator)
    audio = audio.cpu().numpy().astype(np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio / peak * 0.9 if peak > 0 else audio
