"""Controls the model follows: a grid of requests, what the model wrote (raw) beside what was delivered.

    .venv/bin/python -m bench.eval_controls [--checkpoints A.pt B.pt] [--seeds 8] [--bars 8] \
        [--guidance 1 1.5 2 3] [--mode_guidance 0 2 4 [--mode_negative null|parallel|relative]] [--sweep_last N] \
        [--mode_only | --parts_only] [--out docs/results/controls_tiny.json] [--generation_config FILE]

For each checkpoint (default: the tiny supervised and aligned planners) the grid is every style the
checkpoint knows x the four emotions x ``--seeds`` seeds, with and without a key (each emotion's demo key),
and with no instrument, the style's own instrument, or two melody instruments ("fiddle and flute") named
in a neutral prompt ("a folk piece", "a folk piece for fiddle"); tempo is the emotion's default. Every song
goes through stage 5's song generator with its sampling defaults (``--generation_config``, by default
config/generation.yaml; before round 6 this bench sampled at temperature 1, top-p 1); ``facts["raw"]`` is the
first sample as the model wrote it, before re-sampling, transposition, parallel-mode mapping, voice reassignment
and the tempo rewrite.

- valence = the estimated mode against the emotion's (major for HAPPY and PEACEFUL);
- arousal = onsets per second at the requested tempo on the emotion's side of the labels' threshold;
- instruments = the share of notes on the named programs, notes outside each instrument's playable range,
  and parts of solo winds/brass (bowed strings) sounding more than one (two) notes at once;
- fix-ups: how often another sample was drawn, the song transposed, mapped to the parallel mode, its
  voices reassigned by register, and a sample drawn on the model's own instruments because it wrote no
  note when held to the named ones.

Then the guidance sweep (the no-key, no-instrument cells at each ``--guidance``; with ``--mode_only`` too, at
each ``--mode_guidance`` > 0: sampling pushed away from the logits with key and emotion unknown, in the
parallel mode or in the relative key), plain sampling (the grammar only: no metre, program or position masks)
beside the generator's masks, metre: 3/4 and 6/8 requests, raw share of songs whose tokens carry only the
requested time signature, and parts: a solo cello, a solo trumpet and "fiddle and flute" with the part limits
(src/generation/limits.py) on and off: notes on the named programs, in range, solo parts within one player's
notes at once, and two named parts that both play through the song (each starts notes in at least half its
bars). The measure's ceiling:
the same mode estimate over the first ``--bars`` bars of the real validation pieces of each style and emotion
(Krumhansl key finding is unsure over a few bars: a real minor chorale often opens on its relative major).
``--mode_only`` runs the no-key, no-instrument cells alone; ``--parts_only`` the parts sweep alone, for every
checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.common import machine, table
from src.eval.evaluate import arousal_threshold, raw_checks, real_pieces
from src.generation.config import GenerationConfig
from src.generation.demos import DEMOS
from src.generation.song import SongGenerator, SongRequest
from src.models.builders import codec_from_checkpoint, load_planner
from src.models.sampling import MODE_NEGATIVES
from src.models.text_encoder import embed_texts
from src.music.form import parse_form
from src.music.instruments import PROMPT_INSTRUMENTS, instruments_in_prompt, max_voices
from src.music.theory import estimate_key, key_name, parse_key, relative_key
from src.music.vocab import DRUMS, EMOTIONS, HIGH_AROUSAL, mode_of
from src.training.symbolic import data_stats
from src.utils.config import load_config
from src.utils.io import read_jsonl, write_text

PART_PROMPTS = ("cello", "trumpet", "fiddle and flute")  # a bowed string, a brass player, two melody instruments


def prompt_word(program: int) -> str:
    """The first single prompt word that names a program ("violin" for 40, not "string quartet")."""
    words = [w for w, p in PROMPT_INSTRUMENTS.items() if p == program]
    return next((w for w in words if " " not in w), words[0])


def song_checks(facts: dict, req: SongRequest, named: bool, threshold: float) -> dict[str, float]:
    """One song's raw and delivered checks (1/0, or a share) and which fix-ups fired."""
    raw, out = facts["raw"], facts["delivered"]
    checks: dict[str, Any] = raw_checks(facts, req, named, threshold) | {
        "mode": out["mode"] == mode_of(req.emotion),
        "arousal": (out["onsets_per_second"] >= threshold) == (req.emotion in HIGH_AROUSAL),
        "raw_metre": raw["time_signatures"] == [facts["written_metre"]],
    }
    if req.key:
        checks["key"] = out["key"] == facts["key_plan"]["key"]
    elif facts["key_plan"]["key"]:  # the key the plan gave the model: written, or its relative key (the same notes)
        planned = parse_key(facts["conditioned_key"])  # the plan's key (tonic C for a key-relative planner)
        checks["raw_plan_key"] = raw["key"] == key_name(*planned)
        checks["raw_relative_key"] = raw["key"] == key_name(*relative_key(*planned))
    if named:
        checks["named_share"] = out["named_share"]
    for side, f in (("raw", raw), ("delivered", out)):
        notes = sum(p["notes"] for p in f["parts"].values())
        checks[f"{side}_in_range"] = 1 - sum(p["out_of_range"] for p in f["parts"].values()) / max(notes, 1)
        solo = [p for p in f["parts"].values() if max_voices(p["program"])]
        if solo:
            checks[f"{side}_solo_within_voices"] = all(p["most_at_once"] <= max_voices(p["program"]) for p in solo)
        want = [p for _, p in instruments_in_prompt(req.prompt) if p != DRUMS]
        if len(want) >= 2:  # every named part starts notes in at least half the song's bars
            bars = {p["program"]: p.get("bars", 0) for p in f["parts"].values()}
            checks[f"{side}_parts_through"] = all(bars.get(p, 0) >= facts["bars"] / 2 for p in want)
    return {k: float(v) for k, v in checks.items() if v is not None}  # None: a song without notes has no share


def real_mode(data_dir: str, codec: Any, bars: int) -> list[dict]:
    """Per style and emotion: the share of real validation pieces whose first ``bars`` bars are estimated in
    the emotion's mode (the labels' own mode comes from the whole piece)."""
    rows = []
    for p in real_pieces(data_dir, "validation", codec, max_bars=bars):
        row = p.request["row"]
        checks = {"raw_mode": float(estimate_key(p.notes)[1] == mode_of(row["emotion"]))}
        cell = {"checkpoint": "real validation pieces", "style": row["style"], "emotion": row["emotion"]}
        rows.append(cell | {"checks": checks})
    return rows


def run_grid(
    gen: SongGenerator, cells: list[tuple[dict, SongRequest]], text: dict[str, np.ndarray], desc: str
) -> list[dict]:
    rows = []
    for cell, req in tqdm(cells, desc=desc, unit="song"):
        song = gen.generate(req, text[req.prompt], parse_form(req.form, req.bars_per_section))
        facts = song.facts
        rows.append({**cell, "key_plan": facts["key_plan"]["key"], "raw_key": facts["raw"]["key"], "facts": facts})
    return rows


def summarise(rows: list[dict], by: tuple[str, ...]) -> list[dict]:
    """Mean of every check per group of ``by``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in by)].append(r["checks"])
    out = []
    for key, checks in sorted(groups.items(), key=lambda kv: str(kv[0])):
        names = sorted({k for c in checks for k in c})
        means = {k: round(float(np.mean([c[k] for c in checks if k in c])), 3) for k in names}
        out.append({**dict(zip(by, key)), "songs": len(checks), **means})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--checkpoints", nargs="+", default=["checkpoints/symbolic/tiny/best.pt", "checkpoints/aligned/tiny/best.pt"]
    )
    ap.add_argument("--data_dir", default="data/processed/tiny")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--bars", type=int, default=8, help="bars per song (two sections, a and b)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument(
        "--mode_guidance",
        type=float,
        nargs="+",
        default=[0.0],
        help="mode guidance scales for the no-key, no-instrument cells (0 = off)",
    )
    ap.add_argument("--mode_negative", choices=MODE_NEGATIVES, default="null", help="mode guidance's negative")
    ap.add_argument(
        "--sweep_last",
        type=int,
        default=0,
        help="sweeps (guidance, plain, metre) for the last N checkpoints only",
    )
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--mode_only", action="store_true", help="only the no-key, no-instrument cells, no sweeps")
    only.add_argument("--parts_only", action="store_true", help="only the parts sweep, for every checkpoint")
    ap.add_argument("--out", default="docs/results/controls_tiny.json")
    ap.add_argument(
        "--generation_config", default="config/generation.yaml", help="stage 5's sampling defaults and controls"
    )
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    gcfg = load_config(GenerationConfig, args.generation_config)
    threshold = arousal_threshold(args.data_dir)
    form = f"a:{args.bars // 2},b:{args.bars - args.bars // 2}"
    result: dict[str, Any] = {"machine": machine(), "args": vars(args), "arousal_threshold": threshold}
    all_rows: list[dict] = []
    t0 = time.time()
    for n_ckpt, ckpt in enumerate(args.checkpoints):
        last = not args.sweep_last or n_ckpt >= len(args.checkpoints) - args.sweep_last
        full = not args.parts_only  # the request grid, the guidance sweep and plain sampling
        sweeps = args.parts_only or (not args.mode_only and last)
        model, state = load_planner(ckpt)
        model.eval()
        codec = codec_from_checkpoint(state)
        kind = "aligned" if state.get("kind") == "aligned_planner" else "supervised"
        kind = f"{kind}: {Path(ckpt).parent.name}"
        if kind in result.get("checkpoints", {}):  # two checkpoints in folders of one name: the folder above too
            kind = f"{kind} ({Path(ckpt).parent.parent.name})"
        stats = dict(state["data_stats"])
        if "keys" not in stats:  # a checkpoint from before keys were recorded: the same data's keys, said
            stats["keys"] = data_stats(
                [r for r in read_jsonl(Path(args.data_dir) / "manifest.jsonl") if r["split"] == "train"]
            )["keys"]
            result.setdefault("keys_from_manifest", []).append(kind)
        result.setdefault("checkpoints", {})[kind] = {
            "path": ckpt,
            "step": state["step"],
            "val_loss": state["val_loss"],
        }
        gen = SongGenerator(model, codec, stats, gcfg.controls)
        plain = SongGenerator(model, codec, stats, dataclasses.replace(gcfg.controls, masks=False))
        unlimited = SongGenerator(model, codec, stats, dataclasses.replace(gcfg.controls, part_limits=False))
        styles = gen.known_styles

        def request(style: str, emotion: str, seed: int, key: str, instruments: str, **kw: Any) -> SongRequest:
            prompt = f"a {style.lower()} piece" + (f" for {instruments}" if instruments else "")
            tempo = gcfg.default_tempo.get(emotion, 100.0)
            kw.setdefault("sampling", gcfg.sampling)
            return SongRequest(prompt, style, emotion, tempo, form, key=key, seed=seed, **kw)

        cells = []
        for style in styles if full else []:
            own = prompt_word(state["data_stats"]["style_programs"][style][0])
            for emotion in EMOTIONS:
                for key in ("", DEMOS[emotion][4]) if not args.mode_only else ("",):
                    for instruments in ("", own, "fiddle and flute") if not args.mode_only else ("",):
                        for seed in range(args.seeds):
                            cell = {"checkpoint": kind, "style": style, "emotion": emotion, "key_given": bool(key)}
                            cell |= {"instruments": instruments or "-", "guidance": 1.0, "sampling": "masks"}
                            cells.append(({**cell, "limits": "on"}, request(style, emotion, seed, key, instruments)))
        # the sweeps over the no-key, no-instrument cells: guidance, then mode guidance (with --mode_only too)
        swept = [{"guidance": g} for g in args.guidance if g != 1.0 and sweeps and full]
        scales = [m for m in args.mode_guidance if m > 0 and full and (sweeps or args.mode_only)]
        swept += [{"mode_guidance": m, "mode_negative": args.mode_negative} for m in scales]
        for change in swept:
            sampling = dataclasses.replace(gcfg.sampling, **change)
            for style in styles:
                for emotion in EMOTIONS:
                    for seed in range(args.seeds):
                        cell = {"checkpoint": kind, "style": style, "emotion": emotion, "key_given": False}
                        cell |= {"instruments": "-", "guidance": 1.0, "sampling": "masks", "limits": "on", **change}
                        cells.append((cell, request(style, emotion, seed, "", "", sampling=sampling)))
        plain_cells = []
        for style in styles if sweeps and full else []:
            for emotion in EMOTIONS:
                for metre in ("4/4", "3/4", "6/8"):
                    for seed in range(args.seeds):
                        cell = {"checkpoint": kind, "style": style, "emotion": emotion, "key_given": False}
                        cell |= {"instruments": "-", "guidance": 1.0, "metre": metre, "limits": "on"}
                        req = request(style, emotion, seed, "", "", time_signature=metre)
                        plain_cells.append(({**cell, "sampling": "plain"}, req))
                        if metre != "4/4":
                            cells.append(({**cell, "sampling": "masks"}, req))
        part_cells = []  # parts with the limits on (the masked grid's generator) and off
        for style in styles if sweeps else []:
            for emotion in EMOTIONS:
                for instruments in PART_PROMPTS:
                    for seed in range(args.seeds):
                        cell = {"checkpoint": kind, "style": style, "emotion": emotion, "key_given": False}
                        cell |= {"instruments": instruments, "guidance": 1.0, "sampling": "masks", "part_sweep": True}
                        req = request(style, emotion, seed, "", instruments)
                        cells.append(({**cell, "limits": "on"}, req))
                        part_cells.append(({**cell, "limits": "off"}, req))
        prompts = sorted({r.prompt for _, r in cells + plain_cells})
        text = dict(zip(prompts, embed_texts(prompts)))
        rows = run_grid(gen, cells, text, f"{kind}: masks") + run_grid(plain, plain_cells, text, f"{kind}: plain")
        rows += run_grid(unlimited, part_cells, text, f"{kind}: no part limits")
        for r, (_, req) in zip(rows, cells + plain_cells + part_cells):
            r["checks"] = song_checks(r.pop("facts"), req, r["instruments"] != "-", threshold)
            r.setdefault("metre", "4/4")
            r.setdefault("mode_guidance", 0.0)
        all_rows += rows
    result["seconds"] = round(time.time() - t0, 1)
    grid = [r for r in all_rows if not r.get("part_sweep")]
    guided = [r for r in grid if r["mode_guidance"] > 0]
    result["mode_guidance"] = summarise(guided, ("checkpoint", "mode_guidance", "style", "emotion"))
    result["mode_guidance_all"] = summarise(guided, ("checkpoint", "mode_guidance"))
    grid = [r for r in grid if r["mode_guidance"] == 0]
    base = [r for r in grid if r["guidance"] == 1.0 and r["sampling"] == "masks" and r["metre"] == "4/4"]
    result["by_key_and_instruments"] = summarise(base, ("checkpoint", "key_given", "instruments"))
    no_key = [r for r in base if not r["key_given"] and r["instruments"] == "-"]
    result["mode_by_style_emotion"] = summarise(no_key, ("checkpoint", "style", "emotion"))
    if not args.parts_only:  # the measure's ceiling: real pieces cut to the songs' length
        result["mode_real"] = summarise(real_mode(args.data_dir, codec, args.bars), ("checkpoint", "style", "emotion"))
    sweep = [r for r in grid if r["sampling"] == "masks" and not r["key_given"] and r["instruments"] == "-"]
    result["guidance_sweep"] = summarise([r for r in sweep if r["metre"] == "4/4"], ("checkpoint", "guidance"))
    result["metre"] = summarise(
        [r for r in grid if r["guidance"] == 1.0 and r["instruments"] == "-" and not r["key_given"]],
        ("checkpoint", "sampling", "metre"),
    )
    result["parts"] = summarise([r for r in all_rows if r.get("part_sweep")], ("checkpoint", "instruments", "limits"))
    result["rows"] = all_rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out), json.dumps(result, indent=1))
    cols = ["raw_mode", "mode", "raw_arousal", "arousal", "raw_key", "key", "raw_named_share", "named_share"]
    cols += ["raw_in_range", "raw_solo_within_voices", "fix_resampled", "fix_parallel_mode", "fix_reassigned"]
    print(f"# Controls, raw and delivered ({machine()}, {result['seconds']} s)\n")
    print(table(result["by_key_and_instruments"], ["checkpoint", "key_given", "instruments", "songs", *cols]))
    print("\n## Mode without a key (the key plan), guidance 1\n")
    cols = ["songs", "raw_mode", "raw_plan_key", "raw_relative_key", "mode"]
    print(table(result["mode_by_style_emotion"], ["checkpoint", "style", "emotion", *cols]))
    if "mode_real" in result:
        print(f"\n## The same mode estimate over the first {args.bars} bars of real validation pieces (its ceiling)\n")
        print(table(result["mode_real"], ["checkpoint", "style", "emotion", "songs", "raw_mode"]))
    if guided:
        print("\n## Mode guidance (no key, no instrument, guidance 1)\n")
        cols = ["songs", "raw_mode", "mode", "raw_arousal", "fix_resampled", "fix_parallel_mode"]
        print(table(result["mode_guidance_all"], ["checkpoint", "mode_guidance", *cols]))
        print()
        cols = ["songs", "raw_mode", "raw_plan_key", "raw_relative_key"]
        print(table(result["mode_guidance"], ["checkpoint", "mode_guidance", "style", "emotion", *cols]))
    print("\n## Guidance sweep (no key, no instrument)\n")
    print(table(result["guidance_sweep"], ["checkpoint", "guidance", "songs", "raw_mode", "raw_arousal", "raw_tempo"]))
    print("\n## Metre and plain sampling\n")
    print(table(result["metre"], ["checkpoint", "sampling", "metre", "songs", "raw_metre", "raw_mode", "raw_arousal"]))
    print("\n## Parts, part limits on and off (no key)\n")
    cols = ["raw_named_share", "raw_in_range", "raw_solo_within_voices", "raw_parts_through", "fix_unrestricted"]
    cols += ["fix_reassigned"]
    print(table(result["parts"], ["checkpoint", "instruments", "limits", "songs", *cols]))


if __name__ == "__main__":
    main()
