"""Generate a whole song bar by bar with exact controls.

- Form: sections with exact bar counts; each distinct section name gets a plan label (in order
  of first appearance), each bar its index inside the section: the plan the planner was
  trained with (repetition sections). Generation stops exactly after the last planned bar.
- A repeated section (the second chorus) copies the bars of its first occurrence and
  re-samples a share of them (``variation``), so it is recognisably the same material, varied.
- Tempo is written exactly; the time signature is fixed by a token mask; ``key`` is a condition
  and the result is transposed onto the requested tonic when its estimated mode matches
  (re-sampled up to ``key_attempts`` times otherwise).
- Instruments named in the prompt are the instrument set. When the checkpoint has seen them,
  Program tokens are restricted to them; otherwise (or if one stays silent) the generated
  voices are assigned to the named instruments by register, and the result says so.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from symusic import Note, Score, Tempo, TextMeta, TimeSignature, Track

from src.data.labels import notes_array
from src.data.planner_dataset import BOS, EOS
from src.data.programs import instruments_in_prompt, program_name
from src.data.tokenizer import TokenCodec
from src.eval import metrics as F
from src.eval.config import EvalConfig
from src.generation.neural_render import NeuralRenderConfig
from src.models.conditions import Conditions, batch, key_id
from src.models.sampling import Grammar, PlannerStepper, SamplingConfig, filter_logits
from src.models.symbolic_planner import EMOTIONS, STYLES, SymbolicPlanner

log = logging.getLogger(__name__)
# A General MIDI program's typical register (MIDI pitch at its centre), for assigning voices.
REGISTER = {
    range(0, 8): 60,
    range(8, 16): 72,
    range(16, 24): 60,
    range(24, 32): 57,
    range(32, 40): 38,
    range(40, 41): 74,
    range(41, 42): 62,
    range(42, 43): 50,
    range(43, 44): 38,
    range(44, 56): 60,
    range(56, 57): 70,
    range(57, 58): 55,
    range(58, 59): 40,
    range(59, 61): 58,
    range(61, 64): 58,
    range(64, 72): 62,
    range(72, 80): 76,
    range(80, 128): 60,
}


def register_of(program: int) -> int:
    return next(v for r, v in REGISTER.items() if program in r)


@dataclass
class Section:
    name: str
    bars: int
    label: int = 0
    start_bar: int = 0


def parse_form(form: str, bars_per_section: int) -> list[Section]:
    """``'intro:4,verse,chorus,verse'`` -> sections with bar counts and plan labels."""
    sections: list[Section] = []
    labels: dict[str, int] = {}
    start = 0
    for raw in form.split(","):
        entry = raw.strip()
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_-]*)(?::(\d+))?", entry)
        if not m:
            raise ValueError(f"--form: invalid entry {entry!r} (expected name or name:bars)")
        bars = int(m.group(2)) if m.group(2) else bars_per_section
        if not 1 <= bars <= 64:
            raise ValueError(f"--form: {entry!r} has {bars} bars (must be 1..64)")
        name = m.group(1).lower()
        label = labels.setdefault(name, len(labels))
        sections.append(Section(name, bars, label, start))
        start += bars
    return sections


def parse_key(text: str) -> tuple[int, str]:
    """``'F# minor'``, ``'Bbm'``, ``'C'`` -> (tonic pitch class, mode)."""
    m = re.fullmatch(r"\s*([A-Ga-g])([#b]?)\s*(m|min|minor|maj|major)?\s*", text)
    if not m:
        raise ValueError(f"--key: cannot read {text!r} (e.g. 'C', 'F# minor', 'Bbm')")
    tonic = F.TONICS[(m.group(1) + m.group(2)).lower()]
    return tonic, "minor" if (m.group(3) or "").startswith("m") and m.group(3) not in ("maj", "major") else "major"


@dataclass
class SongRequest:
    prompt: str = ""
    style: str | None = "CLASSICAL"  # None: no style condition (the model's null style)
    emotion: str = "HAPPY"
    tempo: float = 100.0
    form: str = ""
    bars_per_section: int = 8
    key: str = ""
    time_signature: str = "4/4"
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class SongControls:
    variation: float = 0.25  # share of a repeated section's bars that are re-sampled
    max_tokens_per_bar: int = 96  # bar budget: past it, the bar is closed at the next chance
    key_attempts: int = 4
    min_program_pieces: int = 20  # instruments seen in fewer training pieces count as unseen


@dataclass
class Song:
    ids: list[int]
    score: Any  # symusic Score, tpq-based
    sections: list[Section]
    facts: dict[str, Any]
    notes: list[str]  # what the user should know (warnings, assignments)


class SongGenerator:
    def __init__(
        self,
        model: SymbolicPlanner,
        codec: TokenCodec,
        data_stats: dict[str, Any],
        controls: SongControls | None = None,
    ):
        self.model, self.codec, self.stats = model, codec, data_stats
        self.controls = controls or SongControls()
        self.grammar = Grammar(codec)
        tok = codec.tok
        self.types = {i: t.split("_")[0] for t, i in tok.vocab.items()}
        self.values = {i: t.split("_", 1)[1] for t, i in tok.vocab.items() if "_" in t}
        self.starts_bar = torch.from_numpy(codec.starts_bar)
        # per token: the first and last Position value it holds (-1: none), to keep positions in order
        self.first_pos = torch.full((len(codec.bpe_to_base),), -1)
        self.last_pos = torch.full((len(codec.bpe_to_base),), -1)
        for i, base in enumerate(codec.bpe_to_base):
            pos = [int(self.values[b]) for b in base.tolist() if self.types[b] == "Position"]
            if pos:
                self.first_pos[i], self.last_pos[i] = pos[0], pos[-1]
        self.res = max(tok.config.beat_res.values())  # positions per beat

    # ------------------------------------------------------------------ masks
    def static_mask(self, time_signature: str, programs: list[int] | None) -> torch.Tensor:
        """Tokens never allowed: other time signatures, positions past the bar's end, programs
        outside the set (if given)."""
        ok = torch.ones(len(self.codec.bpe_to_base), dtype=torch.bool)
        positions_per_bar = int(time_signature.split("/")[0]) * self.res
        for i, base in enumerate(self.codec.bpe_to_base):
            for b in base.tolist():
                kind = self.types[b]
                if kind == "TimeSig" and self.values[b] != time_signature:
                    ok[i] = False
                if kind == "Position" and int(self.values[b]) >= positions_per_bar:
                    ok[i] = False
                if kind == "Program" and programs is not None and int(self.values[b]) not in programs:
                    ok[i] = False
        return ok

    # ------------------------------------------------------------------ generation
    def conditions(
        self, req: SongRequest, text: np.ndarray | None, sections: list[Section], programs: list[int]
    ) -> Conditions:
        labels, index = [], []
        for s in sections:
            labels += [s.label] * s.bars
            index += list(range(s.bars))
        key = key_id(*parse_key(req.key)) if req.key else None
        return Conditions(
            text=text,
            style=req.style,
            emotion=req.emotion,
            tempo=req.tempo,
            key=key,
            timesig=req.time_signature,
            programs=programs,
            plan_label=labels,
            plan_index=index,
        )

    @torch.no_grad()
    def sample_tokens(
        self,
        cond: Conditions,
        sections: list[Section],
        sampling: SamplingConfig,
        mask: torch.Tensor,
        gen: torch.Generator,
    ) -> list[int]:
        """Sample bar by bar until exactly sum(bars) bars; returns [BOS] + tokens (no EOS)."""
        device = next(self.model.parameters()).device
        total = sum(s.bars for s in sections)
        copy_src: list[int | None] = []
        first_at: dict[str, Section] = {}
        for s in sections:
            first = first_at.setdefault(s.name, s)
            for j in range(s.bars):
                src = first.start_bar + j if first is not s and j < first.bars else None
                if src is not None and float(torch.rand(1, generator=gen)) < self.controls.variation:
                    src = None  # re-sampled: the variation
                copy_src.append(src)

        def cond_fn(bar0: int) -> dict[str, torch.Tensor]:
            c = dataclasses.replace(cond, plan_label=cond.plan_label[bar0:], plan_index=cond.plan_index[bar0:])
            return batch([c], self.model.cfg, device)

        stepper = PlannerStepper(self.model, cond_fn, sampling)
        logits = stepper.start(torch.tensor([[BOS]], device=device))
        bars: list[list[int]] = []
        prev, position = BOS, 0
        cap = total * self.controls.max_tokens_per_bar * 2 + 16
        n_tokens = 0
        while n_tokens < cap:
            allowed = self.grammar.mask(torch.tensor([prev]))[0] & mask
            allowed &= self.starts_bar | (self.first_pos < 0) | (self.first_pos >= position)  # time moves forward
            allowed[EOS] = False  # the song ends when the planned bars are done, not before
            if bars and len(bars[-1]) >= self.controls.max_tokens_per_bar and (allowed & self.starts_bar).any():
                allowed &= self.starts_bar  # bar budget spent: close the bar
            if not allowed.any():
                allowed = self.grammar.mask(torch.tensor([prev]))[0]
            probs = filter_logits(logits.cpu(), sampling, allowed[None]).softmax(-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
            if self.codec.starts_bar[nxt]:  # the model closes a bar and opens bar len(bars)
                if len(bars) == total:
                    break  # the last planned bar is complete
                if copy_src[len(bars)] is not None:
                    # replace the model's new bar by the first occurrence's bar (and any copies after it)
                    while len(bars) < total and copy_src[len(bars)] is not None:
                        bars.append(list(bars[copy_src[len(bars)]]))
                        for t in bars[-1]:
                            logits = stepper.step(torch.tensor([t], device=device))
                        n_tokens += len(bars[-1])
                        prev = bars[-1][-1]
                        position = max(0, *(int(self.last_pos[t]) for t in bars[-1]))
                    if len(bars) == total:
                        break
                    continue  # the model goes on from the copied material
                bars.append([])
                position = 0
            if self.last_pos[nxt] >= 0:
                position = int(self.last_pos[nxt])
            bars[-1].append(nxt)
            logits = stepper.step(torch.tensor([nxt], device=device))
            prev = nxt
            n_tokens += 1
        if len(bars) != total:
            raise RuntimeError(f"generation produced {len(bars)} of {total} bars within {cap} tokens")
        return [BOS] + [t for bar in bars for t in bar]

    # ------------------------------------------------------------------ post-processing
    def generate(self, req: SongRequest, text: np.ndarray | None, sections: list[Section]) -> Song:
        if (req.style is not None and req.style not in STYLES) or req.emotion not in EMOTIONS:
            raise ValueError(f"unknown style {req.style!r} or emotion {req.emotion!r}")
        notes: list[str] = []
        known_styles = sorted(s for s in self.stats["styles"] if s in STYLES)
        if req.style is not None and req.style not in known_styles:
            notes.append(
                f"warning: the checkpoint has no training data for style {req.style}; "
                f"it knows {', '.join(known_styles)}"
            )
        named = [p for _, p in instruments_in_prompt(req.prompt)]
        counts = self.stats["program_counts"]
        unseen = [p for p in named if counts.get(p, 0) < self.controls.min_program_pieces]
        if named:
            programs = named
        else:
            by_style = self.stats["style_programs"]  # style None: an unlabelled piece (no style condition)
            programs = by_style.get(req.style or "UNLABELLED") or next(iter(by_style.values()))
        restrict = programs if not unseen else None
        if unseen:
            notes.append(
                "the checkpoint has (almost) never seen "
                + ", ".join(_inst(p) for p in unseen)
                + f" (fewer than {self.controls.min_program_pieces} training pieces); generated voices are"
                " assigned to the named instruments by register"
            )
        mask = self.static_mask(req.time_signature, restrict)
        cond = self.conditions(req, text, sections, programs)
        want_key = parse_key(req.key) if req.key else None
        best: tuple[int, list[int], Any] | None = None
        for attempt in range(self.controls.key_attempts if want_key else 1):
            gen = torch.Generator().manual_seed(req.seed * 1009 + attempt)
            ids = self.sample_tokens(cond, sections, req.sampling, mask, gen)
            score = self.codec.tok.decode([t for t in ids if t > 3])
            if want_key is None:
                best = (0, ids, score)
                break
            tonic, mode, _ = F.estimate_key(notes_array(score))
            miss = int(mode != want_key[1])
            if best is None or miss < best[0]:
                best = (miss, ids, score)
            if not miss:
                break
        _, ids, score = best
        if named:
            score, note = assign_instruments(score, named)
            if note:
                notes.append(note)
        if want_key is not None:
            tonic, mode, _ = F.estimate_key(notes_array(score))
            shift = (want_key[0] - tonic + 6) % 12 - 6
            if shift:
                score = transpose_pitched(score, shift)
            if mode != want_key[1]:
                score = to_parallel_mode(score, want_key[0], want_key[1])
                notes.append(
                    f"none of {self.controls.key_attempts} attempts came out in {want_key[1]}: the notes were "
                    f"mapped from {F.key_name(want_key[0], mode)} to {F.key_name(*want_key)}"
                )
        score = finalise(score, req.tempo, req.time_signature, sections)
        facts = measure(score, ids, self.codec, sections)
        return Song(ids, score, sections, facts, notes)


def _inst(program: int) -> str:
    return "drums" if program == 128 else program_name(program)


def transpose_pitched(score: Any, shift: int) -> Any:
    score = score.copy()
    for t in score.tracks:
        if not t.is_drum:
            for n in t.notes:
                n.pitch = min(127, max(0, n.pitch + shift))
    return score


def to_parallel_mode(score: Any, tonic: int, mode: str) -> Any:
    """Map a piece onto the parallel major or (natural) minor of ``tonic``: scale degrees 3, 6
    and 7 move by a semitone (E, A, B <-> Eb, Ab, Bb in C); every other note stays."""
    to_minor = {4: 3, 9: 8, 11: 10}
    table = to_minor if mode == "minor" else {v: k for k, v in to_minor.items()}
    score = score.copy()
    for t in score.tracks:
        if not t.is_drum:
            for n in t.notes:
                n.pitch += table.get((n.pitch - tonic) % 12, (n.pitch - tonic) % 12) - (n.pitch - tonic) % 12
    return score


def assign_instruments(score: Any, named: list[int]) -> tuple[Any, str]:
    """Make the named instruments the ones that play: by register when the model's differ."""
    have = {128 if t.is_drum else t.program for t in score.tracks if len(t.notes)}
    if set(named) == have:
        return score, ""
    pitched = [p for p in named if p != 128]
    notes = notes_array(score)
    notes = notes[notes[:, 3] == 0]
    if not pitched or not len(notes):
        return score, "no pitched notes to assign to " + ", ".join(_inst(p) for p in named)
    order = sorted(pitched, key=register_of, reverse=True)  # highest register first
    # split the notes into len(order) register bands of equal size, highest band first
    ranked = notes[np.lexsort((notes[:, 0], -notes[:, 2]))]
    bands = np.array_split(ranked, len(order))
    out = Score(score.ticks_per_quarter)
    for prog, band in zip(order, bands):
        track = Track(name=_inst(prog), program=prog, is_drum=False)
        for start, dur, pitch, _ in band[np.argsort(band[:, 0], kind="stable")]:
            track.notes.append(Note(int(start), int(dur), int(pitch), 80))
        out.tracks.append(track)
    for t in score.tracks:
        if t.is_drum and 128 in named:
            out.tracks.append(t.copy())
    missing = [p for p in named if p == 128 and 128 not in have]
    msg = "voices assigned by register to " + ", ".join(_inst(p) for p in order)
    if missing:
        msg += "; the model generated no drums, so the drum kit is silent"
    return out, msg


def finalise(score: Any, tempo: float, time_signature: str, sections: list[Section]) -> Any:
    """Exact tempo and metre, a marker at every section start and one at the song's end."""
    score = score.copy()
    num, den = (int(x) for x in time_signature.split("/"))
    score.tempos.clear()
    score.tempos.append(Tempo(0, float(tempo)))
    score.time_signatures.clear()
    score.time_signatures.append(TimeSignature(0, num, den))
    bar = round(score.ticks_per_quarter * 4 * num / den)
    score.markers.clear()
    for s in sections:
        score.markers.append(TextMeta(s.start_bar * bar, s.name))
    total = sum(s.bars for s in sections)
    score.markers.append(TextMeta(total * bar, "end"))
    return score


def measure(score: Any, ids: list[int], codec: TokenCodec, sections: list[Section]) -> dict[str, Any]:
    """Facts of the result, measured (not echoed from the request)."""
    notes = notes_array(score)
    tonic, mode, r = F.estimate_key(notes)
    bar_of_token = np.cumsum(codec.starts_bar[np.array(ids)]) - 1
    bars = int(bar_of_token[-1] + 1)
    per_section = [{"name": s.name, "start_bar": s.start_bar, "bars": s.bars} for s in sections]
    end_tick = max((m.time for m in score.markers), default=0)
    qpm = score.tempos[0].qpm
    return {
        "notes": int(len(notes)),
        "instruments": {_inst(128 if t.is_drum else t.program): len(t.notes) for t in score.tracks if len(t.notes)},
        "tempo": round(float(qpm), 3),
        "time_signature": f"{score.time_signatures[0].numerator}/{score.time_signatures[0].denominator}",
        "estimated_key": F.key_name(tonic, mode),
        "key_confidence": round(r, 3),
        "bars": bars,
        "sections": per_section,
        "duration_s": round(max(end_tick, score.end()) / score.ticks_per_quarter * 60.0 / qpm, 3),
    }


@dataclass
class GenerationConfig:
    preset: str = "tiny"
    checkpoints: list[str] = field(
        default_factory=lambda: ["checkpoints/aligned/{preset}/best.pt", "checkpoints/symbolic/{preset}/best.pt"]
    )
    renderer_checkpoint: str = "checkpoints/renderer/{preset}/best.pt"
    output_dir: str = "outputs"
    sample_rate: int = 22050
    soundfont: str = ""
    default_forms: dict[str, str] = field(default_factory=dict)
    default_tempo: dict[str, float] = field(default_factory=dict)
    controls: SongControls = field(default_factory=SongControls)
    neural: NeuralRenderConfig = field(default_factory=NeuralRenderConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)  # python -m src.eval (pipeline stage 6)
