"""Config -> objects, in one place: models from configs or checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from src.models.audio_renderer import AudioRenderer, RendererConfig
from src.models.diffusion import DiffusionConfig
from src.models.symbolic_planner import PlannerConfig, SymbolicPlanner
from src.music.tokenizer import TokenCodec, tokenizer_hash
from src.utils.checkpoint import load_checkpoint


def resolve_planner_config(cfg: PlannerConfig, codec: TokenCodec) -> PlannerConfig:
    """Fill what the tokenizer decides: vocabulary size, the bar-starting token ids and each token's pitch classes."""
    vocab = len(codec.bpe_to_base)
    if cfg.vocab_size not in (0, vocab):
        raise ValueError(f"model.vocab_size={cfg.vocab_size} but the tokenizer has {vocab} tokens (use 0 = auto)")
    pcs = []  # per token, its notes' pitch classes: only a key profile reads them
    if cfg.key_profile:
        pcs = [[int(p) % 12 for p in codec.base_pitch_of[b] if p >= 0] for b in codec.bpe_to_base]
    starts = np.flatnonzero(codec.starts_bar).tolist()
    return dataclasses.replace(cfg, vocab_size=vocab, bar_token_ids=starts, token_pitch_classes=pcs)


def planner_without_tokenizer(cfg: PlannerConfig, vocab: int) -> PlannerConfig:
    """A config's model at a vocabulary size with no tokenizer behind it (parameter counts, throughput): token 4
    starts a bar and no token holds a note."""
    pcs = [[] for _ in range(vocab)] if cfg.key_profile else []
    return dataclasses.replace(cfg, vocab_size=vocab, bar_token_ids=[4], token_pitch_classes=pcs)


def build_planner(cfg: PlannerConfig) -> SymbolicPlanner:
    return SymbolicPlanner(cfg)


def load_planner(path: str | Path, data_dir: str | Path | None = None) -> tuple[SymbolicPlanner, dict]:
    """Rebuild the planner from a checkpoint alone (its stored config), with its EMA weights when it has
    them (validation and best.pt judged those); eval mode.

    With ``data_dir``, the checkpoint must match that directory's tokenizer.
    """
    expect = tokenizer_hash(Path(data_dir) / "tokenizer.json") if data_dir is not None else None
    state = load_checkpoint(path, expect, made_by="python 02_train_symbolic.py")
    model = SymbolicPlanner(PlannerConfig(**state["model_config"]))
    model.load_state_dict(state["ema"] if "ema" in state else state["model"])
    return model.eval(), state


def resolve_renderer_config(cfg: RendererConfig, codec: TokenCodec, pairs_index: dict) -> RendererConfig:
    """Fill what the data decides: vocabulary, token window and the mel grid (0 = auto; else must agree)."""
    data = {
        "vocab_size": len(codec.bpe_to_base),
        "max_tokens": pairs_index["max_tokens"],
        "n_mels": pairs_index["mel"]["n_mels"],
        "frames": pairs_index["segment_frames"],
    }
    for key, value in data.items():
        if getattr(cfg, key) not in (0, value):
            raise ValueError(f"model.{key}={getattr(cfg, key)} but the audio pairs have {value} (use 0 = auto)")
    return dataclasses.replace(cfg, **data)


def load_renderer(path: str | Path) -> tuple[AudioRenderer, dict]:
    """Rebuild the renderer from a checkpoint alone, with its EMA weights when it has them; eval mode."""
    state = load_checkpoint(path, made_by="python 03_train_renderer.py")
    if state.get("kind") != "audio_renderer":
        raise ValueError(f"{path}: not a renderer checkpoint (kind {state.get('kind')!r})")
    mc = dict(state["model_config"])
    mc["diffusion"] = DiffusionConfig(**mc["diffusion"])
    model = AudioRenderer(RendererConfig(**mc))
    model.load_state_dict(state.get("ema", state["model"]))
    return model.eval(), state


def load_codec(data_dir: str | Path) -> TokenCodec:
    return TokenCodec.from_file(Path(data_dir) / "tokenizer.json")


def codec_from_checkpoint(state: dict) -> TokenCodec:
    """The tokenizer a checkpoint was trained with (it carries the tokenizer's JSON)."""
    import tempfile

    text = state["tokenizer_json"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        if tokenizer_hash(path) != state["tokenizer_hash"]:
            raise ValueError(f"checkpoint's tokenizer JSON does not match its hash {state['tokenizer_hash']}")
        return TokenCodec.from_file(path)
