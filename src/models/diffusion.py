"""Gaussian diffusion: noise schedules, the training target, and the DDIM sampler.

The sampler is a pure function of (denoiser, shape, schedule, steps, eta, generator): the model
is only ever called through ``denoiser(x_t, t)``. Notation follows Song et al. 2021, "Denoising
Diffusion Implicit Models" (DDIM): alpha_t there is the cumulative product written here as
``alphas_cumprod[t]`` (Ho et al.'s alpha-bar).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DiffusionConfig:
    num_train_steps: int = 1000
    schedule: str = "cosine"  # cosine (Nichol & Dhariwal 2021) | linear (Ho et al. 2020)
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02
    prediction: str = "v"  # v (Salimans & Ho 2022) | eps

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(f"diffusion.schedule must be cosine or linear, got {self.schedule!r}")
        if self.prediction not in ("v", "eps"):
            raise ValueError(f"diffusion.prediction must be v or eps, got {self.prediction!r}")


def alphas_cumprod(cfg: DiffusionConfig) -> torch.Tensor:
    """alpha-bar_t for t = 0 .. T-1 (float64)."""
    T = cfg.num_train_steps
    if cfg.schedule == "linear":
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
    else:  # alpha-bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), betas clipped at 0.999
        s = 0.008
        f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def _expand(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.to(like.device, like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4)."""
    a = _expand(abar[t.cpu()], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def training_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, abar: torch.Tensor, prediction: str):
    """What the network regresses: eps, or v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    if prediction == "eps":
        return noise
    a = _expand(abar[t.cpu()], x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def split_prediction(out: torch.Tensor, x_t: torch.Tensor, a_t: float, prediction: str):
    """Network output -> (predicted x0, predicted eps) at a step with cumulative alpha ``a_t``."""
    if prediction == "eps":
        eps = out
        x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    else:
        x0 = math.sqrt(a_t) * x_t - math.sqrt(1 - a_t) * out
        eps = math.sqrt(1 - a_t) * x_t + math.sqrt(a_t) * out
    return x0, eps


def ddim_timesteps(num_train_steps: int, steps: int) -> list[int]:
    """``steps`` training timesteps, evenly spaced from T-1 down to 0."""
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"DDIM steps must be in [1, {num_train_steps}], got {steps}")
    return torch.linspace(num_train_steps - 1, 0, steps).round().long().tolist()


@torch.no_grad()
def ddim_sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    abar: torch.Tensor,
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    prediction: str = "v",
    device: torch.device | str = "cpu",
    clip_x0: float | None = None,
) -> torch.Tensor:
    """Sample x_0 of ``shape`` with DDIM (Song et al. 2021); eta = 0 is deterministic given the start noise.

    All noise is drawn from ``generator`` on the CPU, so a seed gives the same result on any device.
    """

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

    ts = ddim_timesteps(len(abar), steps)
    x = randn()  # x_T ~ N(0, I)
    for i, t in enumerate(ts):
        a_t = float(abar[t])
        a_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0  # alpha_0 := 1 after the last step
        out = denoiser(x, torch.full((shape[0],), t, device=device, dtype=torch.long)).float()
        # 1. "predicted x_0" and the noise estimate eps_theta(x_t) (eq. 12, first term; eq. 9)
        x0, eps = split_prediction(out, x, a_t, prediction)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        # 2. sigma_t(eta) (eq. 16): eta = 1 is DDPM's posterior variance, eta = 0 the implicit model
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        # 3. "direction pointing to x_t" (eq. 12, second term)
        direction = math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        # 4. x_{t-1} = sqrt(alpha_{t-1}) x0 + direction + sigma_t z (eq. 12)
        x = math.sqrt(a_prev) * x0 + direction
        if sigma > 0:
            x = x + sigma * randn()
    return x
