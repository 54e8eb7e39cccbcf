"""Mel-spectrogram diffusion renderer: a U-Net denoiser over (mel bins x frames).

Conditioning, for one segment of audio:
- its REMI+ tokens, read by a bidirectional Transformer encoder with learned positions (it knows
  their order: shuffled tokens are a different piece), which every attention level of the U-Net
  cross-attends to (instruments, dynamics, what plays);
- its frame-aligned piano roll [2, 128, F] (sounding and onset velocities), projected per frame
  from 128 pitches onto the mel axis and fed as extra input channels (exact timing);
- the diffusion timestep, through a sinusoidal embedding added in every residual block.
A learned null memory and an empty roll stand for "no condition" (classifier-free guidance).
The noise schedule and the sampler live in :mod:`src.models.diffusion`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.models.diffusion import DiffusionConfig, alphas_cumprod, ddim_sample


@dataclass
class RendererConfig:
    vocab_size: int = 0  # 0 = from the tokenizer
    max_tokens: int = 0  # 0 = from the audio pairs (as are n_mels and frames)
    n_mels: int = 0
    frames: int = 0
    d_token: int = 128
    token_layers: int = 2
    token_heads: int = 4
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # one U-Net level each
    res_blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attn_levels: list[int] = field(default_factory=lambda: [1, 2])  # levels (0 = full size) with cross-attention
    heads: int = 4
    roll_channels: int = 4
    dropout: float = 0.0
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.diffusion, dict):
            self.diffusion = DiffusionConfig(**self.diffusion)
        down = 2 ** (len(self.channels) - 1)
        if (self.n_mels and self.n_mels % down) or (self.frames and self.frames % down):
            raise ValueError(f"n_mels ({self.n_mels}) and frames ({self.frames}) must be multiples of {down}")
        if any(not 0 <= lv < len(self.channels) for lv in self.attn_levels):
            raise ValueError(f"attn_levels {self.attn_levels} must index channels {self.channels}")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(next(g for g in (32, 16, 8, 4, 2, 1) if ch % g == 0), ch)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, 2 * c_out)  # scale and shift after the second norm
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.temb(temb)[:, :, None, None].chunk(2, 1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class AttnBlock(nn.Module):
    """Self-attention over positions (optional), then cross-attention to the token memory."""

    def __init__(self, ch: int, d_mem: int, heads: int, self_attn: bool):
        super().__init__()
        self.norm_s = _norm(ch) if self_attn else None
        self.self_attn = nn.MultiheadAttention(ch, heads, batch_first=True) if self_attn else None
        self.norm_x = _norm(ch)
        self.cross = nn.MultiheadAttention(ch, heads, kdim=d_mem, vdim=d_mem, batch_first=True)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mem_pad: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if self.self_attn is not None:
            h = self.norm_s(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
            x = x + self.self_attn(h, h, h, need_weights=False)[0].transpose(1, 2).reshape(B, C, H, W)
        h = self.norm_x(x).flatten(2).transpose(1, 2)
        out = self.cross(h, mem, mem, key_padding_mask=mem_pad, need_weights=False)[0]
        return x + out.transpose(1, 2).reshape(B, C, H, W)


class TokenEncoder(nn.Module):
    """Token ids [B, L] -> memory [B, L, d] with learned positions (order matters)."""

    def __init__(self, cfg: RendererConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_token)
        self.pos = nn.Embedding(cfg.max_tokens, cfg.d_token)
        layer = nn.TransformerEncoderLayer(
            cfg.d_token,
            cfg.token_heads,
            4 * cfg.d_token,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.enc = nn.TransformerEncoder(layer, cfg.token_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_token)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.tok(tokens) + self.pos(pos)[None]
        return self.norm(self.enc(h, src_key_padding_mask=~mask))


class AudioRenderer(nn.Module):
    def __init__(self, cfg: RendererConfig):
        super().__init__()
        if min(cfg.vocab_size, cfg.max_tokens, cfg.n_mels, cfg.frames) <= 0:
            raise ValueError("RendererConfig: resolve vocab_size, max_tokens, n_mels and frames from the data first")
        self.cfg = cfg
        ch = cfg.channels
        t_dim = 4 * ch[0]
        self.t_mlp = nn.Sequential(nn.Linear(ch[0], t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.tokens = TokenEncoder(cfg)
        self.null_memory = nn.Parameter(torch.randn(1, 1, cfg.d_token) * 0.02)
        self.roll_proj = nn.Linear(2 * 128, cfg.roll_channels * cfg.n_mels)
        self.conv_in = nn.Conv2d(1 + cfg.roll_channels, ch[0], 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [ch[0]], ch[0]
        for lv, c_out in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks):
                blocks.append(self._level_block(c, c_out, lv, t_dim))
                c = c_out
                skips.append(c)
            self.down.append(blocks)
            if lv < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, t_dim, cfg.dropout)
        self.mid_attn = AttnBlock(c, cfg.d_token, cfg.heads, self_attn=True)
        self.mid2 = ResBlock(c, c, t_dim, cfg.dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for lv in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks + 1):
                blocks.append(self._level_block(c + skips.pop(), ch[lv], lv, t_dim))
                c = ch[lv]
            self.up.append(blocks)
            if lv > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _level_block(self, c_in: int, c_out: int, level: int, t_dim: int) -> nn.ModuleDict:
        block = nn.ModuleDict({"res": ResBlock(c_in, c_out, t_dim, self.cfg.dropout)})
        if level in self.cfg.attn_levels:
            block["attn"] = AttnBlock(c_out, self.cfg.d_token, self.cfg.heads, self_attn=False)
        return block

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def condition(
        self, tokens: torch.Tensor, tokens_mask: torch.Tensor, roll: torch.Tensor, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the condition once per segment: (memory [B, L, d], padding mask [B, L], roll features
        [B, roll_channels, n_mels, F]). ``drop`` [B] bool replaces a row's condition by the null one."""
        B, _, _, T = roll.shape
        mem = self.tokens(tokens, tokens_mask)
        pad = ~tokens_mask
        if drop is not None:  # always in the graph while training: DDP expects a gradient for null_memory
            d = drop[:, None, None]
            mem = torch.where(d, self.null_memory.expand_as(mem), mem)
            pad = torch.where(drop[:, None], torch.arange(pad.shape[1], device=pad.device)[None] > 0, pad)
            roll = roll * (~drop)[:, None, None, None]
        r = self.roll_proj(roll.permute(0, 3, 1, 2).reshape(B, T, 2 * 128))  # [B, F, C_r * n_mels]
        r = r.reshape(B, T, self.cfg.roll_channels, self.cfg.n_mels).permute(0, 2, 3, 1)
        return mem, pad, r

    def denoise(
        self, x: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """x_t [B, 1, n_mels, F], timesteps [B], an encoded condition -> the prediction, same shape as x."""
        mem, pad, roll = cond
        temb = self.t_mlp(timestep_embedding(t, self.cfg.channels[0]))
        h = self.conv_in(torch.cat([x, roll.to(x.dtype)], 1))
        hs = [h]
        for lv, blocks in enumerate(self.down):
            for block in blocks:
                h = self._run(block, h, temb, mem, pad)
                hs.append(h)
            if lv < len(self.downsample):
                h = self.downsample[lv](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb), mem, pad), temb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = self._run(block, torch.cat([h, hs.pop()], 1), temb, mem, pad)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def _run(block: nn.ModuleDict, h: torch.Tensor, temb: torch.Tensor, mem: torch.Tensor, pad: torch.Tensor):
        h = block["res"](h, temb)
        return block["attn"](h, mem, pad) if "attn" in block else h

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        tokens: torch.Tensor,
        tokens_mask: torch.Tensor,
        roll: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.denoise(x, t, self.condition(tokens, tokens_mask, roll, drop))


def sample_mels(
    model: AudioRenderer,
    tokens: torch.Tensor,
    tokens_mask: torch.Tensor,
    roll: torch.Tensor,
    steps: int,
    eta: float = 0.0,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised log-mels [B, 1, n_mels, F] for conditions tokens [B, L], mask [B, L], roll [B, 2, 128, F]."""
    cfg = model.cfg
    dev = next(model.parameters()).device
    B = tokens.shape[0]
    cond = model.condition(tokens.to(dev), tokens_mask.to(dev), roll.to(dev))
    if guidance != 1.0:
        null = model.condition(
            tokens.to(dev), tokens_mask.to(dev), roll.to(dev), torch.ones(B, dtype=torch.bool, device=dev)
        )
        both = tuple(torch.cat([a, b]) for a, b in zip(cond, null))

        def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            c, u = model.denoise(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
            return u + guidance * (c - u)
    else:

        def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model.denoise(x, t, cond)

    return ddim_sample(
        denoiser,
        (B, 1, cfg.n_mels, cfg.frames),
        alphas_cumprod(cfg.diffusion),
        steps,
        eta,
        generator,
        cfg.diffusion.prediction,
        dev,
    )
