"""Stage 4: DPO alignment of the supervised planner on synthetic, on-policy and human pairs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.data.preferences import Pair, load_pairs
from src.data.token_store import TokenStore
from src.models.builders import codec_from_checkpoint, load_planner
from src.models.text_encoder import caption_embeddings, embed_texts
from src.music.scoring import SCORER_VERSION
from src.music.theory import key_name, parse_key
from src.music.tokenizer import TokenCodec
from src.training.datasets import PreferenceDataset
from src.training.distributed import DistInfo, setup_distributed
from src.training.dpo import AlignmentConfig, DPOTask, on_policy_pairs, reference_copy, set_dropout
from src.training.loop import fit
from src.utils.cache import cached_step, fingerprint
from src.utils.config import save_config
from src.utils.io import read_jsonl, sha256_file

log = logging.getLogger("align")


def build_on_policy(cfg: AlignmentConfig, model, codec, state: dict, out_dir: Path) -> Path | None:
    """Sample and score on-policy pairs once (cached by checkpoint and settings); their file's path."""
    if not cfg.on_policy.conditions:
        return None
    path = out_dir / "on_policy_pairs.json"
    fp = fingerprint(sha256_file(cfg.symbolic_ckpt), dataclasses.asdict(cfg.on_policy), cfg.train.seed, SCORER_VERSION)

    def sample() -> dict[str, Any]:
        manifest = read_jsonl(Path(cfg.data_dir) / "manifest.jsonl")
        store, text_emb = TokenStore(cfg.data_dir), caption_embeddings(cfg.data_dir)
        relative = state["data_stats"].get("key_relative", False)
        pairs: list[dict] = []
        for split, n in (("train", cfg.on_policy.conditions), ("validation", cfg.on_policy.validation_conditions)):
            if not n:
                continue
            rows = [r for r in manifest if r["split"] == split]
            op = dataclasses.replace(cfg.on_policy, conditions=n)
            made = on_policy_pairs(model, codec, rows, store, text_emb, op, cfg.train.seed, relative, split)
            log.info("on-policy pairs (%s): %d from %d conditions", split, len(made), n)
            pairs += made
        return {"tokenizer_hash": state["tokenizer_hash"], "pairs": pairs}

    cached_step("on-policy pairs", path, fp, sample)
    return path


def pair_text_embeddings(pairs: list, data_dir: str) -> dict[str, np.ndarray]:
    """Prompt text -> embedding: stage 1's cached caption embeddings, the encoder for any other text."""
    rows = read_jsonl(Path(data_dir) / "manifest.jsonl")
    cached = dict(zip((r["caption"] for r in rows), caption_embeddings(data_dir)))
    texts = {p.conditions.get("text", "") for p in pairs} - {""}
    new = sorted(texts - set(cached))
    return {**{t: cached[t] for t in texts & set(cached)}, **dict(zip(new, embed_texts(new)))}


def without_sources(pairs: list, cfg: AlignmentConfig) -> list:
    """The pairs whose source ``cfg.exclude_sources`` does not name; a name that matches no pair is an error."""
    sources = {p.source for p in pairs}
    unknown = sorted(set(cfg.exclude_sources) - sources)
    if unknown:
        raise ValueError(f"exclude_sources: {', '.join(unknown)} match no pair (sources: {', '.join(sorted(sources))})")
    kept = [p for p in pairs if p.source not in cfg.exclude_sources]
    if len(kept) < len(pairs):
        log.info("left out %d pairs from %s (exclude_sources)", len(pairs) - len(kept), ", ".join(cfg.exclude_sources))
    return kept


def on_tonic_c(pairs: list[Pair], codec: TokenCodec) -> list[Pair]:
    """For a key-relative planner: every pair moved onto tonic C (prompt and both continuations by one shift) with
    its key condition; a pair that cannot move without leaving the vocabulary is left out and counted."""
    out, left = [], 0
    for p in pairs:
        if not p.conditions.get("key"):
            out.append(p)
            continue
        tonic, mode = parse_key(p.conditions["key"])
        moved = codec.to_tonic_c([np.asarray(p.prompt), np.asarray(p.chosen), np.asarray(p.rejected)], tonic)
        if moved is None:
            left += 1
            continue
        (prompt, chosen, rejected), _ = moved
        conditions = {**p.conditions, "key": key_name(0, mode)}
        lists = {"prompt": prompt.tolist(), "chosen": chosen.tolist(), "rejected": rejected.tolist()}
        out.append(dataclasses.replace(p, conditions=conditions, **lists))
    if left:
        log.info("left out %d pairs that do not fit the vocabulary on tonic C (key-relative planner)", left)
    return out


def train(cfg: AlignmentConfig, info: DistInfo | None = None, stop_after: int | None = None) -> dict[str, Any]:
    info = info or setup_distributed(cfg.train.device)
    tc, out_dir = cfg.train, Path(cfg.out_dir)
    torch.manual_seed(tc.seed + info.rank)
    policy, state = load_planner(cfg.symbolic_ckpt, cfg.data_dir)
    codec = codec_from_checkpoint(state)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [Path(cfg.pref_data), *map(Path, cfg.extra_pref_data)]
    if info.is_main:
        save_config(cfg, out_dir / "alignment_config.yaml")
        build_on_policy(cfg, policy, codec, state, out_dir)
    if info.enabled:
        torch.distributed.barrier()
    if cfg.on_policy.conditions:
        files.append(out_dir / "on_policy_pairs.json")
    pairs = without_sources([p for f in files for p in load_pairs(f, codec.tok, state["tokenizer_hash"])], cfg)
    if state["data_stats"].get("key_relative"):  # the planner was trained on tonic C: so are its pairs
        pairs = on_tonic_c(pairs, codec)
    train_pairs = [p for p in pairs if p.split != "validation"]
    val_pairs = [p for p in pairs if p.split == "validation"]
    text_emb = pair_text_embeddings(pairs, cfg.data_dir)
    mcfg = policy.cfg
    train_ds = PreferenceDataset(train_pairs, mcfg, text_emb, codec)
    val_ds = PreferenceDataset(val_pairs, mcfg, text_emb, codec)
    reference = reference_copy(policy)
    set_dropout(policy, tc.policy_dropout)
    policy.train()
    if info.is_main:
        by_source: dict[str, int] = {}
        for p in train_pairs:
            by_source[p.source.split(":")[0]] = by_source.get(p.source.split(":")[0], 0) + 1
        log.info(
            "DPO: %d train pairs %s, %d validation; beta %.3g; reference %s (step %d)",
            len(train_pairs),
            by_source,
            len(val_pairs),
            tc.beta,
            cfg.symbolic_ckpt,
            state["step"],
        )
    ref_sha = sha256_file(cfg.symbolic_ckpt)[:16]
    last = out_dir / "last.pt"
    if last.is_file():  # resuming (or skipping) is only right for the same supervised planner
        old = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("reference", {})
        if old.get("sha256") != ref_sha:
            raise RuntimeError(
                f"{last}: aligned from another planner ({old.get('path')}, {old.get('sha256')}) than "
                f"{cfg.symbolic_ckpt} ({ref_sha}); delete {out_dir} (or pass --force to run_full_pipeline.sh)"
            )
    extras = {
        "tokenizer_hash": state["tokenizer_hash"],
        "tokenizer_json": state["tokenizer_json"],
        "data_stats": state["data_stats"],
        "data_dir": cfg.data_dir,
        "reference": {"path": cfg.symbolic_ckpt, "sha256": ref_sha, "step": state["step"]},
        "pair_files": [str(f) for f in files],
    }
    task = DPOTask(cfg, reference, state, val_ds, extras)
    result = fit(policy, task, train_ds, cfg, info, stop_after, state["tokenizer_hash"])
    return {
        **result,
        "params": policy.num_params(),
        "val_stats": getattr(task, "val_stats", {}),
        "pairs": len(train_pairs),
        "reference": reference,
    }
