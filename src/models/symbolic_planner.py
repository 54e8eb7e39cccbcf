"""Hierarchical symbolic planner: a structure encoder over the conditions and a per-bar plan,
and a causal detail decoder over REMI+ tokens that cross-attends to the encoder's memory.

Encoder input (bidirectional; it never sees a token, so the decoder cannot see the future
through it):  [prompt memory x M | style | emotion | tempo bin | key | time sig | instruments |
               plan bar 0 .. plan bar P-1]   (P = max_bars, padded bars masked)
Decoder input: token + position + "bar number" embeddings; the bar number of position t counts
the bar-starting tokens up to t (causal), and shares its table with the plan's bars so the
decoder can find its bar in the plan.
Output: the tied head's logits; with ``cond_bias``, plus a bias over the vocabulary from the encoder's
fixed slots (prompt .. instruments) averaged and projected (zero-initialised): a direct path from the
song-level conditions to every token's distribution (a key's scale, an emotion's mode, the named
instruments), which cross-attention alone left unused at the tiny size (key and emotion changed the
loss by < 0.001 nats: docs/benchmarks.md). Added to the decoder's input instead, it swamped the tied
token embeddings (std 0.02) and stalled training.
With ``key_profile``, plus a learned key profile: 2 x 12 weights (mode x pitch class above the tonic,
zero-initialised), rolled to the key's tonic and summed over the pitch classes each token holds, so
every key's pieces train the same 24 numbers (a transposition-equivariant path from the key to the
pitches; the null key adds nothing). cond_bias has to learn each of the 24 keys' scale on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.music.conditions import NULL_KEY
from src.music.vocab import DRUMS, EMOTIONS, STYLES, TIME_SIGNATURES


@dataclass
class PlannerConfig:
    vocab_size: int = 512
    d_model: int = 192
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    block_size: int = 256  # decoder context (tokens)
    max_bars: int = 64  # plan length the encoder sees (bars from the window's first bar)
    text_dim: int = 384  # sentence-embedding size (all-MiniLM-L6-v2)
    n_text_memory: int = 4  # prompt -> this many memory vectors
    n_tempo_bins: int = 32
    n_section_labels: int = 8
    max_section_index: int = 64
    n_programs: int = DRUMS + 1  # GM 0..127 + drums
    cond_bias: bool = False  # a logit bias from the pooled fixed conditions (False: checkpoints before it)
    bar_token_ids: list[int] = field(default_factory=list)  # BPE ids that start a bar
    key_profile: bool = False  # a learned key-relative pitch-class bias (False: checkpoints before it)
    key_profile_gain: float = 1.0  # the profile is gain x its weights: its learning rate, x gain under Adam
    token_pitch_classes: list[list[int]] = field(default_factory=list)  # per BPE id, its notes' pitch classes

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")


class Attention(nn.Module):
    """Multi-head attention (self or cross) with an optional KV cache for self-attention."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, D/H)
        B, T, D = x.shape
        return x.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)

    def forward(self, x, kv_src=None, mask=None, causal=False, cache=None) -> torch.Tensor:
        q = self.split(self.q(x))
        if cache is not None and "k" in cache and kv_src is not None:  # cross-attn: memory fixed
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.kv(x if kv_src is None else kv_src).chunk(2, dim=-1)
            k, v = self.split(k), self.split(v)
            if cache is not None:
                if kv_src is None and "k" in cache:  # self-attn: append the new positions
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                cache["k"], cache["v"] = k, v
        if causal and q.shape[2] > 1:
            Tq, Tk = q.shape[2], k.shape[2]
            mask = torch.ones(Tq, Tk, dtype=torch.bool, device=x.device).tril(Tk - Tq)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class Block(nn.Module):
    """Pre-norm Transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, cfg: PlannerConfig, cross: bool):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.attn = nn.LayerNorm(d), Attention(d, cfg.n_heads, cfg.dropout)
        self.cross = Attention(d, cfg.n_heads, cfg.dropout) if cross else None
        self.ln2 = nn.LayerNorm(d) if cross else None
        self.ln3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, memory=None, mem_mask=None, self_mask=None, causal=False, cache=None):
        x = x + self.drop(
            self.attn(
                self.ln1(x),
                mask=self_mask,
                causal=causal,
                cache=None if cache is None else cache.setdefault("self", {}),
            )
        )
        if self.cross is not None:
            x = x + self.drop(
                self.cross(
                    self.ln2(x),
                    kv_src=memory,
                    mask=mem_mask,
                    cache=None if cache is None else cache.setdefault("cross", {}),
                )
            )
        return x + self.drop(self.mlp(self.ln3(x)))


class SymbolicPlanner(nn.Module):
    def __init__(self, cfg: PlannerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        # condition embeddings; the last index of each table is "unknown / dropped"
        self.text_proj = nn.Linear(cfg.text_dim, cfg.n_text_memory * d)
        self.text_null = nn.Parameter(torch.zeros(cfg.n_text_memory, d))
        self.style = nn.Embedding(len(STYLES) + 1, d)
        self.emotion = nn.Embedding(len(EMOTIONS) + 1, d)
        self.tempo = nn.Embedding(cfg.n_tempo_bins + 1, d)
        self.key = nn.Embedding(NULL_KEY + 1, d)
        self.timesig = nn.Embedding(len(TIME_SIGNATURES) + 1, d)
        self.programs = nn.Linear(cfg.n_programs, d)
        self.programs_null = nn.Parameter(torch.zeros(d))
        self.section = nn.Embedding(cfg.n_section_labels + 1, d)
        self.section_index = nn.Embedding(cfg.max_section_index, d)
        self.bar_pos = nn.Embedding(cfg.max_bars, d)  # shared by plan bars and decoder bar numbers
        self.n_fixed = cfg.n_text_memory + 6
        self.cond_type = nn.Embedding(self.n_fixed + 1, d)  # which slot (last: plan bars)
        self.encoder = nn.ModuleList(Block(cfg, cross=False) for _ in range(cfg.n_enc_layers))
        self.ln_enc = nn.LayerNorm(d)
        # decoder
        self.tok = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Embedding(cfg.block_size, d)
        self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.n_dec_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        self.cond_bias = nn.Linear(d, cfg.vocab_size, bias=False) if cfg.cond_bias else None
        starts = torch.zeros(cfg.vocab_size, dtype=torch.long)
        starts[cfg.bar_token_ids] = 1
        self.register_buffer("starts_bar", starts, persistent=False)
        self.apply(self._init)
        if self.cond_bias is not None:  # starts as the model without it
            nn.init.zeros_(self.cond_bias.weight)
        if cfg.key_profile:
            if len(cfg.token_pitch_classes) != cfg.vocab_size:
                raise ValueError("key_profile needs token_pitch_classes for every token (builders fill it)")
            counts = torch.zeros(cfg.vocab_size, 12)
            for i, pcs in enumerate(cfg.token_pitch_classes):
                for pc in pcs:
                    counts[i, pc] += 1
            self.register_buffer("pc_counts", counts, persistent=False)  # (V, 12)
            self.key_profile = nn.Parameter(torch.zeros(2 * 12))  # (mode * 12 + interval above the tonic)
        else:
            self.key_profile = None

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ encoder
    def encode(self, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditions -> (memory (B, S, D), key padding mask (B, S): True = attend).

        cond: text (B, text_dim) float, text_mask (B,) bool (False = dropped), style, emotion,
        tempo, key, timesig (B,) long, programs (B, 129) float, programs_mask (B,) bool,
        plan_label, plan_index (B, P) long (label = n_section_labels marks pad/dropped),
        plan_mask (B, P) bool (True = a bar of the piece).
        """
        B = cond["style"].shape[0]
        M = self.cfg.n_text_memory
        text = self.text_proj(cond["text"]).view(B, M, -1)
        text = torch.where(cond["text_mask"][:, None, None], text, self.text_null.expand(B, M, -1))
        progs = torch.where(cond["programs_mask"][:, None], self.programs(cond["programs"]), self.programs_null)
        fixed = torch.cat(
            [
                text,
                self.style(cond["style"])[:, None],
                self.emotion(cond["emotion"])[:, None],
                self.tempo(cond["tempo"])[:, None],
                self.key(cond["key"])[:, None],
                self.timesig(cond["timesig"])[:, None],
                progs[:, None],
            ],
            1,
        )  # (B, M + 6, D)
        P = cond["plan_label"].shape[1]
        plan = (
            self.section(cond["plan_label"])
            + self.section_index(cond["plan_index"].clamp(max=self.cfg.max_section_index - 1))
            + self.bar_pos(torch.arange(P, device=fixed.device))
        )
        types = torch.cat(
            [torch.arange(self.n_fixed, device=fixed.device), torch.full((P,), self.n_fixed, device=fixed.device)]
        )
        x = torch.cat([fixed, plan], 1) + self.cond_type(types)
        keep = torch.cat([torch.ones(B, self.n_fixed, dtype=torch.bool, device=x.device), cond["plan_mask"]], 1)
        attn_mask = keep[:, None, None, :]  # (B, 1, 1, S)
        for blk in self.encoder:
            x = blk(x, self_mask=attn_mask)
        return self.ln_enc(x), attn_mask

    # ------------------------------------------------------------------ decoder
    def bar_numbers(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) bar number of each position: bar-starting tokens so far - 1 (+ offset)."""
        n = self.starts_bar[idx].cumsum(1) - 1
        return n.clamp(0, self.cfg.max_bars - 1)

    @staticmethod
    def degrees(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """key (B,) long (tonic + 12 * minor; NULL_KEY = none) -> each pitch class's degree in it, mode * 12 +
        interval above the tonic (B, 12), and whether the key is known (B, 1)."""
        tonic, minor = key % 12, (key // 12).clamp(max=1)
        interval = (torch.arange(12, device=key.device)[None] - tonic[:, None]) % 12
        return minor[:, None] * 12 + interval, (key < NULL_KEY)[:, None]

    def key_bias(self, key: torch.Tensor) -> torch.Tensor:
        """key (B,) -> (B, V) logit bias of the learned key profile (zero for an unknown key)."""
        degree, known = self.degrees(key)
        profile = self.cfg.key_profile_gain * self.key_profile[degree] * known  # (B, 12) per pitch class
        return profile @ self.pc_counts.T

    def logit_biases(self, memory: torch.Tensor, key: torch.Tensor) -> list[torch.Tensor]:
        """The song-level logit biases, each (B, V), in the order decode adds them: the condition bias (from the
        memory's fixed slots), the key profile (from the key (B,)). They are the same at every position."""
        biases = []
        if self.cond_bias is not None:  # memory (B, S, D): its first n_fixed slots are the song-level conditions
            biases.append(self.cond_bias(memory[:, : self.n_fixed].mean(1)))
        if self.key_profile is not None:
            biases.append(self.key_bias(key))
        return biases

    def decode(self, idx, memory, mem_mask, bars, start_pos: int = 0, cache: list | None = None, key=None, biases=None):
        """idx (B, T) -> logits (B, T, V). With ``cache``, idx holds only the new positions. ``biases``:
        :meth:`logit_biases` of this memory and key, when the caller keeps them (a sampler, once a window);
        otherwise they are computed here from ``key`` (B,), needed when the model has a key profile."""
        T = idx.shape[1]
        if start_pos + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start_pos + T} exceeds block_size {self.cfg.block_size}")
        if biases is None and self.key_profile is not None and key is None:
            raise ValueError("this planner has a key profile: decode needs the key condition")
        pos = torch.arange(start_pos, start_pos + T, device=idx.device)
        x = self.tok(idx) + self.pos(pos) + self.bar_pos(bars)  # (B, T, D)
        for i, blk in enumerate(self.decoder):
            x = blk(x, memory, mem_mask, causal=True, cache=None if cache is None else cache[i])
        logits = self.head(self.ln_f(x))  # (B, T, V)
        if biases is None:  # after the decoder, so training's gradients sum in the order its checkpoints were made
            biases = self.logit_biases(memory, key)
        for bias in biases:
            logits = logits + bias[:, None]
        return logits

    def forward(self, idx: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, V)."""
        memory, mem_mask = self.encode(cond)
        return self.decode(idx, memory, mem_mask, self.bar_numbers(idx), key=cond["key"])
