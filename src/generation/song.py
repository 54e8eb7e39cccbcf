"""Generate a whole song bar by bar with exact controls.

- Form: sections with exact bar counts; each distinct section name gets a plan label (in order
  of first appearance), each bar its index inside the section: the plan the planner was
  trained with (repetition sections). Generation stops exactly after the last planned bar.
- A repeated section (the second chorus) copies the bars of its first occurrence and
  re-samples a share of them (``variation``), so it is recognisably the same material, varied.
- Whole bars (``whole_bars``, on in config/generation.yaml; measured in docs/benchmarks.md): a bar closes
  only once one of its notes sounds into its last half beat (the tiny planner often closes a 4/4 bar after
  three beats).
- Sounding downbeats (``sounding_downbeats``; measured in docs/benchmarks.md, "Round 11"): every bar after the
  first sounds within its first quarter note, by a note starting there or held over the bar line (a key-relative tiny
  planner opens some FOLK bars with a rest of half a bar, bar after bar; real inner bars almost never do).
- Tempo is written exactly; the time signature is fixed by a token mask; ``key`` is a condition
  and the result is transposed onto the requested tonic when its estimated mode matches
  (re-sampled up to ``key_attempts`` times otherwise, then mapped to the parallel mode). Without
  ``key`` the key is planned: drawn from the training keys of the style and emotion, so the
  emotion's mode (its valence) is a condition the model is given.
- Instruments named in the prompt are the instrument set. When the checkpoint has seen them,
  Program tokens are restricted to them; otherwise (or if one stays silent) the generated
  voices are assigned to the named instruments by register, and the result says so.
- Part limits (``part_limits``, with the masks): the restricted instruments' pitches stay inside their playable
  ranges and no part sounds more notes at once than one player can (src/generation/limits.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from src.generation.arrange import assign_instruments, control_facts, finalise, fold_into_ranges, measure
from src.generation.limits import PartLimits
from src.models.sampling import Grammar, PlannerStepper, SamplingConfig, filter_logits
from src.models.symbolic_planner import SymbolicPlanner
from src.music.conditions import Conditions, batch
from src.music.form import Section, total_bars
from src.music.instruments import instrument_name, instruments_in_prompt
from src.music.notes import notes_array, parse_time_signature
from src.music.theory import estimate_key, key_name, parse_key, to_parallel_mode, transpose_pitched
from src.music.tokenizer import BOS, EOS, TokenCodec, token_program
from src.music.vocab import EMOTIONS, STYLES, TIME_SIGNATURES, UNLABELLED

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage: "plan" | "render", done, total)


def timeline(codec: TokenCodec, base: np.ndarray) -> list[tuple[int, int]]:
    """A token's time events in order: (position, 0) for a Position, (-1, length) for a Duration, in the
    bar's positions (miditok's ``beats.num.res`` durations)."""
    out = []
    for b in base.tolist():
        kind = codec.base_type[b]
        if kind == "Position":
            out.append((int(codec.base_value[b]), 0))
        elif kind == "Duration":
            out.append((-1, codec.duration_positions(codec.base_value[b])))
    return out


def first_note(events: list[tuple[int, int]]) -> tuple[int, int]:
    """A token's (position of its first note, -1 = at the position before it, -2 = no note; its furthest
    Position, -1 = none) from its :func:`timeline`."""
    at, note, furthest = -1, -2, -1
    for pos, length in events:
        if pos >= 0:
            at, furthest = pos, max(furthest, pos)
        elif length > 0 and note == -2:
            note = at
    return note, furthest


@dataclass(frozen=True)
class BarRule:
    """What each bar of a song must sound, in positions of the written metre: ``fill_to`` > 0: it closes only
    once a note sounds to there (whole bars); ``downbeat`` > 0: a bar after the first sounds before there, by a
    note starting there or held over the bar line."""

    length: int = 0  # positions in one bar
    fill_to: int = 0
    downbeat: int = 0


def attempt_progress(progress: Progress | None, attempt: int) -> Progress | None:
    """Bars planned so far over every attempt: a re-sample counts on (5 of 8 after 4 of 4) instead of
    starting again at 1."""
    if progress is None or attempt == 0:
        return progress
    return lambda stage, done, total: progress(stage, attempt * total + done, (attempt + 1) * total)


class Stepper(Protocol):
    """Next-token logits as tokens are fed: ``start`` (1, t) -> (1, V), ``step`` (1,) -> (1, V)."""

    def start(self, prompt: torch.Tensor) -> torch.Tensor: ...
    def step(self, token: torch.Tensor) -> torch.Tensor: ...


# (the song's conditions, batched conditions from a bar on, sampling) -> the stepper that writes its tokens
StepperFactory = Callable[[Conditions, Callable[[int], dict[str, torch.Tensor]], SamplingConfig], Stepper]


class RequestError(ValueError):
    """A bad value of one field of a request; ``str()`` is ``--field: message`` (the flag of stage 5)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"--{field}: {message}")
        self.field, self.message = field, message


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
    masks: bool = True  # False: plain sampling, the grammar only (no metre, program or position masks)
    whole_bars: bool = False  # with masks: a bar closes only once a note sounds into its last half beat
    sounding_downbeats: bool = False  # with masks: every bar after the first sounds within its first quarter note
    part_limits: bool = True  # with masks: restricted instruments inside their ranges, one player's notes at once


@dataclass
class Song:
    ids: list[int]
    score: Any  # symusic Score, tpq-based
    sections: list[Section]
    facts: dict[str, Any]
    notes: list[str]  # what the user should know (warnings, assignments)


class SongGenerator:
    """Songs from a planner (or, through ``stepper``, from any next-token model such as the evaluation's
    bigram floor, which then gets exactly the same masks, plan and fix-ups)."""

    def __init__(
        self,
        model: SymbolicPlanner | None,
        codec: TokenCodec,
        data_stats: dict[str, Any],
        controls: SongControls | None = None,
        stepper: StepperFactory | None = None,
    ):
        if model is None and stepper is None:
            raise ValueError("a SongGenerator needs a planner or a stepper")
        self.model, self.codec, self.stats = model, codec, data_stats
        self.stepper = stepper or (lambda cond, cond_fn, sampling: PlannerStepper(self.model, cond_fn, sampling))
        self.device = next(model.parameters()).device if model is not None else torch.device("cpu")
        self.controls = controls or SongControls()
        self.grammar = Grammar(codec)
        self.starts_bar = torch.from_numpy(codec.starts_bar)
        self.first_pos = torch.from_numpy(codec.first_position)  # keeps positions in order within a bar
        self.last_pos = torch.from_numpy(codec.last_position)
        self.may_close = (self.grammar.table & self.starts_bar[None]).any(-1)  # (V,) a Bar may follow this token
        self.fallbacks = 0  # tokens of the last sample_tokens call for which the masks left nothing
        self.grammar_only = torch.ones(len(codec.bpe_to_base), dtype=torch.bool)
        self.timeline = [timeline(codec, base) for base in codec.bpe_to_base]  # per token: positions, durations
        note_at, furthest = (torch.tensor(v) for v in zip(*(first_note(t) for t in self.timeline)))
        self.note_at, self.furthest = note_at, furthest  # (V,) where a token's first note starts; its last Position

    # ------------------------------------------------------------------ masks
    def static_mask(self, time_signature: str, programs: list[int] | None) -> torch.Tensor:
        """Tokens never allowed: other time signatures, positions past the bar's end, programs
        outside the set (if given)."""
        codec = self.codec
        ok = torch.ones(len(codec.bpe_to_base), dtype=torch.bool)
        positions_per_bar = self.bar_positions(time_signature)
        for i, base in enumerate(codec.bpe_to_base):
            for b in base.tolist():
                kind, value = codec.base_type[b], codec.base_value.get(b)
                if kind == "TimeSig" and value != time_signature:
                    ok[i] = False
                if kind == "Position" and int(value) >= positions_per_bar:
                    ok[i] = False
                if kind == "Program" and programs is not None and token_program(value) not in programs:
                    ok[i] = False
        return ok

    def bar_positions(self, time_signature: str) -> int:
        """Positions in one bar of a metre the tokenizer writes (8 per beat: a quarter in 4/4, an eighth in 6/8)."""
        return parse_time_signature(time_signature)[0] * self.codec.positions_per_beat

    def close_bar(self, allowed: torch.Tensor) -> torch.Tensor:
        """(V,) -> (V,): the bar's budget is spent: a Bar if one may come now, else a token a Bar may follow
        (a note that ends the chord rather than one more Program), else ``allowed`` unchanged."""
        for closing in (self.starts_bar, self.may_close):
            if (allowed & closing).any():
                return allowed & closing
        return allowed

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample_tokens(
        self,
        cond: Conditions,
        sections: list[Section],
        sampling: SamplingConfig,
        mask: torch.Tensor,
        gen: torch.Generator,
        progress: Progress | None = None,
        rule: BarRule | None = None,
        limits: PartLimits | None = None,
    ) -> list[int]:
        """Sample bar by bar until exactly sum(bars) bars; returns [BOS] + tokens (no EOS). ``rule``: what every
        bar must sound before it closes (unless its token budget is spent); ``limits``: every token keeps the
        parts playable.

        ``progress("plan", bars_done, total)`` is called as each bar is closed."""
        device = self.device
        total = total_bars(sections)
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
            return batch([cond.from_bar(bar0)], self.model.cfg, device)

        def copied(bar: int) -> bool:  # from its section's first occurrence, unless that opens with a rest (a pickup)
            return copy_src[bar] is not None and opens[copy_src[bar]]

        stepper = self.stepper(cond, cond_fn, sampling)
        logits = stepper.start(torch.tensor([[BOS]], device=device))
        bars: list[list[int]] = []
        opens: list[bool] = []  # per bar: it sounds within its first quarter note (or no rule says it must)
        rule = rule or BarRule()
        # (V,) what a bar that does not sound yet may take: a note before the downbeat's end, or no Position past it
        note_at = self.note_at
        early = (note_at == -1) | ((note_at >= 0) & (note_at < rule.downbeat))
        opening = ~self.starts_bar & (early | ((note_at == -2) & (self.furthest < rule.downbeat)))
        prev, position, sounds_to = BOS, 0, 0  # sounds_to: the furthest note end in the open bar (positions)
        cap = total * self.controls.max_tokens_per_bar * 2 + 16
        n_tokens = 0
        self.fallbacks = 0
        if limits is not None:
            limits.reset()
        while n_tokens < cap:
            allowed = self.grammar.mask(torch.tensor([prev]))[0] & mask
            allowed &= self.starts_bar | (self.first_pos < 0) | (self.first_pos >= position)  # time moves forward
            if limits is not None:
                allowed &= limits.mask()
            allowed[EOS] = False  # the song ends when the planned bars are done, not before
            spent = bool(bars) and len(bars[-1]) >= self.controls.max_tokens_per_bar
            if bars and sounds_to < rule.fill_to and not spent:
                allowed &= ~self.starts_bar  # the bar is not yet sounding to its end
            if len(bars) > 1 and not opens[-1] and not spent:  # the first bar may open with a rest (a pickup)
                allowed &= opening
            if spent:  # the budget wins over whole bars: the bar closes at the next chance
                allowed = self.close_bar(allowed)
            if not allowed.any():  # counted: the song's notes say so
                allowed = self.grammar.mask(torch.tensor([prev]))[0]
                self.fallbacks += 1
            probs = filter_logits(logits.cpu(), sampling, allowed[None]).softmax(-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
            if self.codec.starts_bar[nxt]:  # the model closes a bar and opens bar len(bars)
                if progress and bars:
                    progress("plan", len(bars), total)
                if len(bars) == total:
                    break  # the last planned bar is complete
                if copied(len(bars)):
                    # replace the model's new bar by the first occurrence's bar (and any copies after it)
                    while len(bars) < total and copied(len(bars)):
                        bars.append(list(bars[copy_src[len(bars)]]))
                        opens.append(True)
                        for t in bars[-1]:
                            logits = stepper.step(torch.tensor([t], device=device))
                            if limits is not None:
                                limits.feed(t)
                        n_tokens += len(bars[-1])
                        prev = bars[-1][-1]
                        position = max(0, *(int(self.last_pos[t]) for t in bars[-1]))
                        sounds_to = max(rule.fill_to, self.advance(bars[-1])[1])  # a copied bar is whole as it is
                    if len(bars) == total:
                        break
                    continue  # the model goes on from the copied material
                held = bool(bars) and sounds_to > rule.length  # a note of the last bar sounds on into this one
                bars.append([])
                opens.append(held or rule.downbeat == 0)
                position, sounds_to = 0, 0
            position, sounds_to, start = self.advance([nxt], position, sounds_to)
            opens[-1] |= 0 <= start < rule.downbeat
            bars[-1].append(nxt)
            logits = stepper.step(torch.tensor([nxt], device=device))
            if limits is not None:
                limits.feed(nxt)
            prev = nxt
            n_tokens += 1
        if len(bars) != total:
            raise RuntimeError(f"generation produced {len(bars)} of {total} bars within {cap} tokens")
        return [BOS] + [t for bar in bars for t in bar]

    def advance(self, tokens: list[int], position: int = 0, sounds_to: int = 0) -> tuple[int, int, int]:
        """After ``tokens`` of a bar (from ``position``, with notes sounding to ``sounds_to``): the position, the
        furthest note end and where their first note starts (-1: none), in positions from the bar's start."""
        start = -1
        for t in tokens:
            for pos, length in self.timeline[t]:
                position = pos if pos >= 0 else position
                sounds_to = max(sounds_to, position + length)
                if length > 0 and start < 0:
                    start = position
        return position, sounds_to, start

    # ------------------------------------------------------------------ what the checkpoint knows
    @property
    def known_styles(self) -> list[str]:
        return sorted(s for s in self.stats["styles"] if s in STYLES)

    @property
    def time_signatures(self) -> list[str]:
        """Every metre of the training data that the tokenizer writes bars of, commonest first (empty for
        checkpoints that did not record them). 9/8 pieces are re-barred as 4/4 by the tokenizer: not one."""
        metres = self.stats.get("time_signatures", {})
        return sorted((m for m in metres if self.codec.written_metre(m)), key=metres.get, reverse=True)

    def seen_pieces(self, program: int) -> int:
        """Training pieces with a part for ``program``: its own, plus (program augmentation) the pieces a re-voicing
        can give a part to it times the share of pieces re-voiced."""
        revoice = self.stats.get("revoice") or {"share": 0.0, "program_counts": {}}
        reach = revoice["program_counts"].get(program, 0)
        return self.stats["program_counts"].get(program, 0) + round(revoice["share"] * reach)

    def unseen(self, programs: list[int]) -> list[int]:
        """The programs the checkpoint has (almost) never seen: in fewer than ``min_program_pieces`` pieces."""
        return [p for p in programs if self.seen_pieces(p) < self.controls.min_program_pieces]

    def check(self, req: SongRequest) -> None:
        """What this checkpoint cannot do: a metre it has never seen or its tokenizer cannot write (a RequestError
        naming the ones it knows)."""
        seen = self.time_signatures
        known = ", ".join(m for m in seen if m in TIME_SIGNATURES)
        if not self.codec.written_metre(req.time_signature):
            raise RequestError(
                "time_signature", f"the tokenizer cannot write {req.time_signature} bars; it knows {known}"
            )
        if seen and req.time_signature not in seen:
            raise RequestError(
                "time_signature", f"the checkpoint has never seen {req.time_signature}; it knows {known}"
            )

    # ------------------------------------------------------------------ generation and post-processing
    def key_plan(self, style: str | None, emotion: str, seed: int) -> tuple[tuple[int, str] | None, dict[str, Any]]:
        """No key asked for: a key drawn from the training pieces of this style and emotion (their key
        counts, which the checkpoint records), so the emotion's mode is a condition the model is given.
        Returns (key or None, the plan's record for the JSON)."""
        keys = self.stats.get("keys")
        if not keys:
            return None, {"key": None, "source": "the checkpoint records no training keys: the key is the model's"}
        table = keys.get(style or UNLABELLED, {}).get(emotion)
        source = f"the training pieces labelled {style or UNLABELLED} and {emotion}"
        if not table:  # this style has no piece of this emotion: every style's
            table = dict(sum((Counter(by_emotion.get(emotion, {})) for by_emotion in keys.values()), Counter()))
            source = f"the training pieces labelled {emotion} (none of style {style or UNLABELLED})"
        if not table:
            return None, {"key": None, "source": f"no training piece is labelled {emotion}: the key is the model's"}
        names = sorted(table)
        counts = torch.tensor([float(table[n]) for n in names])
        pick = names[int(torch.multinomial(counts, 1, generator=torch.Generator().manual_seed(seed)))]
        return parse_key(pick), {"key": pick, "source": f"drawn from {source} ({int(counts.sum())} pieces)"}

    def generate(
        self, req: SongRequest, text: np.ndarray | None, sections: list[Section], progress: Progress | None = None
    ) -> Song:
        """Sample the song, then the fix-ups (each recorded in ``facts["fixups"]``): re-sampling and then
        transposition and parallel-mode mapping onto the key, register reassignment of the voices when
        the model's instruments differ from the named ones, the exact tempo and metre. ``facts["raw"]``
        measures the first sample as the model wrote it, before any of them."""
        if (req.style is not None and req.style not in STYLES) or req.emotion not in EMOTIONS:
            raise ValueError(f"unknown style {req.style!r} or emotion {req.emotion!r}")
        self.check(req)
        notes: list[str] = []
        known_styles = self.known_styles
        if req.style is not None and req.style not in known_styles:
            notes.append(
                f"warning: the checkpoint has no training data for style {req.style}; "
                f"it knows {', '.join(known_styles)}"
            )
        named = [p for _, p in instruments_in_prompt(req.prompt)]
        unseen = self.unseen(named)
        if named:
            programs = named
        else:
            by_style = self.stats["style_programs"]  # style None: an unlabelled piece (no style condition)
            programs = by_style.get(req.style or UNLABELLED) or next(iter(by_style.values()))
        restrict = programs if not unseen else None
        if unseen:
            notes.append(
                "the checkpoint has (almost) never seen "
                + ", ".join(instrument_name(p) for p in unseen)
                + f" (fewer than {self.controls.min_program_pieces} training pieces); generated voices are"
                " assigned to the named instruments by register"
            )
        written = self.codec.written_metre(req.time_signature)  # 2/2 bars are written as 4/4 (the same length)
        mask = self.static_mask(written, restrict) if self.controls.masks else self.grammar_only
        length, beat = self.bar_positions(written), self.codec.positions_per_beat  # beat: the metre's unit
        quarter = beat * parse_time_signature(written)[1] // 4
        c = self.controls
        rule = BarRule(
            length,
            length - beat // 2 if c.masks and c.whole_bars else 0,
            quarter if c.masks and c.sounding_downbeats else 0,
        )
        limited = self.controls.masks and self.controls.part_limits and restrict is not None
        limits = PartLimits(self.codec, restrict, self.bar_positions(written)) if limited else None
        if req.key:
            want_key, plan = parse_key(req.key), {"key": key_name(*parse_key(req.key)), "source": "--key"}
        else:
            want_key, plan = self.key_plan(req.style, req.emotion, req.seed * 1009 + 7919)
            if want_key is None:
                notes.append(plan["source"])
        # a key-relative planner (trained with every piece on tonic C) is given C in the wanted mode; the
        # transposition below puts its song on the wanted tonic
        cond_key = (0, want_key[1]) if want_key is not None and self.stats.get("key_relative") else want_key
        cond = Conditions.for_song(
            text, req.style, req.emotion, req.tempo, cond_key, req.time_signature, programs, sections
        )
        best: tuple[int, list[int], Any, int] | None = None
        raw: dict[str, Any] = {}
        attempts = 0
        for attempt in range(self.controls.key_attempts if want_key else 1):
            attempts += 1
            gen = torch.Generator().manual_seed(req.seed * 1009 + attempt)
            ids = self.sample_tokens(
                cond, sections, req.sampling, mask, gen, attempt_progress(progress, attempt), rule, limits
            )
            score = self.codec.decode(ids)
            if attempt == 0:
                raw = control_facts(score, req.tempo, named)
            if want_key is None:
                best = (0, ids, score, self.fallbacks)
                break
            tonic, mode, _ = estimate_key(notes_array(score))
            miss = int(mode != want_key[1])
            if best is None or miss < best[0]:
                best = (miss, ids, score, self.fallbacks)
            if not miss:
                break
        _, ids, score, fallbacks = best
        unrestricted = restrict is not None and bool(named) and not len(notes_array(score))
        if unrestricted:  # the model wrote nothing on the instruments it was held to: its own, then reassigned
            attempts += 1
            gen = torch.Generator().manual_seed(req.seed * 1009 + self.controls.key_attempts)
            open_mask = self.static_mask(written, None)
            ids = self.sample_tokens(cond, sections, req.sampling, open_mask, gen, None, rule)
            score, fallbacks = self.codec.decode(ids), self.fallbacks
            notes.append(
                "the model wrote no note for "
                + ", ".join(instrument_name(p) for p in named)
                + " when held to them; one sample on its own instruments was drawn instead"
            )
        fixups: dict[str, Any] = {"samples": attempts, "grammar_fallbacks": fallbacks}
        fixups["unrestricted_resample"] = unrestricted
        if fallbacks:
            notes.append(
                f"for {fallbacks} token(s) the time-signature, program and position masks left no token; "
                "the grammar alone chose them"
            )
        if named:  # before the key's fix-ups: the notes it drops could otherwise move the key the song ends in
            score, note = assign_instruments(score, named)
            fixups["voices_reassigned"] = bool(note)
            if note:
                notes.append(note)
        if want_key is not None:
            tonic, mode, _ = estimate_key(notes_array(score))
            shift = (want_key[0] - tonic + 6) % 12 - 6
            fixups["transposed"] = shift
            if shift:
                score = transpose_pitched(score, shift)
            fixups["parallel_mode"] = mode != want_key[1]
            if mode != want_key[1]:
                score = to_parallel_mode(score, want_key[0], want_key[1])
                notes.append(
                    f"none of {self.controls.key_attempts} attempts came out in {want_key[1]}: the notes were "
                    f"mapped from {key_name(want_key[0], mode)} to {key_name(*want_key)}"
                )
            score, fixups["folded_into_range"] = fold_into_ranges(score)  # what the moves took out of range
        fixups["tempo_rewritten"] = raw["tempo"] is None or abs(raw["tempo"] - req.tempo) >= 0.5
        fixups["metre_rewritten"] = raw["time_signatures"] != [written]
        score = finalise(score, req.tempo, req.time_signature, sections)
        facts = measure(score, ids, self.codec, sections)
        facts |= {
            "written_metre": written,
            "key_plan": plan,
            "conditioned_key": key_name(*cond_key) if cond_key is not None else None,  # what the planner was given
            "part_limits": limits.facts() if limits is not None else None,  # enforced while sampling; None: off
            "raw": raw,
            "delivered": control_facts(score, req.tempo, named),
            "fixups": fixups,
        }
        return Song(ids, score, sections, facts, notes)
