"""Stage 5 orchestration: pick the checkpoint, generate, render, write every artefact."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path

from src.data.render import find_soundfont, render_midi
from src.generation.config import GenerationConfig
from src.generation.neural_render import NeuralRenderer
from src.generation.outputs import write_json, write_midi, write_picture, write_wav
from src.generation.song import SongGenerator, SongRequest
from src.models.builders import codec_from_checkpoint, load_planner
from src.models.text_encoder import embed_texts
from src.music.form import parse_form
from src.utils.io import sha256_file

log = logging.getLogger("generate")


def select_checkpoint(cfg: GenerationConfig, explicit: str | None) -> Path:
    """The given path, else the aligned checkpoint when it exists, else the supervised one."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"--symbolic_ckpt {path} not found")
        return path
    candidates = [Path(c.format(preset=cfg.preset)) for c in cfg.checkpoints]
    for path in candidates:
        if path.is_file():
            return path
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
        return None, "", f"no neural renderer checkpoint at {path} (train one with: python 03_train_renderer.py)"
    neural = NeuralRenderer(path, cfg.neural)
    if neural.tokenizer_hash != planner_tokenizer:
        raise ValueError(
            f"{path}: renderer trained with tokenizer {neural.tokenizer_hash}, the planner with {planner_tokenizer}"
        )
    name = f"neural mel diffusion ({path}, step {neural.step}, {cfg.neural.steps} DDIM steps) + Griffin-Lim"
    return neural, name, "--renderer_ckpt" if explicit else "the preset's renderer checkpoint exists"


def run_generation(
    jobs: list[tuple[SongRequest, str]],
    cfg: GenerationConfig,
    out_dir: Path,
    num_samples: int,
    symbolic_ckpt: str | None,
    renderer_ckpt: str | None,
    skip_neural_render: bool,
) -> list[Path]:
    ckpt = select_checkpoint(cfg, symbolic_ckpt)
    model, state = load_planner(ckpt)
    kind = "aligned" if state.get("kind") == "aligned_planner" else "supervised"
    log.info("planner checkpoint: %s (%s, step %d)", ckpt, kind, state["step"])
    neural, renderer, why = select_renderer(cfg, renderer_ckpt, skip_neural_render, state["tokenizer_hash"])
    soundfont = find_soundfont(cfg.soundfont) if neural is None else ""
    if neural is None:
        renderer = f"fluidsynth ({soundfont})"
    log.info("audio: %s, because %s", renderer, why)

    codec = codec_from_checkpoint(state)
    generator = SongGenerator(model, codec, state["data_stats"], cfg.controls)
    prompts = sorted({req.prompt for req, _ in jobs if req.prompt})
    texts = {}
    if prompts:
        texts = dict(zip(prompts, embed_texts(prompts)))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ckpt_info = {
        "path": str(ckpt),
        "sha256": sha256_file(ckpt)[:16],
        "kind": kind,
        "step": state["step"],
        "tokenizer_hash": state["tokenizer_hash"],
    }
    for (req, name), i in itertools.product(jobs, range(num_samples)):
        r = dataclasses.replace(req, seed=req.seed + i)
        stem = name if num_samples == 1 else f"{name}_{i + 1}"
        sections = parse_form(r.form, r.bars_per_section)
        song = generator.generate(r, texts.get(r.prompt), sections)
        for note in song.notes:
            log.warning("%s: %s", stem, note)
        midi, wav, meta, png = (out_dir / f"{stem}.{ext}" for ext in ("mid", "wav", "json", "png"))
        write_midi(song.score, midi)
        seconds = song.facts["duration_s"] + 1.0  # the song plus a release tail
        render_facts = {}
        if neural is None:
            sr = cfg.sample_rate
            audio = render_midi(midi, sr, soundfont, seconds)
        else:
            sr = neural.sample_rate
            audio, render_facts = neural.render_score(song.score, seconds, r.seed)
        write_wav(audio, sr, wav)
        settings = {**dataclasses.asdict(r), "sampling": dataclasses.asdict(r.sampling)}
        write_json(
            {
                "name": stem,
                "settings": settings,
                "seed": r.seed,
                "checkpoint": ckpt_info,
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
        write_picture(
            song.score,
            audio,
            sr,
            sections,
            png,
            f"{stem}: {r.style.lower()}, {r.emotion.lower()}, {r.tempo:g} BPM, {song.facts['estimated_key']}",
        )
        log.info(
            "%s: %d bars, %d notes, %s, %.1f s",
            stem,
            song.facts["bars"],
            song.facts["notes"],
            ", ".join(song.facts["instruments"]),
            song.facts["duration_s"],
        )
        written += [midi, wav, meta, png]
    return written
