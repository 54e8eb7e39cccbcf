"""Stage 5 orchestration: pick the checkpoints, load the models once, make songs and write every artefact.

:class:`SongMaker` is what stage 5 and the web demo (``src.demo``) share: the same request and seed give
the same MIDI through either.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path
from typing import Any

from src.data.render import find_soundfont, render_midi
from src.generation.config import GenerationConfig
from src.generation.neural_render import NeuralRenderer
from src.generation.outputs import write_json, write_midi, write_picture, write_wav
from src.generation.song import Progress, SongGenerator, SongRequest
from src.models.builders import codec_from_checkpoint, load_planner
from src.models.text_encoder import embed_texts
from src.music.form import parse_form
from src.utils.io import sha256_file

log = logging.getLogger("generate")


def select_checkpoint(cfg: GenerationConfig, explicit: str | None) -> tuple[Path, str]:
    """The given path, else the aligned checkpoint when it exists, else the supervised one; and why."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"--symbolic_ckpt {path} not found")
        return path, "--symbolic_ckpt"
    candidates = [Path(c.format(preset=cfg.preset)) for c in cfg.checkpoints]
    for i, path in enumerate(candidates):
        if path.is_file():
            missing = ", ".join(map(str, candidates[:i]))
            first = "the first of the configured checkpoints that exists"
            return path, f"{missing} not found; the next in order" if missing else first
    raise FileNotFoundError(
        f"no planner checkpoint ({', '.join(map(str, candidates))}); train one with: "
        f"python 02_train_symbolic.py --config config/symbolic_{cfg.preset}.yaml"
    )


def select_renderer(
    cfg: GenerationConfig, explicit: str | None, skip: bool, planner_tokenizer: str
) -> tuple[NeuralRenderer | None, str, str]:
    """The neural renderer when asked for or when the preset's checkpoint exists; else FluidSynth (None)."""
    if skip:
        return None, "", "--skip_neural_render"
    path = Path(explicit or cfg.renderer_checkpoint.format(preset=cfg.preset))
    if not path.is_file():
        if explicit:
            raise FileNotFoundError(f"--renderer_ckpt {path} not found; train one with: python 03_train_renderer.py")
        return (
            None,
            "",
            f"no neural renderer checkpoint at {path} (train one with: "
            f"python 03_train_renderer.py --config config/renderer_{cfg.preset}.yaml)",
        )
    neural = NeuralRenderer(path, cfg.neural)
    if neural.tokenizer_hash != planner_tokenizer:
        raise ValueError(
            f"{path}: renderer trained with tokenizer {neural.tokenizer_hash}, the planner with {planner_tokenizer}"
        )
    name = f"neural mel diffusion ({path}, step {neural.step}, {cfg.neural.steps} DDIM steps) + Griffin-Lim"
    return neural, name, "--renderer_ckpt" if explicit else "the preset's renderer checkpoint exists"


class SongMaker:
    """The planner, the renderer and the prompt encoder, loaded once; :meth:`make` writes one song."""

    def __init__(
        self,
        cfg: GenerationConfig,
        symbolic_ckpt: str | None = None,
        renderer_ckpt: str | None = None,
        skip_neural_render: bool = False,
    ):
        self.cfg = cfg
        ckpt, why = select_checkpoint(cfg, symbolic_ckpt)
        model, state = load_planner(ckpt)
        kind = "aligned" if state.get("kind") == "aligned_planner" else "supervised"
        log.info("planner checkpoint: %s (%s, step %d), because %s", ckpt, kind, state["step"], why)
        self.checkpoint = {
            "path": str(ckpt),
            "sha256": sha256_file(ckpt)[:16],
            "kind": kind,
            "step": state["step"],
            "tokenizer_hash": state["tokenizer_hash"],
            "reason": why,
        }
        self.neural, self.neural_name, self.neural_reason = select_renderer(
            cfg, renderer_ckpt, skip_neural_render, state["tokenizer_hash"]
        )
        self._soundfont = ""
        self.generator = SongGenerator(model, codec_from_checkpoint(state), state["data_stats"], cfg.controls)
        self._texts: dict[str, Any] = {}

    @property
    def soundfont(self) -> str:
        if not self._soundfont:
            self._soundfont = find_soundfont(self.cfg.soundfont)  # FileNotFoundError names the install command
        return self._soundfont

    def embed(self, prompts: list[str]) -> None:
        """Encode prompts in one batch (stage 5 encodes all of a run's prompts together)."""
        new = sorted({p for p in prompts if p and p not in self._texts})
        if new:
            self._texts.update(zip(new, embed_texts(new)))

    def make(
        self, req: SongRequest, stem: str, out_dir: Path, neural: bool = True, progress: Progress | None = None
    ) -> list[Path]:
        """Generate ``req`` and write <stem>.mid/.wav/.json/.png into ``out_dir``; returns their paths.

        ``neural``: render with the neural renderer when one is loaded (else FluidSynth, and the JSON says why).
        """
        self.embed([req.prompt])
        sections = parse_form(req.form, req.bars_per_section)
        song = self.generator.generate(req, self._texts.get(req.prompt), sections, progress)
        for note in song.notes:
            log.warning("%s: %s", stem, note)
        out_dir.mkdir(parents=True, exist_ok=True)
        midi, wav, meta, png = (out_dir / f"{stem}.{ext}" for ext in ("mid", "wav", "json", "png"))
        write_midi(song.score, midi)
        seconds = song.facts["duration_s"] + 1.0  # the song plus a release tail
        render_facts: dict[str, Any] = {}
        if neural and self.neural is not None:
            renderer, why = self.neural_name, self.neural_reason
            sr = self.neural.sample_rate
            audio, render_facts = self.neural.render_score(song.score, seconds, req.seed, progress)
        else:
            why = self.neural_reason if self.neural is None else "FluidSynth asked for"
            renderer = f"fluidsynth ({self.soundfont})"
            sr = self.cfg.sample_rate
            if progress:
                progress("render", 0, 1)
            audio = render_midi(midi, sr, self.soundfont, seconds)
            if progress:
                progress("render", 1, 1)
        log.info("%s: audio from %s, because %s", stem, renderer, why)
        write_wav(audio, sr, wav)
        settings = {**dataclasses.asdict(req), "controls": dataclasses.asdict(self.cfg.controls)}
        write_json(
            {
                "name": stem,
                "settings": settings,
                "seed": req.seed,
                "checkpoint": self.checkpoint,
                "renderer": renderer,
                "renderer_reason": why,
                "render": render_facts,
                "facts": song.facts,
                "notes": song.notes,
                "audio_seconds": round(len(audio) / sr, 3),
                "sample_rate": sr,
            },
            meta,
        )
        title = f"{stem}: {req.style.lower() if req.style else 'no style'}, {req.emotion.lower()}, "
        write_picture(song.score, audio, sr, sections, png, title + f"{req.tempo:g} BPM, {song.facts['estimated_key']}")
        log.info(
            "%s: %d bars, %d notes, %s, %.1f s",
            stem,
            song.facts["bars"],
            song.facts["notes"],
            ", ".join(song.facts["instruments"]),
            song.facts["duration_s"],
        )
        return [midi, wav, meta, png]


def run_generation(
    jobs: list[tuple[SongRequest, str]],
    cfg: GenerationConfig,
    out_dir: Path,
    num_samples: int,
    symbolic_ckpt: str | None,
    renderer_ckpt: str | None,
    skip_neural_render: bool,
) -> list[Path]:
    maker = SongMaker(cfg, symbolic_ckpt, renderer_ckpt, skip_neural_render)
    if maker.neural is None:
        log.info("audio: fluidsynth (%s), because %s", maker.soundfont, maker.neural_reason)
    maker.embed([req.prompt for req, _ in jobs])
    written: list[Path] = []
    for (req, name), i in itertools.product(jobs, range(num_samples)):
        r = dataclasses.replace(req, seed=req.seed + i)
        written += maker.make(r, name if num_samples == 1 else f"{name}_{i + 1}", out_dir)
    return written
