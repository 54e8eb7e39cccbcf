"""The training loop every stage shares: single process or DDP under torchrun.

A stage supplies a model, a dataset and a :class:`TrainTask` (its loss, its validation and
what its checkpoints carry); :func:`fit` does the rest: AdamW with warmup + cosine, gradient
accumulation with ``no_sync``, clipping, mixed precision (:func:`precision`), optional EMA weights, TensorBoard,
atomic ``last.pt`` / ``best.pt`` with every rank's RNG, and exact resume from ``last.pt``.

Randomness: a task draws its own (condition dropout, diffusion timesteps and noise) from
:class:`SampleRandom`, one generator per example seeded by (seed, epoch, dataset index), so an
example gets the same draws whichever rank and micro-batch it lands in: DDP equals one process
with the same global batch. Layer dropout uses each rank's global RNG, which is checkpointed;
validation and samples run on a forked RNG and data loaders have their own generator, so neither
moves it, and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from src.training.distributed import DistInfo, all_reduce_mean
from src.training.optim import build_optimizer, warmup_cosine
from src.training.sampler import ResumableDistributedSampler
from src.utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from src.utils.io import copy_atomic

log = logging.getLogger("train")


@dataclass
class LoopConfig:
    seed: int = 0
    max_steps: int = 1000
    global_batch: int = 32  # examples per optimiser step, summed over ranks
    micro_batch: int = 16  # examples per forward pass on one rank
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    eval_every: int = 200
    log_every: int = 20
    ema_decay: float = 0.0  # 0 = no EMA; else validation, best.pt and inference use the EMA weights
    compile: bool = False
    amp: str = "bf16"  # bf16 | fp16 | none: autocast on GPU, and bf16 on a CPU with native bf16 (see precision())
    num_workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"amp must be bf16, fp16 or none, got {self.amp!r}")
        if self.global_batch % self.micro_batch:
            raise ValueError(
                f"global_batch ({self.global_batch}) must be a multiple of micro_batch ({self.micro_batch})"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class SampleRandom:
    """The random numbers of one micro-batch, drawn row by row from each example's own generator."""

    def __init__(self, keys: torch.Tensor):  # keys [B] int64, from sample_key
        self.gens = [torch.Generator().manual_seed(int(k)) for k in keys.tolist()]

    def rand(self, *shape: int) -> torch.Tensor:  # [B, *shape] in [0, 1)
        return torch.stack([torch.rand(shape, generator=g) for g in self.gens])

    def randn(self, *shape: int) -> torch.Tensor:  # [B, *shape] standard normal
        return torch.stack([torch.randn(shape, generator=g) for g in self.gens])

    def randint(self, high: int, *shape: int) -> torch.Tensor:  # [B, *shape] in [0, high)
        return torch.stack([torch.randint(0, high, shape, generator=g) for g in self.gens])


def sample_key(seed: int, epoch: int, index: int) -> int:
    """The seed of example ``index``'s generator in ``epoch`` (a hash: no two nearby triples collide)."""
    return int(np.random.SeedSequence((seed, epoch, index)).generate_state(1)[0])


class KeyedDataset(Dataset):
    """A training set whose items also carry their ``sample_key`` for the epoch."""

    def __init__(self, ds: Dataset, seed: int):
        self.ds, self.seed, self.epoch = ds, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.ds[i], "sample_key": sample_key(self.seed, self.epoch, i)}


class TrainTask(Protocol):
    """What a stage adds to the shared loop."""

    kind: str  # checkpoint "kind"
    model_config: dict[str, Any]  # stored in checkpoints; a resumed run must match it

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], rand: SampleRandom
    ) -> tuple[torch.Tensor, int]:
        """Mean loss of a micro-batch (already on the device) and how many units it counted (for units/s)."""

    def validate(self, model: torch.nn.Module) -> float:
        """Validation loss (main rank only; lower is better); NaN when there is no validation data."""

    def extras(self) -> dict[str, Any]:
        """Further checkpoint entries (tokenizer hash, data stats, ...)."""

    def on_eval(self, model: torch.nn.Module, writer: Any, step: int) -> None:
        """Called on the main rank after each validation (samples for TensorBoard)."""


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX): there autocast to bf16 speeds
    a tiny planner or renderer step by ~1.4x (docs/benchmarks.md); elsewhere it would be emulated."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def precision(amp: str, device: torch.device) -> tuple[str, str]:
    """The precision a training step runs in for the configured ``amp`` on ``device``, and why:
    (``"bf16"`` | ``"fp16"`` | ``"fp32"``, reason). Parameters, gradients and optimiser state stay fp32."""
    if amp == "none":
        return "fp32", "amp: none"
    if device.type == "cuda":
        return amp, f"autocast on {device}"
    if device.type == "cpu" and amp == "bf16":
        if cpu_has_bf16():
            return "bf16", "autocast on a CPU with native bf16 (AVX512-BF16/AMX)"
        return "fp32", "this CPU has no native bf16 arithmetic (AVX512-BF16/AMX), so autocast would be slower"
    return "fp32", f"amp {amp} runs on CUDA only"


def autocast(dtype: str, device: torch.device):
    """The autocast context of a :func:`precision` result."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


class StageConfig(Protocol):
    """What fit() reads of a stage's config (SymbolicConfig, RendererTrainingConfig, AlignmentConfig)."""

    train: LoopConfig
    out_dir: str
    run_dir: str
    run_name: str


# Training settings that do not change what a run learns: a checkpoint made with other values resumes (or counts
# as up to date) under the config's. Any other train.* setting must match, so a changed setting is not skipped.
RESUMABLE_ACROSS = {"max_steps", "eval_every", "log_every", "sample_every", "num_workers", "device", "compile"}


def check_same_training(last: Path, trained: dict[str, Any], wanted: dict[str, Any]) -> None:
    """A checkpoint resumes only under the training settings it was made with (keys it predates are not
    compared); otherwise a one-line error names the first setting that differs."""
    for key in sorted(set(trained) & set(wanted) - RESUMABLE_ACROSS):
        if trained[key] != wanted[key]:
            raise ValueError(
                f"{last}: trained with train.{key}={trained[key]!r}, the config says {wanted[key]!r}; "
                f"delete {last.parent} (or pass --force to run_full_pipeline.sh) to train anew"
            )


def fit(
    model: torch.nn.Module,
    task: TrainTask,
    train_ds: Dataset,
    stage: StageConfig,
    info: DistInfo,
    stop_after: int | None = None,
    expect_tokenizer: str | None = None,
    trainable: list[torch.nn.Parameter] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (or resume from ``stage.out_dir/last.pt``) to ``stage.train.max_steps``.

    Checkpoints carry the whole stage config; TensorBoard logs go to ``run_dir/run_name``.
    ``stop_after`` ends early at that step with a checkpoint (a planned interruption). Returns
    step, val_loss, best_val and the trained model (its EMA weights when EMA is on).
    """
    cfg, out_dir, run_dir = stage.train, Path(stage.out_dir), Path(stage.run_dir) / stage.run_name
    config = asdict(stage)
    dev = info.device
    last = out_dir / "last.pt"
    state = load_checkpoint(last, expect_tokenizer) if last.is_file() else None
    if state is not None and state.get("model_config") != task.model_config:
        raise ValueError(
            f"{last}: model config differs from the config; delete {last.parent} (or pass --force to "
            "run_full_pipeline.sh) or use another out_dir"
        )
    if state is not None:
        check_same_training(last, state.get("config", {}).get("train", {}), config["train"])
    ema = copy.deepcopy(model).requires_grad_(False).eval() if cfg.ema_decay else None
    if state is not None and state["step"] >= cfg.max_steps and (out_dir / "best.pt").is_file():
        if info.is_main:
            log.info("up to date: %s is at step %d of %d (delete it to retrain)", last, state["step"], cfg.max_steps)
        model.load_state_dict(state["ema"] if ema is not None else state["model"])
        return {
            "step": state["step"],
            "val_loss": state["val_loss"],
            "best_val": state["best_val"],
            "model": model,
            "up_to_date": True,
        }

    model.to(dev)
    if ema is not None:
        ema.to(dev)
    per_rank = cfg.global_batch // info.world_size
    if cfg.global_batch % info.world_size or per_rank % cfg.micro_batch:
        raise ValueError(
            f"global_batch {cfg.global_batch} must split into "
            f"world_size {info.world_size} x micro_batch {cfg.micro_batch}"
        )
    if len(train_ds) == 0:
        raise RuntimeError("the training set is empty")
    accum = per_rank // cfg.micro_batch
    sampler = ResumableDistributedSampler(len(train_ds), info.rank, info.world_size, cfg.seed)
    params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg.lr, cfg.weight_decay, tuple(cfg.betas), fused=dev.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    )
    dtype, why = precision(cfg.amp, dev)
    if info.is_main:
        log.info("precision: %s (%s)", dtype, why)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == "fp16")
    keyed = KeyedDataset(train_ds, cfg.seed)
    step, epoch, batch_in_epoch, best_val = 0, 0, 0, math.inf
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        best_val = state["best_val"]
        set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
        if info.is_main:
            log.info("resumed from %s at step %d", last, step)

    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if info.enabled:
        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if ema is not None and state is None:  # DDP gave every rank rank 0's initial weights: so must the EMA
            ema.load_state_dict(raw_model.state_dict())
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(run_dir))

    def batches():
        nonlocal epoch, batch_in_epoch
        while True:
            sampler.set_epoch(epoch, batch_in_epoch * cfg.micro_batch)
            keyed.set_epoch(epoch)
            own = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # not the global RNG: exact resume
            loader = DataLoader(
                keyed, cfg.micro_batch, sampler=sampler, num_workers=cfg.num_workers, drop_last=True, generator=own
            )
            for b in loader:
                batch_in_epoch += 1
                yield b
            epoch, batch_in_epoch = epoch + 1, 0

    def checkpoint(path: Path, val: float) -> None:
        rngs = [rng_state()]
        if info.enabled:  # every rank's RNG, so each resumes its own stream
            rngs = [None] * info.world_size
            torch.distributed.all_gather_object(rngs, rng_state())
        if info.is_main:
            save_checkpoint(
                path,
                {
                    "kind": task.kind,
                    "model": raw_model.state_dict(),
                    **({"ema": ema.state_dict()} if ema is not None else {}),
                    "model_config": task.model_config,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "best_val": best_val,
                    "val_loss": val,
                    "precision": dtype,
                    "rng": rngs,
                    "config": config,
                    **task.extras(),
                },
            )

    it = batches()
    forked = [dev.index] if dev.type == "cuda" else []
    model.train()
    t_log, units, val = time.time(), 0, float("nan")
    while step < min(cfg.max_steps, stop_after or cfg.max_steps):
        loss_sum = torch.zeros((), device=dev)
        for micro in range(accum):
            batch = next(it)
            rand = SampleRandom(batch.pop("sample_key"))
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            sync = contextlib.nullcontext() if (not info.enabled or micro == accum - 1) else model.no_sync()
            with sync, autocast(dtype, dev):
                loss, n = task.loss(model, batch, rand)
                scaler.scale(loss / accum).backward()
            loss_sum += loss.detach() / accum
            units += n * info.world_size
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        step += 1
        if ema is not None:  # decay warms up, so early EMA weights are not dominated by the initialisation
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), raw_model.parameters()):
                    e.lerp_(p.detach(), 1 - decay)
                for e, b in zip(ema.buffers(), raw_model.buffers()):
                    e.copy_(b)
        if step % cfg.log_every == 0 or step == 1:  # the all-reduce syncs the device: only when logging
            loss_avg = float(all_reduce_mean(loss_sum, info))
        if info.is_main and (step % cfg.log_every == 0 or step == 1):
            rate = units / max(time.time() - t_log, 1e-9)
            lr = sched.get_last_lr()[0]
            for tag, v in (("train/loss", loss_avg), ("lr", lr), ("grad_norm", float(gnorm)), ("units_per_s", rate)):
                writer.add_scalar(tag, v, step)
            log.info("step %d/%d loss %.4f lr %.2e grad %.2f %.0f/s", step, cfg.max_steps, loss_avg, lr, gnorm, rate)
            t_log, units = time.time(), 0
        if step % cfg.eval_every == 0 or step in (cfg.max_steps, stop_after):
            judged = ema if ema is not None else raw_model
            if info.is_main:
                with torch.random.fork_rng(devices=forked):  # validation leaves the training RNG as it was
                    val = task.validate(judged)
                judged.train(judged is raw_model)
                writer.add_scalar("val/loss", val, step)
                log.info("step %d val loss %.4f", step, val)
                best_val = min(best_val, val)
            if info.enabled:
                obj = [best_val, val]
                torch.distributed.broadcast_object_list(obj, src=0)
                best_val, val = obj
            checkpoint(last, val)
            if info.is_main:
                if math.isnan(val) and not (out_dir / "best.pt").is_file():
                    log.warning("no validation data: best.pt is the latest checkpoint at every evaluation")
                if val == best_val or math.isnan(val):
                    copy_atomic(last, out_dir / "best.pt")
                with torch.random.fork_rng(devices=forked):
                    task.on_eval(judged, writer, step)
                judged.train(judged is raw_model)
    if writer is not None:
        writer.close()
    if info.enabled:  # no rank leaves while rank 0 still evaluates or writes
        torch.distributed.barrier()
    return {"step": step, "val_loss": val, "best_val": best_val, "model": ema if ema is not None else raw_model}
