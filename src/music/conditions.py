"""The planner's conditions, in one place: what they are, the one way to build them from a manifest
row, a preference pair or a song request, their tensors, condition dropout (training) and the null
conditions (classifier-free guidance)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from src.music.form import Section, plan_of, section_labels
from src.music.theory import key_name, parse_key, relative_key
from src.music.vocab import EMOTIONS, PARALLEL_EMOTION, STYLES, TIME_SIGNATURES

# the fields condition dropout drops one by one (in this order: the columns of its mask)
COND_FIELDS = ("text", "style", "emotion", "tempo", "key", "timesig", "programs", "plan")
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
NULL_KEY = 24  # keys are tonic + 12 * minor: 0..23
# each key id's relative key id (theory.relative_key); the null key stays null
RELATIVE_KEY_IDS = torch.tensor(
    [t + 12 * (m == "minor") for t, m in (relative_key(k % 12, "minor" if k >= 12 else "major") for k in range(24))]
    + [NULL_KEY]
)


class ConditionShape(Protocol):
    """The sizes of the model's condition tables (a PlannerConfig has them)."""

    max_bars: int
    n_section_labels: int
    n_programs: int
    n_tempo_bins: int
    text_dim: int


def key_id(tonic: int, mode: str) -> int:
    return tonic % 12 + (12 if mode == "minor" else 0)


def tempo_bin(qpm: float, n_bins: int) -> int:
    """Log-spaced tempo bins over 30..300 BPM."""
    x = (math.log(min(max(qpm, 30.0), 300.0)) - math.log(30.0)) / (math.log(300.0) - math.log(30.0))
    return min(n_bins - 1, int(x * n_bins))


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

    @classmethod
    def from_row(
        cls,
        row: dict[str, Any],
        text: np.ndarray | None,
        bar0: int = 0,
        shift: int = 0,
        parallel: bool = False,
        programs: list[int] | None = None,
    ) -> Conditions:
        """A manifest row's labels, its plan from bar ``bar0`` on; ``shift`` = the tokens' transposition;
        ``parallel``: the tokens were moved to the parallel mode, so the key's mode and the emotion's valence
        flip, and the caption (which names the old key and mood) is withheld; ``programs``: the parts were
        re-voiced onto these instruments (the caption, which names the old ones, is withheld)."""
        mode = ("minor" if row["mode"] == "major" else "major") if parallel else row["mode"]
        return cls(
            text=None if parallel or programs is not None else text,
            style=row["style"],
            emotion=PARALLEL_EMOTION.get(row["emotion"], row["emotion"]) if parallel else row["emotion"],
            tempo=row["tempo"],
            key=key_id(row["key_tonic"] + shift, mode),
            timesig=row["time_signature"],
            programs=row["programs"] if programs is None else programs,
            plan_label=section_labels(row["sections"])[bar0:],
            plan_index=row["section_index"][bar0:],
        )

    def from_bar(self, bar0: int) -> Conditions:
        """The same conditions with the plan from bar ``bar0`` on (a window that starts there)."""
        return replace(self, plan_label=self.plan_label[bar0:], plan_index=self.plan_index[bar0:])

    @classmethod
    def from_pair(cls, c: dict[str, Any], text: np.ndarray | None) -> Conditions:
        """A preference pair's condition dict (strings as in the manifest; see :func:`pair_condition_dict`)."""
        sections = section_labels(c.get("sections", ""))
        return cls(
            text=text,
            style=c.get("style"),
            emotion=c.get("emotion"),
            tempo=c.get("tempo"),
            key=key_id(*parse_key(c["key"])) if c.get("key") else None,
            timesig=c.get("time_signature"),
            programs=c.get("programs"),
            plan_label=sections,
            plan_index=c.get("section_index") or list(range(len(sections))),
        )

    @classmethod
    def for_song(
        cls,
        text: np.ndarray | None,
        style: str | None,
        emotion: str,
        tempo: float,
        key: tuple[int, str] | None,
        time_signature: str,
        programs: list[int],
        sections: list[Section],
    ) -> Conditions:
        """A song request: its controls and the plan of its form."""
        labels, index = plan_of(sections)
        return cls(
            text=text,
            style=style,
            emotion=emotion,
            tempo=tempo,
            key=key_id(*key) if key is not None else None,
            timesig=time_signature,
            programs=programs,
            plan_label=labels,
            plan_index=index,
        )


def pair_condition_dict(row: dict[str, Any], bar0: int, shift: int = 0) -> dict[str, Any]:
    """A manifest row's labels as a preference pair's condition dict, its plan from bar ``bar0`` on; ``shift``:
    the pair's tokens were transposed by it."""
    return {
        "text": row["caption"],
        "style": row["style"],
        "emotion": row["emotion"],
        "tempo": row["tempo"],
        "key": key_name((row["key_tonic"] + shift) % 12, row["mode"]),
        "time_signature": row["time_signature"],
        "programs": row["programs"],
        "sections": row["sections"][bar0:],
        "section_index": row["section_index"][bar0:],
    }


def to_arrays(c: Conditions, cfg: ConditionShape) -> dict[str, np.ndarray]:
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
        "key": np.array(c.key if c.key is not None else NULL_KEY),
        "timesig": np.array(TIME_SIGNATURES.index(c.timesig) if c.timesig in TIME_SIGNATURES else len(TIME_SIGNATURES)),
        "programs": progs,
        "programs_mask": np.array(bool(c.programs)),
        "plan_label": label,
        "plan_index": index,
        "plan_mask": np.arange(P) < max(n, 1),
    }


def batch(conds: list[Conditions], cfg: ConditionShape, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    arrays = [to_arrays(c, cfg) for c in conds]
    return {k: torch.as_tensor(np.stack([a[k] for a in arrays])).to(device) for k in arrays[0]}


def drop_fields(cond: dict[str, torch.Tensor], drop: torch.Tensor, cfg: ConditionShape) -> dict[str, torch.Tensor]:
    """Replace fields by their null value where ``drop`` (B, n_fields) is True (COND_FIELDS order)."""
    out = dict(cond)
    d = dict(zip(COND_FIELDS, drop.unbind(1)))
    out["text_mask"] = cond["text_mask"] & ~d["text"]
    out["programs_mask"] = cond["programs_mask"] & ~d["programs"]
    for name, null in (
        ("style", len(STYLES)),
        ("emotion", len(EMOTIONS)),
        ("tempo", cfg.n_tempo_bins),
        ("key", NULL_KEY),
        ("timesig", len(TIME_SIGNATURES)),
    ):
        out[name] = torch.where(d[name], torch.full_like(cond[name], null), cond[name])
    plan = d["plan"][:, None]  # a dropped plan hides its labels, its section indices and its length
    out["plan_label"] = torch.where(plan, torch.full_like(cond["plan_label"], cfg.n_section_labels), cond["plan_label"])
    out["plan_index"] = torch.where(plan, torch.zeros_like(cond["plan_index"]), cond["plan_index"])
    first = torch.arange(cond["plan_mask"].shape[1], device=plan.device)[None] == 0
    out["plan_mask"] = torch.where(plan, first, cond["plan_mask"])
    return out


def random_drop(
    cond: dict[str, torch.Tensor], probs: dict[str, float], cfg: ConditionShape, u: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Condition dropout: each field of each example independently, with its probability
    (``u`` [B, n_fields] uniform draws in COND_FIELDS order)."""
    p = torch.tensor([probs.get(f, 0.0) for f in COND_FIELDS])
    drop = u < p
    return drop_fields(cond, drop.to(cond["style"].device), cfg)


def shift_plan(cond: dict[str, torch.Tensor], bars: int, cfg: ConditionShape) -> dict[str, torch.Tensor]:
    """Batched conditions whose plan starts ``bars`` bars later (a window that slid on)."""
    if bars == 0:
        return cond
    out = dict(cond)
    for name, fill in (("plan_label", cfg.n_section_labels), ("plan_index", 0), ("plan_mask", False)):
        rest = cond[name][:, bars:]
        pad = torch.full((rest.shape[0], cond[name].shape[1] - rest.shape[1]), fill, dtype=rest.dtype)
        out[name] = torch.cat([rest, pad.to(rest.device)], 1)
    out["plan_mask"][:, 0] = True  # at least one key for the encoder (as to_arrays does)
    return out


def relative_conditions(cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same conditions in the relative key (A minor <-> C major: the same notes, another tonic and mode) and
    the emotion's valence flipped (a null key or emotion stays null); with the parallel mode, the mode contrast's
    second negative: the parallel one alone is met by the minor key's notes on the relative major's tonic."""
    out = parallel_conditions(cond)
    out["key"] = RELATIVE_KEY_IDS.to(cond["key"].device)[cond["key"]]
    return out


def parallel_conditions(cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same conditions in the parallel mode: the key's mode and the emotion's valence flipped (a null key or
    emotion stays null); the other side of the mode contrast in training."""
    out = dict(cond)
    key = cond["key"]
    out["key"] = torch.where(key < NULL_KEY, (key + 12) % 24, key)
    flip = torch.tensor([EMOTIONS.index(PARALLEL_EMOTION[e]) for e in EMOTIONS] + [len(EMOTIONS)])
    out["emotion"] = flip.to(cond["emotion"].device)[cond["emotion"]]
    return out


def without(cond: dict[str, torch.Tensor], names: tuple[str, ...], cfg: ConditionShape) -> dict[str, torch.Tensor]:
    """The named fields (of COND_FIELDS) null in every row, the others as they are."""
    B = cond["style"].shape[0]
    drop = torch.zeros(B, len(COND_FIELDS), dtype=torch.bool, device=cond["style"].device)
    drop[:, [COND_FIELDS.index(n) for n in names]] = True
    return drop_fields(cond, drop, cfg)


def null_conditions(cond: dict[str, torch.Tensor], cfg: ConditionShape) -> dict[str, torch.Tensor]:
    """Every field dropped except the plan (the song's form): the CFG "unconditional" branch."""
    return without(cond, tuple(f for f in COND_FIELDS if f != "plan"), cfg)
