"""Log-mel analysis and its inverse: mel -> linear magnitude -> Griffin-Lim audio.

The mel is built from the STFT *magnitude* (power 1), so inverting it gives a magnitude
spectrogram, which is what Griffin-Lim expects (feeding it power squares every partial's
loudness). Its parameters travel in the renderer checkpoint (:class:`MelConfig`).
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
def _filters(cfg: MelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    fb = torch.from_numpy(mel_filterbank(cfg))
    return fb, torch.linalg.pinv(fb)


def _stft(audio: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    window = torch.hann_window(cfg.n_fft, device=audio.device)
    return torch.stft(audio, cfg.n_fft, cfg.hop_length, window=window, center=True, return_complex=True)


def log_mel(audio: torch.Tensor | np.ndarray, cfg: MelConfig) -> torch.Tensor:
    """audio [..., S] -> log-mel [..., n_mels, 1 + S // hop]; frame k is centred on sample k * hop."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    fb, _ = _filters(cfg)
    mag = _stft(audio, cfg).abs()  # [..., F, T]
    mel = torch.matmul(fb.to(audio.device), mag)
    return torch.log(mel.clamp_min(cfg.log_floor))


def mel_to_magnitude(logmel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """log-mel [..., n_mels, T] -> linear STFT magnitude [..., n_fft//2+1, T] (pseudo-inverse, clipped at 0)."""
    _, inv = _filters(cfg)
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
        rebuilt = _stft(audio, cfg)
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
