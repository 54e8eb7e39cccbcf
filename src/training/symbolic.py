"""Stage 2: train the symbolic planner (single process or DDP under torchrun)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from src.models.builders import build_planner, load_codec, load_planner, resolve_planner_config
from src.models.symbolic_planner import PlannerConfig, SymbolicPlanner
from src.models.text_encoder import caption_embeddings
from src.music.conditions import (
    COND_FIELDS,
    CONDITION_TENSORS,
    NULL_KEY,
    drop_fields,
    parallel_conditions,
    random_drop,
    relative_conditions,
)
from src.music.theory import key_name
from src.music.tokenizer import IGNORE, TokenCodec, tokenizer_hash
from src.music.vocab import EMOTIONS, style_label
from src.training.datasets import PlannerDataset
from src.training.distributed import DistInfo, setup_distributed
from src.training.dpo import sequence_logps
from src.training.loop import LoopConfig, fit
from src.utils.config import save_config

log = logging.getLogger("train_symbolic")


@dataclass
class TrainConfig(LoopConfig):
    eval_windows_per_piece: int = 2
    sample_every: int = 0  # 0 = never; else write a MIDI sample and piano roll at evaluations this many steps apart
    sample_tokens: int = 256
    transpose: int = 0  # random pitch shift in [-transpose, transpose] semitones at load time
    # share of training pieces moved to the parallel mode of their key (key mode and emotion valence flip with
    # them, the caption is withheld): the key and emotion fields, not only the caption, then decide the mode
    parallel_mode: float = 0.0
    # share of training pieces whose parts are re-voiced onto other instruments that can play them (range, notes at
    # once: src/music/instruments.py revoice_choices), the caption withheld: every nameable instrument is seen
    revoice: float = 0.0
    # every piece put on tonic C (its key condition C major / C minor): the planner writes relative to the tonic and
    # the song generator conditions on C in the requested mode, then transposes onto the requested tonic; the mode
    # is then the one key decision the model makes (excludes transpose)
    key_relative: bool = False
    # each style's rarer mode drawn more often: a piece of a (style, mode) cell is drawn round((pieces of the style's
    # commoner mode / pieces of its cell) ** balance) times an epoch (0 = off, 1 = both modes equally often)
    balance: float = 0.0
    # weight of the mode contrast: each window's first ``contrast_tokens`` targets should be likelier under its own
    # key and emotion than under the parallel mode's (-log sigmoid of the log-likelihood difference); 0 = off
    mode_contrast: float = 0.0
    contrast_tokens: int = 32
    contrast_windows: int = 0  # the contrast on the first this many windows of each micro-batch (0 = all)
    contrast_relative: bool = False  # a second negative: the relative key (same notes, other tonic)
    cond_dropout: dict[str, float] = field(
        default_factory=lambda: {
            "text": 0.1,
            "style": 0.1,
            "emotion": 0.1,
            "tempo": 0.1,
            "key": 0.2,
            "timesig": 0.1,
            "programs": 0.1,
            "plan": 0.1,
        }
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.key_relative and self.transpose:
            raise ValueError("train.key_relative and train.transpose exclude each other (set transpose: 0)")
        if self.contrast_windows < 0:
            raise ValueError(f"contrast_windows must be >= 0, got {self.contrast_windows}")
        if self.mode_contrast < 0 or self.contrast_tokens < 1:
            raise ValueError(
                f"mode_contrast must be >= 0 and contrast_tokens >= 1, got {self.mode_contrast}, {self.contrast_tokens}"
            )
        for name in ("parallel_mode", "revoice", "balance"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for k, p in self.cond_dropout.items():
            if not 0 <= p <= 1:
                raise ValueError(f"cond_dropout.{k} must be in [0, 1], got {p}")


@dataclass
class SymbolicConfig:
    preset: str = "tiny"  # its name fills every {preset} of the config file
    data_dir: str = "data/processed/tiny"
    out_dir: str = "checkpoints/symbolic"
    run_dir: str = "runs/symbolic"
    run_name: str = "tiny"
    model: PlannerConfig = field(default_factory=PlannerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def mode_contrast_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    cond: dict[str, torch.Tensor],
    n: int,
    windows: int = 0,
    relative: bool = False,
) -> torch.Tensor:
    """Mean over windows of -log sigmoid(delta): delta = log p(first ``n`` targets | own conditions) - log p(them |
    the parallel mode's conditions), the prompt withheld from both (it names the mode: with it, the planner learnt
    to lower every token when prompt and key disagree, not to write the mode). The planner then opens a window
    differently for the two modes, which next-token loss alone did not teach it (a window's own notes soon give
    its key away). Windows with neither key nor emotion known are left out; ``windows`` > 0: only the first
    ``windows`` windows take part (the batch is in random order). ``relative``: the relative key's conditions are a
    second negative, with a term of their own (the parallel mode alone is met by writing the minor key's notes
    around the relative major's tonic)."""
    rows = slice(0, windows or None)
    x, y = batch["x"][rows, :n], batch["y"][rows, :n]  # (B', n)
    cond = {k: v[rows] for k, v in cond.items()}
    own = dict(cond, text_mask=torch.zeros_like(cond["text_mask"]))
    sets = [own, parallel_conditions(own)] + ([relative_conditions(own)] if relative else [])
    k = len(sets)
    stacked = {name: torch.cat([s[name] for s in sets]) for name in own}  # (k B', ...): one forward for all
    lp, _, _ = sequence_logps(model, x.repeat(k, 1), y.repeat(k, 1), stacked)  # (k B',)
    own_lp, *negatives = lp.chunk(k)
    known = ((cond["key"] != NULL_KEY) | (cond["emotion"] != len(EMOTIONS))).float()
    loss = sum(F.softplus(neg - own_lp) for neg in negatives)  # (B',): -log sigmoid(own - negative), summed
    return (loss * known).sum() / known.sum().clamp(min=1.0)


@torch.no_grad()
def evaluate(
    model: SymbolicPlanner, ds: PlannerDataset, device: torch.device, batch_size: int = 32, cond_transform=None
) -> float:
    """Mean next-token cross-entropy (nats) over every target token of ``ds``'s windows."""
    model.eval()
    total, count = 0.0, 0
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        cond = {k: batch[k] for k in CONDITION_TENSORS}
        if cond_transform is not None:
            cond = cond_transform(cond)
        logits = model(batch["x"], cond)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["y"].flatten(), ignore_index=IGNORE, reduction="sum")
        total += float(loss)
        count += int((batch["y"] != IGNORE).sum())
    model.train()
    return total / max(1, count)


class PlannerTask:
    """Next-token prediction with per-field condition dropout (the loop's stage-2 task)."""

    kind = "symbolic_planner"

    def __init__(self, cfg: SymbolicConfig, mcfg: PlannerConfig, codec, tok_hash: str, stats: dict, val_ds, sample_ds):
        self.cfg, self.mcfg, self.codec = cfg, mcfg, codec
        self.model_config = dataclasses.asdict(mcfg)
        self.tok_hash, self.stats, self.val_ds, self.sample_ds = tok_hash, stats, val_ds, sample_ds
        self.data_dir = Path(cfg.data_dir)

    def loss(self, model, batch, rand):
        u = rand.rand(len(COND_FIELDS))
        tc = self.cfg.train
        cond = random_drop({k: batch[k] for k in CONDITION_TENSORS}, tc.cond_dropout, self.mcfg, u)
        logits = model(batch["x"], cond)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["y"].flatten(), ignore_index=IGNORE)
        if tc.mode_contrast:
            n, windows, relative = tc.contrast_tokens, tc.contrast_windows, tc.contrast_relative
            contrast = mode_contrast_loss(model, batch, cond, n, windows, relative)
            loss = loss + tc.mode_contrast * contrast
        return loss, int((batch["y"] != IGNORE).sum())

    def validate(self, model) -> float:
        if not len(self.val_ds):
            return float("nan")
        val = evaluate(model, self.val_ds, next(model.parameters()).device)
        return val

    def extras(self) -> dict[str, Any]:
        return {
            "tokenizer_hash": self.tok_hash,
            "tokenizer_json": (self.data_dir / "tokenizer.json").read_text(encoding="utf-8"),
            "data_stats": self.stats,
            "data_dir": str(self.data_dir),
        }

    def on_eval(self, model, writer, step: int) -> None:
        tc = self.cfg.train
        if writer is None or not tc.sample_every or step % tc.sample_every:
            return
        from src.training.samples import log_sample

        run = Path(self.cfg.run_dir) / self.cfg.run_name
        log_sample(model, self.sample_ds, self.codec, writer, step, run, tc.sample_tokens, tc.seed)


def planner_sets(
    tc: TrainConfig, data_dir: str | Path, mcfg: PlannerConfig, codec: TokenCodec, text_emb: np.ndarray
) -> tuple[PlannerDataset, PlannerDataset]:
    """The training set (random windows, with the config's augmentations) and the fixed validation windows
    (no augmentation; on tonic C when key-relative). Keywords only: a positional slip once fed the re-voicing
    share to the parallel-mode augmentation."""
    augment = {
        "transpose": tc.transpose,
        "seed": tc.seed,
        "parallel_mode": tc.parallel_mode,
        "revoice": tc.revoice,
        "balance": tc.balance,
    }
    train_ds = PlannerDataset(data_dir, "train", mcfg, codec, text_emb, **augment, key_relative=tc.key_relative)
    windows = tc.eval_windows_per_piece
    val_ds = PlannerDataset(
        data_dir, "validation", mcfg, codec, text_emb, eval_windows=windows, key_relative=tc.key_relative
    )
    return train_ds, val_ds


def train(cfg: SymbolicConfig, info: DistInfo | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume from ``out_dir/last.pt``); return final metrics and the model.

    ``stop_after`` ends the run early at that step with a checkpoint (a planned interruption).
    """
    info = info or setup_distributed(cfg.train.device)
    tc = cfg.train
    data_dir, out_dir = Path(cfg.data_dir), Path(cfg.out_dir)
    if not (data_dir / "tokens" / "meta.json").is_file():
        raise FileNotFoundError(f"{data_dir}: no prepared data; create it with: bash 01_prepare_data.sh")
    torch.manual_seed(tc.seed + info.rank)
    codec = load_codec(data_dir)
    tok_hash = tokenizer_hash(data_dir / "tokenizer.json")
    if info.is_main:
        text_emb = caption_embeddings(data_dir)
    if info.enabled:
        torch.distributed.barrier()
    if not info.is_main:
        text_emb = caption_embeddings(data_dir)  # cached by rank 0 by now
    mcfg = resolve_planner_config(cfg.model, codec)
    model = build_planner(mcfg)
    train_ds, val_ds = planner_sets(tc, data_dir, mcfg, codec, text_emb)
    if len(train_ds) == 0:
        raise RuntimeError(f"{data_dir}: the train split is empty")
    if info.is_main:
        log.info(
            "planner: %.2fM parameters; device %s; world size %d",
            model.num_params() / 1e6,
            info.device,
            info.world_size,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "symbolic_config.yaml")
    stats = data_stats(train_ds.pieces.rows)
    if tc.revoice:
        stats["revoice"] = {"share": tc.revoice, "program_counts": train_ds.pieces.revoice_reach()}
    stats["key_relative"] = tc.key_relative  # the song generator conditions on tonic C and transposes
    if tc.balance:
        stats["balance"] = {"balance": tc.balance, "draws_per_epoch": len(train_ds)}
    if tc.key_relative:
        stats["off_tonic_c"] = train_ds.pieces.off_tonic_c()
        if stats["off_tonic_c"] and info.is_main:
            log.warning(
                "key_relative: %d pieces stay in their own key (recorded in data_stats.off_tonic_c)",
                len(stats["off_tonic_c"]),
            )
    task = PlannerTask(cfg, mcfg, codec, tok_hash, stats, val_ds, val_ds if len(val_ds) else train_ds)
    result = fit(model, task, train_ds, cfg, info, stop_after, tok_hash)
    return {**result, "params": model.num_params()}


def data_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the model saw in training: styles, programs, each style's commonest instruments, metres, and the
    keys per style and emotion (the song generator's key plan draws from them)."""
    from collections import Counter

    by_style: dict[str, Counter] = {}
    keys: dict[str, dict[str, Counter]] = {}
    for r in rows:
        by_style.setdefault(style_label(r["style"]), Counter())[tuple(r["programs"])] += 1
        by_emotion = keys.setdefault(style_label(r["style"]), {})
        by_emotion.setdefault(r["emotion"], Counter())[key_name(r["key_tonic"], r["mode"])] += 1
    return {
        "styles": dict(Counter(style_label(r["style"]) for r in rows)),
        "programs": sorted({p for r in rows for p in r["programs"]}),
        "program_counts": dict(Counter(p for r in rows for p in r["programs"])),  # pieces per program
        "style_programs": {s: list(c.most_common(1)[0][0]) for s, c in by_style.items()},
        "time_signatures": dict(Counter(r["time_signature"] for r in rows)),
        "keys": {s: {e: dict(c) for e, c in by_emotion.items()} for s, by_emotion in keys.items()},
    }


def validation_windows(
    mcfg: PlannerConfig, state: dict[str, Any], data_dir: str | Path, codec: TokenCodec, windows: int
) -> PlannerDataset:
    """A checkpoint's fixed validation windows, its pieces as it was trained on them (on tonic C when
    key-relative)."""
    relative = state.get("data_stats", {}).get("key_relative", False)
    emb = caption_embeddings(data_dir)
    return PlannerDataset(data_dir, "validation", mcfg, codec, emb, eval_windows=windows, key_relative=relative)


def val_losses(ckpt: str | Path, data_dir: str | Path, windows: int = 2, device: str = "cpu") -> dict[str, float]:
    """Validation loss with the true conditions, and with some of them taken from another window:
    only the prompt (text), every field but the plan, and everything."""
    model, state = load_planner(ckpt, data_dir)
    model.to(device)
    ds = validation_windows(model.cfg, state, data_dir, load_codec(data_dir), windows)
    perm = np.random.default_rng(0).permutation(len(ds))
    dev = torch.device(device)
    not_plan = [k for k in CONDITION_TENSORS if not k.startswith("plan")]
    text_keys = ["text", "text_mask"]

    def keep_only(fields: tuple[str, ...]):
        def transform(cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            drop = torch.tensor([f not in fields for f in COND_FIELDS]).expand(cond["style"].shape[0], -1)
            return drop_fields(cond, drop.to(cond["style"].device), model.cfg)

        return transform

    return {
        "true": evaluate(model, ds, dev),
        "text_shuffled": evaluate(model, ShuffledConditions(ds, perm, text_keys), dev),
        "prompt_only": evaluate(model, ds, dev, cond_transform=keep_only(("text", "plan"))),
        "prompt_only_shuffled": evaluate(
            model, ShuffledConditions(ds, perm, text_keys), dev, cond_transform=keep_only(("text", "plan"))
        ),
        "no_conditions": evaluate(model, ds, dev, cond_transform=keep_only(("plan",))),
        "shuffled": evaluate(model, ShuffledConditions(ds, perm, not_plan), dev),
        "shuffled_with_plan": evaluate(model, ShuffledConditions(ds, perm, list(CONDITION_TENSORS)), dev),
    }


class ShuffledConditions(torch.utils.data.Dataset):
    """Each window keeps its tokens but takes the condition fields ``keys`` of another window."""

    def __init__(self, ds: PlannerDataset, perm: np.ndarray, keys: list[str]):
        self.ds, self.perm, self.keys = ds, perm, keys

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        own, other = self.ds[i], self.ds[int(self.perm[i])]
        return {**own, **{k: other[k] for k in self.keys}}
