"""Stage 2: train the symbolic planner (single process or DDP under torchrun)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from src.data.planner_dataset import IGNORE, PlannerDataset, caption_embeddings
from src.data.tokenizer import tokenizer_hash
from src.models.builders import build_planner, load_codec, resolve_planner_config
from src.models.conditions import drop_fields, random_drop
from src.models.symbolic_planner import COND_FIELDS, PlannerConfig, SymbolicPlanner
from src.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from src.training.distributed import DistInfo, all_reduce_mean, setup_distributed
from src.training.optim import build_optimizer, warmup_cosine
from src.training.sampler import ResumableDistributedSampler
from src.utils.config import save_config
from src.utils.io import copy_atomic

log = logging.getLogger("train_symbolic")
COND_KEYS = (
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


@dataclass
class TrainConfig:
    seed: int = 0
    max_steps: int = 1000
    global_batch: int = 32  # sequences per optimiser step, summed over ranks
    micro_batch: int = 16  # sequences per forward pass on one rank
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_windows_per_piece: int = 2
    log_every: int = 20
    sample_every: int = 0  # 0 = never; else write a MIDI sample and piano roll every N steps
    sample_tokens: int = 256
    compile: bool = False
    amp: str = "bf16"  # bf16 | fp16 | none (autocast on GPU only)
    num_workers: int = 0
    transpose: int = 0  # random pitch shift in [-transpose, transpose] semitones at load time
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
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"amp must be bf16, fp16 or none, got {self.amp!r}")
        if self.global_batch % self.micro_batch:
            raise ValueError(
                f"global_batch ({self.global_batch}) must be a multiple of micro_batch ({self.micro_batch})"
            )
        for k, p in self.cond_dropout.items():
            if not 0 <= p <= 1:
                raise ValueError(f"cond_dropout.{k} must be in [0, 1], got {p}")


@dataclass
class SymbolicConfig:
    data_dir: str = "data/processed/tiny"
    out_dir: str = "checkpoints/symbolic"
    run_dir: str = "runs/symbolic"
    run_name: str = "tiny"
    model: PlannerConfig = field(default_factory=PlannerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cond: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(batch["x"], cond)
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["y"].flatten(), ignore_index=IGNORE)


@torch.no_grad()
def evaluate(
    model: SymbolicPlanner, ds: PlannerDataset, device: torch.device, batch_size: int = 32, cond_transform=None
) -> float:
    """Mean next-token cross-entropy (nats) over every target token of ``ds``'s windows."""
    model.eval()
    total, count = 0.0, 0
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        cond = {k: batch[k] for k in COND_KEYS}
        if cond_transform is not None:
            cond = cond_transform(cond)
        logits = model(batch["x"], cond)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["y"].flatten(), ignore_index=IGNORE, reduction="sum")
        total += float(loss)
        count += int((batch["y"] != IGNORE).sum())
    model.train()
    return total / max(1, count)


def _autocast(cfg: TrainConfig, device: torch.device):
    if device.type != "cuda" or cfg.amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def train(cfg: SymbolicConfig, info: DistInfo | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume from ``out_dir/last.pt``); return final metrics and the model.

    ``stop_after`` ends the run early at that step with a checkpoint (a planned interruption).
    """
    info = info or setup_distributed(cfg.train.device)
    tc, dev = cfg.train, info.device
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
    last = out_dir / "last.pt"
    state = load_checkpoint(last, tok_hash) if last.is_file() else None
    if state is not None and PlannerConfig(**state["model_config"]) != mcfg:
        raise ValueError(f"{last}: model config differs from the config; delete it or use another out_dir")
    if state is not None and state["step"] >= tc.max_steps and (out_dir / "best.pt").is_file():
        if info.is_main:
            log.info("up to date: %s is at step %d of %d (delete it to retrain)", last, state["step"], tc.max_steps)
        model = build_planner(mcfg)
        model.load_state_dict(state["model"])
        return {
            "step": state["step"],
            "val_loss": state["val_loss"],
            "best_val": state["best_val"],
            "params": model.num_params(),
            "model": model,
            "up_to_date": True,
        }
    model = build_planner(mcfg).to(dev)
    if info.is_main:
        log.info("planner: %.2fM parameters; device %s; world size %d", model.num_params() / 1e6, dev, info.world_size)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "symbolic_config.yaml")

    train_ds = PlannerDataset(data_dir, "train", mcfg, codec, text_emb, tc.transpose, tc.seed)
    val_ds = PlannerDataset(data_dir, "validation", mcfg, codec, text_emb, eval_windows=tc.eval_windows_per_piece)
    if len(train_ds) == 0:
        raise RuntimeError(f"{data_dir}: the train split is empty")
    per_rank = tc.global_batch // info.world_size
    if tc.global_batch % info.world_size or per_rank % tc.micro_batch:
        raise ValueError(
            f"global_batch {tc.global_batch} must split into "
            f"world_size {info.world_size} x micro_batch {tc.micro_batch}"
        )
    accum = per_rank // tc.micro_batch
    sampler = ResumableDistributedSampler(len(train_ds), info.rank, info.world_size, tc.seed)
    opt = build_optimizer(model, tc.lr, tc.weight_decay, tuple(tc.betas), fused=dev.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, tc.warmup_steps, tc.max_steps, tc.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and tc.amp == "fp16")
    drop_gen = torch.Generator().manual_seed(tc.seed * 1000 + info.rank)
    step, epoch, batch_in_epoch, best_val = 0, 0, 0, math.inf

    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch, best_val = (
            state["step"],
            state["epoch"],
            state["batch_in_epoch"],
            state["best_val"],
        )
        set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
        drop_gen.set_state(state["drop_gen"][min(info.rank, len(state["drop_gen"]) - 1)])
        if info.is_main:
            log.info("resumed from %s at step %d", last, step)

    raw_model = model
    if tc.compile:
        model = torch.compile(model)
    if info.enabled:
        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(cfg.run_dir) / cfg.run_name))

    def batches():
        nonlocal epoch, batch_in_epoch
        while True:
            sampler.set_epoch(epoch, batch_in_epoch * tc.micro_batch)
            train_ds.set_epoch(epoch)
            for b in DataLoader(train_ds, tc.micro_batch, sampler=sampler, num_workers=tc.num_workers, drop_last=True):
                batch_in_epoch += 1
                yield b
            epoch, batch_in_epoch = epoch + 1, 0

    def checkpoint(path: Path, val: float) -> None:
        gathered_rng = [rng_state()]
        gathered_gen = [drop_gen.get_state()]
        if info.enabled:  # every rank's RNG, so each resumes its own stream
            gathered_rng = [None] * info.world_size
            gathered_gen = [None] * info.world_size
            torch.distributed.all_gather_object(gathered_rng, rng_state())
            torch.distributed.all_gather_object(gathered_gen, drop_gen.get_state())
        if info.is_main:
            save_checkpoint(
                path,
                {
                    "kind": "symbolic_planner",
                    "model": raw_model.state_dict(),
                    "model_config": dataclasses.asdict(mcfg),
                    "tokenizer_hash": tok_hash,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "best_val": best_val,
                    "val_loss": val,
                    "rng": gathered_rng,
                    "drop_gen": gathered_gen,
                    "config": dataclasses.asdict(cfg),
                    "data_dir": str(data_dir),
                    "tokenizer_json": (data_dir / "tokenizer.json").read_text(encoding="utf-8"),
                    "data_stats": stats,
                },
            )

    stats = data_stats(train_ds)
    it = batches()
    model.train()
    t_log, tokens_since, val = time.time(), 0, float("nan")
    while step < min(tc.max_steps, stop_after or tc.max_steps):
        loss_sum = torch.zeros((), device=dev)
        for micro in range(accum):
            batch = {k: v.to(dev, non_blocking=True) for k, v in next(it).items()}
            cond = random_drop({k: batch[k] for k in COND_KEYS}, tc.cond_dropout, mcfg, drop_gen)
            sync = contextlib.nullcontext() if (not info.enabled or micro == accum - 1) else model.no_sync()
            with sync, _autocast(tc, dev):
                loss = lm_loss(model, batch, cond) / accum
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
            tokens_since += int((batch["y"] != IGNORE).sum()) * info.world_size
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        step += 1
        loss_avg = float(all_reduce_mean(loss_sum, info))
        if info.is_main and (step % tc.log_every == 0 or step == 1):
            dt = time.time() - t_log
            tps = tokens_since / max(dt, 1e-9)
            writer.add_scalar("train/loss", loss_avg, step)
            writer.add_scalar("lr", sched.get_last_lr()[0], step)
            writer.add_scalar("grad_norm", float(gnorm), step)
            writer.add_scalar("tokens_per_s", tps, step)
            log.info(
                "step %d/%d loss %.4f lr %.2e grad %.2f %.0f tok/s",
                step,
                tc.max_steps,
                loss_avg,
                sched.get_last_lr()[0],
                float(gnorm),
                tps,
            )
            t_log, tokens_since = time.time(), 0
        if step % tc.eval_every == 0 or step in (tc.max_steps, stop_after):
            if info.is_main:
                val = evaluate(raw_model, val_ds, dev) if len(val_ds) else float("nan")
                writer.add_scalar("val/loss", val, step)
                writer.add_scalar("val/perplexity", math.exp(min(val, 50)), step)
                log.info("step %d val loss %.4f (ppl %.2f)", step, val, math.exp(min(val, 50)))
                if val < best_val:
                    best_val = val
            if info.enabled:
                obj = [best_val]
                torch.distributed.broadcast_object_list(obj, src=0)
                best_val = obj[0]
            checkpoint(out_dir / "last.pt", val)
            if info.is_main and val == best_val:
                copy_atomic(out_dir / "last.pt", out_dir / "best.pt")
        if info.is_main and tc.sample_every and step % tc.sample_every == 0:
            from src.training.samples import log_sample

            log_sample(
                raw_model,
                val_ds if len(val_ds) else train_ds,
                codec,
                writer,
                step,
                Path(cfg.run_dir) / cfg.run_name,
                tc.sample_tokens,
                tc.seed,
            )
    if writer is not None:
        writer.close()
    return {"step": step, "val_loss": val, "best_val": best_val, "params": raw_model.num_params(), "model": raw_model}


def data_stats(ds: PlannerDataset) -> dict[str, Any]:
    """What the model saw in training: styles, programs, and each style's commonest instruments."""
    from collections import Counter

    rows = ds.pieces.rows
    by_style: dict[str, Counter] = {}
    for r in rows:
        by_style.setdefault(r["style"] or "UNLABELLED", Counter())[tuple(r["programs"])] += 1
    return {
        "styles": dict(Counter(r["style"] or "UNLABELLED" for r in rows)),
        "programs": sorted({p for r in rows for p in r["programs"]}),
        "program_counts": dict(Counter(p for r in rows for p in r["programs"])),  # pieces per program
        "style_programs": {s: list(c.most_common(1)[0][0]) for s, c in by_style.items()},
        "time_signatures": dict(Counter(r["time_signature"] for r in rows)),
    }


def val_losses(ckpt: str | Path, data_dir: str | Path, windows: int = 2, device: str = "cpu") -> dict[str, float]:
    """Validation loss with the true conditions, and with some of them taken from another window:
    only the prompt (text), every field but the plan, and everything."""
    from src.models.builders import load_planner

    model, _ = load_planner(ckpt, data_dir)
    model.to(device)
    codec = load_codec(data_dir)
    ds = PlannerDataset(data_dir, "validation", model.cfg, codec, caption_embeddings(data_dir), eval_windows=windows)
    perm = np.random.default_rng(0).permutation(len(ds))
    dev = torch.device(device)
    not_plan = [k for k in COND_KEYS if not k.startswith("plan")]
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
        "shuffled_with_plan": evaluate(model, ShuffledConditions(ds, perm, list(COND_KEYS)), dev),
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
