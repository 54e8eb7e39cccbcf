"""Log-mel analysis: the spectrogram the renderer learns and stage 1 computes for its pairs.

The mel is built from the STFT *magnitude* (power 1), so inverting it (:mod:`src.models.vocoder`)
gives a magnitude spectrogram, which is what Griffin-Lim expects. Its parameters travel in the
renderer checkpoint (:class:`MelConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64
    fmin: float = 30.0
    fmax: float = 8000.0
    log_floor: float = 1e-5  # log-mel = log(max(mel, floor))

    def __post_init__(self) -> None:
        if self.fmax > self.sample_rate / 2 or not 0 <= self.fmin < self.fmax:
            raise ValueError(f"mel range [{self.fmin}, {self.fmax}] must lie in [0, sample_rate/2]")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length {self.hop_length} is longer than n_fft {self.n_fft}")

    def frames_to_seconds(self, frames: int) -> float:
        return frames * self.hop_length / self.sample_rate

    def seconds_to_frames(self, seconds: float) -> int:
        """Index of the frame whose centre is nearest to ``seconds``."""
        return int(round(seconds * self.sample_rate / self.hop_length))

    @property
    def silence(self) -> float:
        return math.log(self.log_floor)


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (as librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3)


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Triangular, area-normalised ("Slaney") mel filters [n_mels, n_fft//2+1]; equal to librosa.filters.mel."""
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, 1 + cfg.n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    ramps = edges[:, None] - fft_freqs[None]
    widths = np.diff(edges)
    lower, upper = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


@lru_cache(maxsize=8)
def mel_filters(cfg: MelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The filterbank [n_mels, F] and its pseudo-inverse [F, n_mels] (cached)."""
    fb = torch.from_numpy(mel_filterbank(cfg))
    return fb, torch.linalg.pinv(fb)


def stft(audio: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    window = torch.hann_window(cfg.n_fft, device=audio.device)
    return torch.stft(audio, cfg.n_fft, cfg.hop_length, window=window, center=True, return_complex=True)


def log_mel(audio: torch.Tensor | np.ndarray, cfg: MelConfig) -> torch.Tensor:
    """audio [..., S] -> log-mel [..., n_mels, 1 + S // hop]; frame k is centred on sample k * hop."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    fb, _ = mel_filters(cfg)
    mag = stft(audio, cfg).abs()  # [..., F, T]
    mel = torch.matmul(fb.to(audio.device), mag)
    return torch.log(mel.clamp_min(cfg.log_floor))
