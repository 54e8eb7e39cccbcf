"""DPO, the stage-4 training task (Rafailov et al. 2023, "Direct Preference Optimization").

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

log pi(y|x) sums the policy's token log-probabilities over the **continuation** tokens only
(a label mask: targets of the prompt and of padding are IGNORE), with chosen and rejected
sharing the prompt and the conditions. Corruptions change a passage's length systematically
(drop_notes shortens it by ~32 tokens, off_grid and stuck_notes lengthen it), and with summed
log-probabilities a policy that merely lowers every token's probability widens the margin of
every pair whose rejected side is longer. ``length_normalised`` (the default) scales each side's
log-ratio to the pair's mean length, L̄ / |y| * log(pi / ref)(y): the same scale as the summed form
(the same beta), and a shift common to every token no longer moves the loss.
The reference is a frozen copy of the supervised planner in eval mode. An optional supervised
term adds the chosen continuation's mean NLL.
On-policy pairs: several continuations sampled from the supervised model per condition, scored
by the heuristic scorer, best against worst when the margin is large enough.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from src.models.sampling import Grammar, SamplingConfig, generate
from src.music.conditions import CONDITION_TENSORS, Conditions, pair_condition_dict
from src.music.conditions import batch as condition_batch
from src.music.scoring import ScorerConfig, score_tokens
from src.music.tokenizer import BOS, IGNORE, music_ids
from src.training.loop import LoopConfig

log = logging.getLogger("alignment")


@dataclass
class DPOTrainConfig(LoopConfig):
    beta: float = 0.1
    length_normalised: bool = True  # log-ratios per token x the pair's mean length (see the module's docstring)
    sft_weight: float = 0.0  # weight of the chosen continuation's NLL (0 = pure DPO)
    policy_dropout: float = 0.0  # dropout inside the policy while aligning (noisy log-probs hurt DPO)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"train.beta must be > 0, got {self.beta}")


@dataclass
class OnPolicyConfig:
    conditions: int = 0  # training pieces whose conditions + opening bars prompt the sampler (0 = off)
    validation_conditions: int = 0  # validation pieces prompting held-out pairs: their DPO loss is a validation loss
    samples: int = 4  # continuations per condition
    prompt_bars: int = 2
    continuation_bars: int = 4
    max_new_tokens: int = 200
    temperature: float = 1.0
    top_p: float = 0.95
    min_margin: float = 0.05  # heuristic score gap needed to make a pair
    scorer: ScorerConfig = field(default_factory=ScorerConfig)  # the heuristic that ranks the samples

    def __post_init__(self) -> None:
        for name in ("conditions", "validation_conditions", "samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"on_policy.{name} must be >= 0, got {getattr(self, name)}")
        if self.validation_conditions and not self.conditions:
            raise ValueError("on_policy.validation_conditions needs on_policy.conditions > 0 (on-policy pairs are off)")


@dataclass
class AlignmentConfig:
    preset: str = "tiny"  # its name fills every {preset} of the config file
    symbolic_ckpt: str = "checkpoints/symbolic/tiny/best.pt"
    data_dir: str = "data/processed/tiny"
    pref_data: str = "data/subsets/tiny/preference_data.json"
    extra_pref_data: list[str] = field(default_factory=list)  # e.g. human-labelled pair files
    exclude_sources: list[str] = field(default_factory=list)  # pair sources left out, e.g. synthetic:stuck_notes
    out_dir: str = "checkpoints/aligned/tiny"
    run_dir: str = "runs/aligned"
    run_name: str = "tiny"
    on_policy: OnPolicyConfig = field(default_factory=OnPolicyConfig)
    train: DPOTrainConfig = field(default_factory=DPOTrainConfig)


def sequence_logps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cond: dict[str, torch.Tensor]):
    """Per sequence: summed log-prob of the target tokens (y != IGNORE), their count, and the logits."""
    logits = model(x, cond).float()  # (B, T, V)
    mask = y != IGNORE
    logp = torch.gather(logits.log_softmax(-1), 2, y.clamp_min(0)[..., None])[..., 0]
    return (logp * mask).sum(1), mask.sum(1), logits


def dpo_loss(
    pi_chosen: torch.Tensor,
    pi_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    lengths: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO loss (Rafailov et al. 2023, eq. 7) from summed log-probs [B]; plus its implicit rewards.
    ``lengths`` (chosen, rejected token counts [B]) scales each log-ratio to the pair's mean length."""
    scale_c = scale_r = 1.0
    if lengths is not None:
        n_c, n_r = (n.clamp_min(1).to(pi_chosen.dtype) for n in lengths)
        mean = (n_c + n_r) / 2
        scale_c, scale_r = mean / n_c, mean / n_r
    reward_c = beta * scale_c * (pi_chosen - ref_chosen)
    reward_r = beta * scale_r * (pi_rejected - ref_rejected)
    loss = -F.logsigmoid(reward_c - reward_r).mean()
    return loss, {
        "reward_chosen": reward_c.detach().mean(),
        "reward_rejected": reward_r.detach().mean(),
        "margin": (reward_c - reward_r).detach().mean(),
        "accuracy": (reward_c > reward_r).float().detach().mean(),
    }


class DPOTask:
    """The shared loop's stage-4 task: policy vs a frozen reference on preference pairs."""

    kind = "aligned_planner"

    def __init__(self, cfg: AlignmentConfig, reference: torch.nn.Module, state: dict, val_ds, extras: dict):
        self.cfg, self.beta = cfg, cfg.train.beta
        self.reference = reference
        self.model_config = state["model_config"]
        self.val_ds, self._extras = val_ds, extras
        self.last: dict[str, float] = {}

    def _forward(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cond = {k: batch[k] for k in CONDITION_TENSORS}
        both = {k: torch.cat([v, v]) for k, v in cond.items()}
        x = torch.cat([batch["x_chosen"], batch["x_rejected"]])
        y = torch.cat([batch["y_chosen"], batch["y_rejected"]])
        pi, n, logits = sequence_logps(model, x, y, both)
        with torch.no_grad():
            self.reference.to(x.device)
            ref, _, ref_logits = sequence_logps(self.reference, x, y, both)
        B = batch["x_chosen"].shape[0]
        lengths = (n[:B], n[B:]) if self.cfg.train.length_normalised else None
        loss, stats = dpo_loss(pi[:B], pi[B:], ref[:B], ref[B:], self.beta, lengths)
        sft = -(pi[:B] / n[:B].clamp_min(1)).mean()
        if self.cfg.train.sft_weight:
            loss = loss + self.cfg.train.sft_weight * sft
        with torch.no_grad():  # KL(policy || reference) per continuation token of the chosen sequences
            mask = (y[:B] != IGNORE)[..., None]
            lp, lr = logits[:B].log_softmax(-1), ref_logits[:B].log_softmax(-1)
            kl = ((lp.exp() * (lp - lr)) * mask).sum() / mask.sum().clamp_min(1)
        return loss, {**stats, "sft_nll": sft.detach(), "kl": kl}

    def loss(self, model, batch, gen):
        loss, stats = self._forward(model, batch)
        self.last = {k: float(v) for k, v in stats.items()}
        return loss, int(batch["x_chosen"].shape[0])

    @torch.no_grad()
    def validate(self, model) -> float:
        if not len(self.val_ds):
            return float("nan")
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        totals: dict[str, float] = {}
        n = 0
        for batch in DataLoader(self.val_ds, batch_size=16):
            batch = {k: v.to(dev) for k, v in batch.items()}
            loss, stats = self._forward(model, batch)
            b = batch["x_chosen"].shape[0]
            for k, v in {"loss": loss, **stats}.items():
                totals[k] = totals.get(k, 0.0) + float(v) * b
            n += b
        model.train(was)
        self.val_stats = {k: v / n for k, v in totals.items()}
        return self.val_stats["loss"]

    def extras(self) -> dict[str, Any]:
        return self._extras

    def on_eval(self, model, writer, step: int) -> None:
        if writer is None:
            return
        for k, v in self.last.items():
            writer.add_scalar(f"train/{k}", v, step)
        for k, v in getattr(self, "val_stats", {}).items():
            writer.add_scalar(f"val/{k}", v, step)
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in getattr(self, "val_stats", {}).items()))


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout rate of the planner (modules and attention) to ``p``."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = p


# ----------------------------------------------------------------------------- on-policy pairs


@torch.no_grad()
def sample_continuations(
    model,
    codec,
    row: dict,
    store,
    text_emb: np.ndarray,
    cfg: OnPolicyConfig,
    n: int,
    gen: torch.Generator,
    key_relative: bool = False,
) -> tuple[np.ndarray, list[np.ndarray], int]:
    """The piece's first ``prompt_bars`` bars, ``n`` sampled continuations of ``continuation_bars`` bars and the
    semitones they were moved by (``key_relative``: the piece on tonic C, as the planner was trained, and its key
    condition with it)."""
    ids = store[store.row_to_item[row["row"]]].astype(np.int64)
    ids, shift = codec.piece_on_tonic_c(ids, row["key_tonic"]) if key_relative else (ids, 0)
    starts = codec.bar_token_starts(ids)
    if len(starts) <= cfg.prompt_bars:
        return ids[:0], [], shift
    prompt = ids[: starts[cfg.prompt_bars]]
    # a long prompt keeps its last whole bars (room to sample); the plan starts at the context's first bar
    context, bars_gone = codec.last_bars(prompt, model.cfg.block_size // 2 - 1)
    x0 = torch.tensor([[BOS, *context.tolist()]] * n)

    def cond_fn(bar0: int) -> dict[str, torch.Tensor]:  # bar0: the window's first bar, counted from x0's
        c = Conditions.from_row(row, text_emb[row["row"]], bars_gone + bar0, shift)
        return condition_batch([c] * n, model.cfg)

    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p)
    out = generate(model, cond_fn, x0, cfg.max_new_tokens, sampling, gen, Grammar(codec))
    conts = []
    for seq in out[:, x0.shape[1] :].tolist():
        seq = np.array(music_ids(seq), dtype=np.int64)
        bs = codec.bar_token_starts(seq)
        if len(bs) > cfg.continuation_bars:  # cut at the bar after the last wanted one
            seq = seq[: bs[cfg.continuation_bars]]
        conts.append(seq)
    return prompt, conts, shift


@torch.no_grad()
def on_policy_pairs(
    model,
    codec,
    rows: list[dict],
    store,
    text_emb: np.ndarray,
    cfg: OnPolicyConfig,
    seed: int,
    key_relative: bool = False,
    split: str = "train",
) -> list[dict]:
    """Sample continuations of real openings from the supervised ``model`` (``cfg.conditions`` of ``rows``); pair
    best vs worst by ``cfg.scorer`` (``key_relative``: openings on tonic C, and the pair's key condition with
    them). Each pair is marked with ``split``."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for row in tqdm(
        [rows[i] for i in rng.permutation(len(rows))[: cfg.conditions]], desc="on-policy pairs", unit="condition"
    ):
        prompt, conts, shift = sample_continuations(
            model, codec, row, store, text_emb, cfg, cfg.samples, gen, key_relative
        )
        scored = [
            (score_tokens(c, codec.tok, row["tempo"], row["time_signature"], row["emotion"], cfg.scorer)["total"], i)
            for i, c in enumerate(conts)
            if len(c)
        ]
        if len(scored) < 2:
            continue
        best, worst = max(scored), min(scored)
        if best[0] - worst[0] < cfg.min_margin:
            continue
        pairs.append(
            {
                "id": f"{row['id']}#onpolicy",
                "split": split,
                "conditions": pair_condition_dict(row, 0, shift),
                "prompt": prompt.tolist(),
                "chosen": conts[best[1]].tolist(),
                "rejected": conts[worst[1]].tolist(),
                "source": "on_policy",
                "scores": {"chosen": round(best[0], 4), "rejected": round(worst[0], 4)},
            }
        )
    return pairs


def reference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy in eval mode: no gradients, no dropout."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def model_config_dict(model) -> dict:
    return dataclasses.asdict(model.cfg)
