"""Stage 3: train the mel diffusion renderer on stage 1's aligned audio pairs (DDPM, EMA)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from src.data.audio_pairs import load_pairs_index
from src.models.audio_renderer import AudioRenderer, RendererConfig
from src.models.builders import load_codec, resolve_renderer_config
from src.models.diffusion import alphas_cumprod, q_sample, training_target
from src.music.tokenizer import tokenizer_hash
from src.training.datasets import AudioPairDataset
from src.training.distributed import DistInfo, setup_distributed
from src.training.loop import LoopConfig, fit
from src.utils.config import save_config

log = logging.getLogger("train_renderer")


@dataclass
class RendererTrainConfig(LoopConfig):
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # share of segments trained without their condition (for guidance)
    val_segments: int = 256  # validation segments scored each evaluation (0 = all)
    sample_every: int = 0  # 0 = never; else render a validation segment to TensorBoard at those evaluations
    sample_steps: int = 25


@dataclass
class RendererTrainingConfig:
    preset: str = "tiny"  # its name fills every {preset} of the config file
    data_dir: str = "data/processed/tiny"
    out_dir: str = "checkpoints/renderer/tiny"
    run_dir: str = "runs/renderer"
    run_name: str = "tiny"
    model: RendererConfig = field(default_factory=RendererConfig)
    train: RendererTrainConfig = field(default_factory=RendererTrainConfig)


def diffusion_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    abar: torch.Tensor,
    prediction: str,
    draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cond_dropout: float = 0.0,
) -> torch.Tensor:
    """DDPM loss (Ho et al. 2020, eq. 14, with the v or eps target) for ``draws`` = (t [B] ~ U{0..T-1},
    eps ~ N(0, I) like the mels, u [B] ~ U[0, 1): a row's condition is dropped where u < cond_dropout)."""
    x0 = batch["mel"]
    t, noise, u = draws
    noise, drop = noise.to(x0.device), (u < cond_dropout).to(x0.device)
    x_t = q_sample(x0, t, noise, abar)
    out = model(x_t, t.to(x0.device), batch["tokens"], batch["tokens_mask"], batch["roll"], drop)
    return F.mse_loss(out.float(), training_target(x0, noise, t, abar, prediction))


def training_draws(rand, mel_shape: torch.Size, n_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each example's (t, eps, u) for :func:`diffusion_loss`, from its own generator (a ``SampleRandom``)."""
    return rand.randint(n_steps), rand.randn(*mel_shape), rand.rand()


class RendererTask:
    kind = "audio_renderer"

    def __init__(self, cfg: RendererTrainingConfig, mcfg: RendererConfig, extras: dict[str, Any], val_ds):
        self.cfg, self.mcfg, self.val_ds = cfg, mcfg, val_ds
        self.model_config = dataclasses.asdict(mcfg)
        self.abar = alphas_cumprod(mcfg.diffusion)
        self._extras = extras

    def loss(self, model, batch, rand):
        draws = training_draws(rand, batch["mel"].shape[1:], len(self.abar))
        loss = diffusion_loss(
            model, batch, self.abar, self.mcfg.diffusion.prediction, draws, self.cfg.train.cond_dropout
        )
        return loss, batch["mel"].shape[0]

    @torch.no_grad()
    def validate(self, model) -> float:
        """The same loss on validation segments with fixed timesteps and noise (seed 0): comparable across runs."""
        model.eval()
        dev = next(model.parameters()).device
        gen = torch.Generator().manual_seed(0)
        total, n = 0.0, 0
        for batch in DataLoader(self.val_ds, batch_size=16):
            batch = {k: v.to(dev) for k, v in batch.items()}
            B = len(batch["mel"])
            t = torch.randint(0, len(self.abar), (B,), generator=gen)
            draws = (t, torch.randn(batch["mel"].shape, generator=gen), torch.rand(B, generator=gen))
            total += float(diffusion_loss(model, batch, self.abar, self.mcfg.diffusion.prediction, draws)) * B
            n += B
        return total / n if n else float("nan")

    def extras(self) -> dict[str, Any]:
        return self._extras

    def on_eval(self, model, writer, step: int) -> None:
        tc = self.cfg.train
        if writer is None or not tc.sample_every or step % tc.sample_every or not len(self.val_ds):
            return
        from src.training.samples import log_render_sample

        log_render_sample(model, self.val_ds[0], self._extras, writer, step, tc.sample_steps, tc.seed)


def train(cfg: RendererTrainingConfig, info: DistInfo | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume from ``out_dir/last.pt``); return final metrics and the (EMA) model."""
    info = info or setup_distributed(cfg.train.device)
    tc, data_dir, out_dir = cfg.train, Path(cfg.data_dir), Path(cfg.out_dir)
    index = load_pairs_index(data_dir)
    torch.manual_seed(tc.seed + info.rank)
    codec = load_codec(data_dir)
    tok_hash = tokenizer_hash(data_dir / "tokenizer.json")
    mcfg = resolve_renderer_config(cfg.model, codec, index)
    model = AudioRenderer(mcfg)
    train_ds = AudioPairDataset(data_dir, "train")
    val_ds = AudioPairDataset(data_dir, "validation", limit=tc.val_segments)
    if info.is_main:
        log.info(
            "renderer: %.2fM parameters; %d train / %d validation segments; device %s; world size %d",
            model.num_params() / 1e6,
            len(train_ds),
            len(val_ds),
            info.device,
            info.world_size,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "renderer_config.yaml")
    extras = {
        "tokenizer_hash": tok_hash,
        "tokenizer_json": (data_dir / "tokenizer.json").read_text(encoding="utf-8"),
        "mel": index["mel"],
        "mel_mean": index["mel_mean"],
        "mel_std": index["mel_std"],
        "data_dir": str(data_dir),
    }
    task = RendererTask(cfg, mcfg, extras, val_ds)
    result = fit(model, task, train_ds, cfg, info, stop_after, tok_hash)
    return {**result, "params": model.num_params()}
