"""Render a whole song with the mel diffusion renderer: windows -> DDIM mels -> crossfade -> Griffin-Lim.

The song is cut into windows of the renderer's segment length that overlap by ``overlap_frames``;
each window's condition (tokens + piano roll) is built exactly as for the training pairs; the
sampled log-mels are joined with linear crossfades over the overlaps (weights sum to one, so
there is no gap and no level jump) and the whole song's mel is inverted in one Griffin-Lim pass
(phases stay continuous across joins: no clicks). There is no length cap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.data.audio_pairs import notes_in_seconds, piano_roll, window_notes, window_tokens
from src.data.mel import MelConfig
from src.generation.song import Progress
from src.models.audio_renderer import sample_mels
from src.models.builders import codec_from_checkpoint, load_renderer
from src.models.vocoder import mel_to_audio
from src.utils.io import sha256_file

log = logging.getLogger(__name__)


@dataclass
class NeuralRenderConfig:
    steps: int = 50  # DDIM steps
    eta: float = 0.0
    guidance: float = 1.0  # classifier-free guidance scale (1 = off; > 1 doubles the cost)
    overlap_frames: int = 32
    griffin_lim_iters: int = 32
    momentum: float = 0.99
    batch_segments: int = 8
    device: str = "auto"


def crossfade(segments: list[np.ndarray], starts: list[int], total: int, overlap: int) -> np.ndarray:
    """Join [M, F] segments placed at ``starts`` into [M, total]: linear fades over each overlap."""
    M, F = segments[0].shape
    out = np.zeros((M, max(total, starts[-1] + F)), dtype=np.float64)
    weight = np.zeros(out.shape[1])
    for k, (seg, s) in enumerate(zip(segments, starts)):
        w = np.ones(F)
        if k > 0 and overlap:
            w[:overlap] = (np.arange(overlap) + 0.5) / overlap
        if k < len(segments) - 1 and overlap:
            w[F - overlap :] = 1 - (np.arange(overlap) + 0.5) / overlap
        out[:, s : s + F] += seg * w
        weight[s : s + F] += w
    if (weight[:total] <= 0).any():
        raise ValueError("segments leave a gap")
    return (out[:, :total] / weight[:total]).astype(np.float32)


class NeuralRenderer:
    """A trained renderer checkpoint, ready to render scores to audio."""

    def __init__(self, path: str | Path, cfg: NeuralRenderConfig):
        self.cfg, self.path = cfg, Path(path)
        self.model, state = load_renderer(path)
        dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(dev)
        self.mel = MelConfig(**state["mel"])
        self.mean, self.std = state["mel_mean"], state["mel_std"]
        self.tokenizer = codec_from_checkpoint(state).tok
        self.tokenizer_hash = state["tokenizer_hash"]
        self.step = state["step"]
        self.sha256 = sha256_file(path)[:16]
        if not 0 <= cfg.overlap_frames < self.model.cfg.frames // 2:
            raise ValueError(f"overlap_frames must be in [0, {self.model.cfg.frames // 2})")

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    def conditions(self, notes: np.ndarray, starts: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Tokens, mask and roll of each window (as for the training pairs); how many windows were cut short."""
        F, L = self.model.cfg.frames, self.model.cfg.max_tokens
        tokens, rolls, lengths, cut = [], [], [], 0
        for s in starts:
            t0 = self.mel.frames_to_seconds(s)
            w = window_notes(notes, t0, t0 + self.mel.frames_to_seconds(F))
            ids = window_tokens(self.tokenizer, w)
            if len(ids) > L:  # the roll still carries every note
                ids, cut = ids[:L], cut + 1
            tokens.append(np.pad(ids, (0, L - len(ids))))
            lengths.append(len(ids))
            rolls.append(piano_roll(w, F, self.mel))
        tok = torch.from_numpy(np.stack(tokens)).long()
        mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
        roll = torch.from_numpy(np.stack(rolls)).float() / 127.0
        return tok, mask, roll, cut

    def render_notes(
        self, notes: np.ndarray, seconds: float, seed: int = 0, progress: Progress | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Notes (rows of :func:`notes_in_seconds`) -> mono float32 audio of ``seconds`` (at least the notes' end).

        ``progress("render", segments_done, segments)`` is called after each batch of segments."""
        c = self.cfg
        F, O = self.model.cfg.frames, c.overlap_frames
        total = self.mel.seconds_to_frames(max(seconds, float(notes[:, 1].max()) if len(notes) else 0.0)) + 1
        starts = list(range(0, max(total - O, 1), F - O))
        tok, mask, roll, cut = self.conditions(notes, starts)
        gen = torch.Generator().manual_seed(seed)
        mels = []
        for i in range(0, len(starts), c.batch_segments):
            sl = slice(i, i + c.batch_segments)
            x = sample_mels(self.model, tok[sl], mask[sl], roll[sl], c.steps, c.eta, c.guidance, gen)
            mels += list(x[:, 0].float().cpu().numpy() * self.std + self.mean)
            if progress:
                progress("render", len(mels), len(starts))
        mel = crossfade(mels, starts, total, O)
        audio = mel_to_audio(
            torch.from_numpy(mel), self.mel, c.griffin_lim_iters, c.momentum, torch.Generator().manual_seed(seed)
        )
        facts = {
            "checkpoint_sha256": self.sha256,
            "segments": len(starts),
            "segments_with_truncated_tokens": cut,
            "frames": total,
            "ddim_steps": c.steps,
            "guidance": c.guidance,
        }
        return audio, facts

    def render_score(
        self, score: Any, seconds: float, seed: int = 0, progress: Progress | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self.render_notes(notes_in_seconds(score), seconds, seed, progress)
