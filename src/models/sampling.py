"""Sampling from the planner: KV cache, temperature / top-k / top-p, classifier-free guidance,
mode guidance (away from the logits with key and emotion unknown or in the parallel mode), a REMI+
grammar mask (every sampled sequence decodes to valid MIDI), an explicit
``torch.Generator``, and a sliding window past the model's context that keeps the conditions
(the plan is re-sliced from the window's first bar)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from src.models.symbolic_planner import SymbolicPlanner
from src.music.conditions import ConditionShape, null_conditions, parallel_conditions, relative_conditions, without
from src.music.tokenizer import BOS, EOS, MASK, PAD, TokenCodec

MODE_NEGATIVES = ("null", "parallel", "relative")


def mode_negative(cond: dict[str, torch.Tensor], name: str, shape: ConditionShape) -> dict[str, torch.Tensor]:
    """Mode guidance's negative conditions (one of MODE_NEGATIVES)."""
    if name == "parallel":
        return parallel_conditions(cond)
    if name == "relative":
        return relative_conditions(cond)
    return without(cond, ("key", "emotion"), shape)


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    guidance: float = 1.0  # classifier-free guidance scale; 1 = off
    # mode guidance: + scale * (logits under the conditions - logits under the negative: key and emotion unknown
    # ("null"), in the parallel mode ("parallel": A minor against A major) or in the relative key ("relative": A minor
    # against C major, the same notes on another tonic)); 0 = off. What the model itself takes from its key and emotion,
    # amplified (a negative prompt), not a rewrite of its notes.
    mode_guidance: float = 0.0
    mode_negative: str = "null"
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.mode_guidance < 0:
            raise ValueError(f"mode_guidance must be >= 0, got {self.mode_guidance}")
        if self.mode_negative not in MODE_NEGATIVES:
            raise ValueError(f"mode_negative must be one of {', '.join(MODE_NEGATIVES)}, got {self.mode_negative!r}")

    @property
    def branches(self) -> int:
        """How many condition sets each step runs: the conditions, + the null ones (CFG), + mode guidance's."""
        return 1 + (self.guidance != 1.0) + (self.mode_guidance > 0)


class Grammar:
    """Which BPE token may follow which, from miditok's REMI+ token-type graph.

    A BPE token is a run of base tokens; it may follow token ``a`` when its first base type
    may follow ``a``'s last base type. BOS is followed by a Bar; EOS may come where a Bar may.
    miditok's graph lets any Program be followed by a Pitch or a PitchDrum: here the drum kit's Program
    (``Program_-1``) is followed by a PitchDrum and every other program's by a Pitch (miditok decodes a
    PitchDrum after a violin's Program as a violin note).
    """

    def __init__(self, codec: TokenCodec):
        tok = codec.tok
        graph = tok._create_token_types_graph()
        base_types = {i: t.split("_")[0] for t, i in tok.vocab.items()}
        V = len(codec.bpe_to_base)
        first = [base_types[int(b[0])] if len(b) else "" for b in codec.bpe_to_base]
        last = [base_types[int(b[-1])] if len(b) else "" for b in codec.bpe_to_base]
        types = sorted(set(graph) | {"BOS"})
        allowed = {t: np.array([f in graph.get(t, ()) for f in first]) for t in types}
        allowed["BOS"] = np.array([f == "Bar" for f in first])
        for t in types:
            allowed[t][EOS] = "Bar" in graph.get(t, ()) and t != "BOS"
        self.table = torch.zeros(V, V, dtype=torch.bool)  # [previous token, next token]
        for i in range(V):
            kind = "BOS" if i == BOS else last[i]
            if kind in allowed:
                self.table[i] = torch.from_numpy(allowed[kind])
        drum_program = tok.vocab.get("Program_-1")
        for i, base in enumerate(codec.bpe_to_base):
            if len(base) and base_types[int(base[-1])] == "Program":
                drums = int(base[-1]) == drum_program
                self.table[i] &= torch.tensor([(f == "PitchDrum") == drums for f in first])
        self.table[:, PAD] = False
        self.table[:, BOS] = False
        self.table[:, MASK] = False

    def mask(self, prev: torch.Tensor) -> torch.Tensor:
        """(B,) previous ids -> (B, V) allowed next tokens."""
        return self.table.to(prev.device)[prev]


def filter_logits(logits: torch.Tensor, cfg: SamplingConfig, allowed: torch.Tensor | None) -> torch.Tensor:
    """(B, V) -> (B, V) with temperature, grammar, top-k and top-p applied (-inf = excluded)."""
    logits = logits.float() / cfg.temperature
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) > cfg.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


class PlannerStepper:
    """Feeds tokens one at a time; returns next-token logits (with CFG). Cached or not."""

    def __init__(self, model: SymbolicPlanner, cond_fn: Callable[[int], dict], cfg: SamplingConfig):
        self.model, self.cond_fn, self.cfg = model, cond_fn, cfg
        self.window: torch.Tensor | None = None  # (B, t) tokens in the current window
        self.bar0 = 0  # song bar of the window's first bar
        self.rows: list[PlannerStepper] | None = None  # once rows' windows are cut apart, one stepper a row

    def _prime(self, window: torch.Tensor, bar0: int) -> torch.Tensor:
        cond = self.cond_fn(bar0)
        sets = [cond]  # (B, ...) each; stacked to (branches * B, ...)
        if self.cfg.guidance != 1.0:
            sets.append(null_conditions(cond, self.model.cfg))
        if self.cfg.mode_guidance > 0:
            sets.append(mode_negative(cond, self.cfg.mode_negative, self.model.cfg))
        cond = {k: torch.cat([s[k] for s in sets]) for k in cond}
        self.memory, self.mem_mask = self.model.encode(cond)
        self.biases = self.model.logit_biases(self.memory, cond["key"])  # once a window: (branches * B, V) each
        self.window, self.bar0 = window, bar0
        self.cache = [{} for _ in self.model.decoder] if self.cfg.use_cache else None
        return self._run(window, 0)

    def _run(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        n = self.cfg.branches  # every branch reads the same tokens: (B, t) -> (n * B, t)
        bars = self.model.bar_numbers(self.window)[:, start : start + idx.shape[1]].repeat(n, 1)
        idx = idx.repeat(n, 1)
        out = self.model.decode(idx, self.memory, self.mem_mask, bars, start, self.cache, biases=self.biases)[:, -1]
        cond, *others = out.chunk(n)  # n x (B, V): the conditions, [null], [mode guidance's negative]
        logits = cond
        if self.cfg.guidance != 1.0:
            uncond = others.pop(0)
            logits = uncond + self.cfg.guidance * (cond - uncond)
        if self.cfg.mode_guidance > 0:  # what the key and emotion's mode alone add, amplified
            logits = logits + self.cfg.mode_guidance * (cond - others[0])
        return logits

    @torch.no_grad()
    def start(self, prompt: torch.Tensor) -> torch.Tensor:
        return self._prime(prompt, 0)

    def _cut(self, row: torch.Tensor) -> int:
        """Where a full window of one row is cut: the first bar in its second half (else mid-bar)."""
        half = len(row) - self.model.cfg.block_size // 2
        starts = self.model.starts_bar[row].nonzero().flatten().tolist()
        return next((s for s in starts if s >= half), half)

    def _row(self, i: int) -> PlannerStepper:
        """A stepper for row ``i`` alone (its slice of the conditions)."""
        return PlannerStepper(
            self.model, lambda bar0: {k: v[i : i + 1] for k, v in self.cond_fn(bar0).items()}, self.cfg
        )

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Append (B,) tokens; slide the window by half when the context is full, each row at its own bar."""
        if self.rows is not None:
            return torch.cat([r.step(token[i : i + 1]) for i, r in enumerate(self.rows)])
        window = torch.cat([self.window, token[:, None]], 1)
        if window.shape[1] > self.model.cfg.block_size:
            cuts = [self._cut(row) for row in window]
            bars = [self.bar0 + int(self.model.starts_bar[row[:c]].sum()) for row, c in zip(window, cuts)]
            if len(set(cuts)) == 1 and len(set(bars)) == 1:
                return self._prime(window[:, cuts[0] :], bars[0])
            self.rows = [self._row(i) for i in range(len(window))]  # windows of different lengths from here on
            return torch.cat([r._prime(w[None, c:], b) for r, w, c, b in zip(self.rows, window, cuts, bars)])
        self.window = window
        if self.cache is None:
            return self._prime(window, self.bar0)
        return self._run(token[:, None], window.shape[1] - 1)


@torch.no_grad()
def generate(
    model: SymbolicPlanner,
    cond_fn: Callable[[int], dict],
    prompt: torch.Tensor,
    max_new_tokens: int,
    cfg: SamplingConfig,
    generator: torch.Generator,
    grammar: Grammar | None = None,
    stop_at_eos: bool = True,
) -> torch.Tensor:
    """Sample up to ``max_new_tokens`` after ``prompt`` (B, T0); returns (B, T0 + n)."""
    was_training = model.training
    model.eval()
    stepper = PlannerStepper(model, cond_fn, cfg)
    logits = stepper.start(prompt)
    out = [prompt]
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    prev = prompt[:, -1]
    for _ in range(max_new_tokens):
        allowed = grammar.mask(prev) if grammar is not None else None
        if allowed is not None:  # finished rows (prev = PAD) draw anything; their token is PAD anyway
            allowed = allowed | done[:, None]
        probs = filter_logits(logits, cfg, allowed).softmax(-1)
        nxt = (
            torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(prompt.device)
        )  # CPU generator: same draws on any device
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        out.append(nxt[:, None])
        done |= nxt == EOS
        if stop_at_eos and bool(done.all()):
            break
        prev = nxt
        logits = stepper.step(nxt)
    model.train(was_training)
    return torch.cat(out, 1)
