"""Condition fields of the planner: from a manifest row or user arguments to model tensors,
plus condition dropout (training) and the null conditions (classifier-free guidance)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from src.models.symbolic_planner import COND_FIELDS, EMOTIONS, STYLES, TIME_SIGNATURES, PlannerConfig, tempo_bin


@dataclass
class Conditions:
    """One song's conditions; None = unknown (the model's null embedding is used)."""

    text: np.ndarray | None = None  # (384,) prompt embedding
    style: str | None = None
    emotion: str | None = None
    tempo: float | None = None
    key: int | None = None  # tonic pitch class + 12 * (mode == minor)
    timesig: str | None = None
    programs: list[int] | None = None
    plan_label: list[int] = field(default_factory=list)  # per bar, from the window's first bar
    plan_index: list[int] = field(default_factory=list)


# the tensors to_arrays() makes for one example, as they appear in a training batch
CONDITION_TENSORS = (
    "text",
    "text_mask",
    "style",
    "emotion",
    "tempo",
    "key",
    "timesig",
    "programs",
    "programs_mask",
    "plan_label",
    "plan_index",
    "plan_mask",
)


def key_id(tonic: int, mode: str) -> int:
    return tonic % 12 + (12 if mode == "minor" else 0)


def to_arrays(c: Conditions, cfg: PlannerConfig) -> dict[str, np.ndarray]:
    """Fixed-shape numpy arrays for one example (collated into (B, ...) tensors)."""
    P, null_label = cfg.max_bars, cfg.n_section_labels
    n = min(P, len(c.plan_label))
    label = np.full(P, null_label, np.int64)
    index = np.zeros(P, np.int64)
    label[:n] = np.minimum(c.plan_label[:n], null_label - 1)
    index[:n] = c.plan_index[:n]
    progs = np.zeros(cfg.n_programs, np.float32)
    if c.programs:
        progs[[p for p in c.programs if 0 <= p < cfg.n_programs]] = 1.0
    return {
        "text": c.text.astype(np.float32) if c.text is not None else np.zeros(cfg.text_dim, np.float32),
        "text_mask": np.array(c.text is not None),
        "style": np.array(STYLES.index(c.style) if c.style in STYLES else len(STYLES)),
        "emotion": np.array(EMOTIONS.index(c.emotion) if c.emotion in EMOTIONS else len(EMOTIONS)),
        "tempo": np.array(tempo_bin(c.tempo, cfg.n_tempo_bins) if c.tempo else cfg.n_tempo_bins),
        "key": np.array(c.key if c.key is not None else 24),
        "timesig": np.array(TIME_SIGNATURES.index(c.timesig) if c.timesig in TIME_SIGNATURES else len(TIME_SIGNATURES)),
        "programs": progs,
        "programs_mask": np.array(bool(c.programs)),
        "plan_label": label,
        "plan_index": index,
        "plan_mask": np.arange(P) < max(n, 1),
    }


def batch(conds: list[Conditions], cfg: PlannerConfig, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    arrays = [to_arrays(c, cfg) for c in conds]
    return {k: torch.as_tensor(np.stack([a[k] for a in arrays])).to(device) for k in arrays[0]}


def drop_fields(cond: dict[str, torch.Tensor], drop: torch.Tensor, cfg: PlannerConfig) -> dict[str, torch.Tensor]:
    """Replace fields by their null value where ``drop`` (B, n_fields) is True (COND_FIELDS order)."""
    out = dict(cond)
    d = dict(zip(COND_FIELDS, drop.unbind(1)))
    out["text_mask"] = cond["text_mask"] & ~d["text"]
    out["programs_mask"] = cond["programs_mask"] & ~d["programs"]
    for name, null in (
        ("style", len(STYLES)),
        ("emotion", len(EMOTIONS)),
        ("tempo", cfg.n_tempo_bins),
        ("key", 24),
        ("timesig", len(TIME_SIGNATURES)),
    ):
        out[name] = torch.where(d[name], torch.full_like(cond[name], null), cond[name])
    out["plan_label"] = torch.where(
        d["plan"][:, None], torch.full_like(cond["plan_label"], cfg.n_section_labels), cond["plan_label"]
    )
    return out


def random_drop(
    cond: dict[str, torch.Tensor], probs: dict[str, float], cfg: PlannerConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Condition dropout: each field of each example independently, with its probability."""
    B = cond["style"].shape[0]
    p = torch.tensor([probs.get(f, 0.0) for f in COND_FIELDS])
    drop = torch.rand(B, len(COND_FIELDS), generator=generator) < p
    return drop_fields(cond, drop.to(cond["style"].device), cfg)


def null_conditions(cond: dict[str, torch.Tensor], cfg: PlannerConfig) -> dict[str, torch.Tensor]:
    """Every field dropped except the plan (the song's form): the CFG "unconditional" branch."""
    B = cond["style"].shape[0]
    drop = torch.ones(B, len(COND_FIELDS), dtype=torch.bool, device=cond["style"].device)
    drop[:, COND_FIELDS.index("plan")] = False
    return drop_fields(cond, drop, cfg)
