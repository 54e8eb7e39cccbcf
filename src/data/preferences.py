"""Preference pairs for DPO: the file format, its validation, offline synthetic pairs, the dataset.

A pair file is JSON: ``{"tokenizer_hash": "...", "pairs": [entry, ...]}``. Each entry::

    {
      "id": "any unique name",
      "conditions": {"text": "a calm air for flute", "style": "FOLK", "emotion": "PEACEFUL",
                     "tempo": 84, "key": "F major", "time_signature": "4/4", "programs": [73],
                     "sections": "AABB"},          # every field optional (missing = unknown)
      "prompt": [BPE ids] | "prompt_midi": "path.mid",       # optional: empty = the song's start
      "chosen": [BPE ids] | "chosen_midi": "path.mid",
      "rejected": [BPE ids] | "rejected_midi": "path.mid",
      "source": "human", "scores": {"chosen": 0.8, "rejected": 0.4}   # optional
    }

Chosen and rejected continue the same prompt under the same conditions. MIDI paths are relative
to the pair file. Stage 1 writes synthetic pairs: a real passage of a training piece against a
corrupted copy of the same passage (corruptions below), each with its heuristic scores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from src.data.planner_dataset import BOS, IGNORE, PAD
from src.data.scoring import ScorerConfig, score_tokens
from src.eval.metrics import MAJOR_SCALE, MINOR_SCALE, PITCH_CLASSES, bar_starts
from src.models.conditions import Conditions, key_id, to_arrays
from src.utils.io import write_json

log = logging.getLogger(__name__)
CORRUPTIONS = ("out_of_key", "off_grid", "drop_notes", "stuck_notes", "random_repetition")


@dataclass
class PreferenceConfig:
    enabled: bool = False
    out_path: str = "data/subsets/tiny/preference_data.json"
    train_pairs: int = 1000
    validation_pairs: int = 100
    prompt_bars: int = 2
    continuation_bars: int = 4
    max_tokens: int = 255  # prompt + continuation (the planner's block size minus BOS)
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    seed: int = 0
    scorer: ScorerConfig = field(default_factory=ScorerConfig)

    def __post_init__(self) -> None:
        if bad := set(self.corruptions) - set(CORRUPTIONS):
            raise ValueError(f"preference.corruptions: unknown {sorted(bad)}; known: {', '.join(CORRUPTIONS)}")


# ----------------------------------------------------------------------------- corruptions


def corrupt(
    notes: list[Any],
    lo: int,
    hi: int,
    tpq: int,
    kind: str,
    bar_ticks: np.ndarray,
    key: tuple[int, str],
    rng: np.random.Generator,
) -> bool:
    """Corrupt, in place, the symusic notes starting in ticks [lo, hi); False if nothing changed.

    out_of_key: 40% of the notes move a semitone out of the key's scale; off_grid: half the onsets
    move by a 32nd note; drop_notes: half the notes vanish; stuck_notes: a third of the notes hold
    on to the passage's end; random_repetition: every bar becomes a copy of one random bar.
    """
    inside = [n for n in notes if lo <= n.time < hi]
    if not inside:
        return False
    pick = lambda share: [n for n in inside if rng.random() < share]  # noqa: E731
    if kind == "out_of_key":
        scale = set(((MAJOR_SCALE if key[1] == "major" else MINOR_SCALE) + key[0]) % 12)
        changed = False
        for n in pick(0.4):
            for step in rng.permutation([-1, 1]):
                if (n.pitch + step) % 12 not in scale and 0 <= n.pitch + step < 128:
                    n.pitch, changed = n.pitch + int(step), True
                    break
        return changed
    if kind == "off_grid":
        moved = pick(0.5)
        for n in moved:
            n.time = max(lo, n.time + int(rng.choice([-1, 1])) * max(1, tpq // 8))
        return bool(moved)
    if kind == "drop_notes":
        drop = {id(n) for n in pick(0.5)}
        keep = [n for n in notes if id(n) not in drop]
        notes.clear()
        notes.extend(keep)
        return bool(drop)
    if kind == "stuck_notes":
        stuck = pick(0.34)
        for n in stuck:
            n.duration = max(n.duration, min(hi - n.time, 4 * tpq))
        return bool(stuck)
    if kind == "random_repetition":
        bars = [b for b in bar_ticks if lo <= b < hi]
        if len(bars) < 2:
            return False
        bounds = list(bars) + [hi]
        src = int(rng.integers(len(bars)))
        a, b = bounds[src], bounds[src + 1]
        model = [n.copy() for n in inside if a <= n.time < b]
        keep = [n for n in notes if not lo <= n.time < hi]
        for start in bars:
            for n in model:
                c = n.copy()
                c.time = n.time - a + start
                keep.append(c)
        notes.clear()
        notes.extend(sorted(keep, key=lambda n: (n.time, n.pitch)))
        return True
    raise ValueError(f"unknown corruption {kind!r}")


def bar_token_starts(ids: np.ndarray, codec: Any) -> np.ndarray:
    """Index of the token that opens each bar."""
    return np.flatnonzero(codec.starts_bar[ids])


def synthetic_pair(
    row: dict, ids: np.ndarray, codec: Any, cfg: PreferenceConfig, kind: str, rng: np.random.Generator
) -> dict | None:
    """A real passage of one piece against a corrupted copy; None when the piece cannot give one."""
    tok = codec.tok
    starts = bar_token_starts(ids, codec)
    P, C = cfg.prompt_bars, cfg.continuation_bars
    if len(starts) < P + C + 1:
        return None
    b0 = int(rng.integers(0, len(starts) - P - C))
    score = tok.decode(ids.tolist())
    tpq = score.ticks_per_quarter
    sigs = [(ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures]
    ticks = bar_starts(int(score.end()) + 1, tpq, sigs)
    if len(ticks) < b0 + P + C + 1:
        return None
    lo, hi = int(ticks[b0 + P]), int(ticks[b0 + P + C])
    bad = score.copy()
    changed = False
    for track in bad.tracks:
        notes = list(track.notes)
        if corrupt(notes, lo, hi, tpq, kind, ticks, (row["key_tonic"], row["mode"]), rng):
            changed = True
        track.notes.clear()
        for n in sorted(notes, key=lambda n: (n.time, n.pitch)):
            track.notes.append(n)
    if not changed:
        return None
    good_ids = np.asarray(tok.encode(score).ids)
    bad_ids = np.asarray(tok.encode(bad).ids)
    gs, bs = bar_token_starts(good_ids, codec), bar_token_starts(bad_ids, codec)
    if len(gs) < b0 + P + C + 1 or len(bs) < b0 + P + C + 1:
        return None
    prompt = good_ids[gs[b0] : gs[b0 + P]]
    if not np.array_equal(prompt, bad_ids[bs[b0] : bs[b0 + P]]):
        return None
    chosen = good_ids[gs[b0 + P] : gs[b0 + P + C]]
    rejected = bad_ids[bs[b0 + P] : bs[b0 + P + C]]
    if len(prompt) + max(len(chosen), len(rejected)) > cfg.max_tokens or np.array_equal(chosen, rejected):
        return None
    conds = row_condition_dict(row, b0)
    s_good = score_tokens(chosen, tok, row["tempo"], row["time_signature"], row["emotion"], cfg.scorer)
    s_bad = score_tokens(rejected, tok, row["tempo"], row["time_signature"], row["emotion"], cfg.scorer)
    return {
        "id": f"{row['id']}#bar{b0}:{kind}",
        "piece": row["id"],
        "split": row["split"],
        "conditions": conds,
        "prompt": prompt.tolist(),
        "chosen": chosen.tolist(),
        "rejected": rejected.tolist(),
        "source": f"synthetic:{kind}",
        "scores": {"chosen": round(s_good["total"], 4), "rejected": round(s_bad["total"], 4)},
    }


def row_condition_dict(row: dict, bar0: int) -> dict[str, Any]:
    return {
        "text": row["caption"],
        "style": row["style"],
        "emotion": row["emotion"],
        "tempo": row["tempo"],
        "key": f"{PITCH_CLASSES[row['key_tonic']]} {row['mode']}",
        "time_signature": row["time_signature"],
        "programs": row["programs"],
        "sections": row["sections"][bar0:],
        "section_index": row["section_index"][bar0:],
    }


def build_synthetic_pairs(
    cfg: PreferenceConfig, rows: list[dict], store: Any, codec: Any, tok_hash: str, fingerprint: str = ""
) -> dict:
    """Write ``cfg.out_path``: pairs from train and validation pieces, corruptions in turn.

    The file carries ``fingerprint`` (of its inputs) and its summary, so a rerun can tell whether it is current.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(cfg.seed)
    pairs: list[dict] = []
    for split, n in (("train", cfg.train_pairs), ("validation", cfg.validation_pairs)):
        pool = [r for r in rows if r["split"] == split]
        if not pool or not n:
            continue
        made, tries = 0, 0
        with tqdm(total=n, desc=f"preference pairs ({split})", unit="pair") as bar:
            while made < n and tries < 5 * n:
                row = pool[int(rng.integers(len(pool)))]
                kind = cfg.corruptions[tries % len(cfg.corruptions)]
                tries += 1
                pair = synthetic_pair(row, store[store.row_to_item[row["row"]]].astype(np.int64), codec, cfg, kind, rng)
                if pair is not None:
                    pairs.append(pair)
                    made += 1
                    bar.update(1)
    wins = [p["scores"]["chosen"] > p["scores"]["rejected"] for p in pairs]
    summary = {
        "pairs": len(pairs),
        "by_source": {k: sum(p["source"] == k for p in pairs) for k in sorted({p["source"] for p in pairs})},
        "chosen_scores_higher": round(float(np.mean(wins)), 3) if wins else 0.0,
    }
    write_json(
        cfg.out_path, {"tokenizer_hash": tok_hash, "fingerprint": fingerprint, "summary": summary, "pairs": pairs}
    )
    log.info("preference pairs: %s -> %s", summary, cfg.out_path)
    return summary


# ----------------------------------------------------------------------------- reading pair files


@dataclass
class Pair:
    id: str
    conditions: dict[str, Any]
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    source: str = ""
    split: str = "train"


COND_KEYS = ("text", "style", "emotion", "tempo", "key", "time_signature", "programs", "sections", "section_index")


def load_pairs(path: str | Path, tokenizer: Any, tok_hash: str | None = None) -> list[Pair]:
    """Read and validate a pair file; a bad entry raises ValueError naming the entry and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no preference pairs; create them with: bash 01_prepare_data.sh (preference.enabled)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise ValueError(f'{path}: expected an object with a "pairs" list')
    if tok_hash and data.get("tokenizer_hash") not in (None, tok_hash):
        raise ValueError(f"{path}: made with tokenizer {data['tokenizer_hash']}, the model uses {tok_hash}")
    vocab = len(tokenizer)
    out, seen = [], set()
    for i, e in enumerate(data["pairs"]):
        where = f"{path}: pairs[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: not an object")
        pid = str(e.get("id", i))
        if pid in seen:
            raise ValueError(f"{where}.id: duplicate id {pid!r}")
        seen.add(pid)
        conds = e.get("conditions", {})
        if not isinstance(conds, dict) or (bad := set(conds) - set(COND_KEYS)):
            raise ValueError(f"{where}.conditions: unknown fields {sorted(bad) if isinstance(conds, dict) else conds}")
        seqs = {}
        for part in ("prompt", "chosen", "rejected"):
            seqs[part] = _sequence(e, part, where, path.parent, tokenizer, vocab, required=part != "prompt")
        out.append(
            Pair(
                pid,
                conds,
                seqs["prompt"],
                seqs["chosen"],
                seqs["rejected"],
                str(e.get("source", "")),
                str(e.get("split", "train")),
            )
        )
    if not out:
        raise ValueError(f"{path}: no pairs")
    return out


def _sequence(e: dict, part: str, where: str, base: Path, tokenizer: Any, vocab: int, required: bool) -> list[int]:
    if f"{part}_midi" in e:
        midi = base / str(e[f"{part}_midi"])
        if not midi.is_file():
            raise ValueError(f"{where}.{part}_midi: {midi} not found")
        try:
            return [int(i) for i in tokenizer.encode(midi).ids]
        except Exception as err:
            raise ValueError(f"{where}.{part}_midi: cannot tokenise {midi}: {err}") from None
    if part not in e:
        if required:
            raise ValueError(f"{where}: needs '{part}' (token ids) or '{part}_midi' (a MIDI path)")
        return []
    ids = e[part]
    if not isinstance(ids, list) or not all(isinstance(i, int) and 4 <= i < vocab for i in ids):
        raise ValueError(f"{where}.{part}: must be a list of token ids in [4, {vocab})")
    if required and not ids:
        raise ValueError(f"{where}.{part}: empty")
    return ids


def pair_conditions(c: dict[str, Any], text: np.ndarray | None) -> Conditions:
    """A pair's condition dict (strings as in the manifest) -> Conditions."""
    key = None
    if c.get("key"):
        from src.generation.song import parse_key

        tonic, mode = parse_key(c["key"])
        key = key_id(tonic, mode)
    sections = [ord(ch) - ord("A") for ch in c.get("sections", "")]
    return Conditions(
        text=text,
        style=c.get("style"),
        emotion=c.get("emotion"),
        tempo=c.get("tempo"),
        key=key,
        timesig=c.get("time_signature"),
        programs=c.get("programs"),
        plan_label=sections,
        plan_index=c.get("section_index") or list(range(len(sections))),
    )


class PreferenceDataset(Dataset):
    """Pairs as model inputs: [BOS] + prompt + continuation, targets only on the continuation."""

    def __init__(self, pairs: list[Pair], model_cfg: Any, text_emb: dict[str, np.ndarray]):
        self.pairs, self.cfg, self.text_emb = pairs, model_cfg, text_emb

    def __len__(self) -> int:
        return len(self.pairs)

    def encode(self, prompt: list[int], cont: list[int]) -> tuple[np.ndarray, np.ndarray]:
        T = self.cfg.block_size
        prompt = prompt[max(0, len(prompt) + len(cont) + 1 - T) :] if len(cont) < T else []
        seq = np.array([BOS, *prompt, *cont][: T + 1], dtype=np.int64)
        x = np.full(T, PAD, np.int64)
        y = np.full(T, IGNORE, np.int64)
        x[: len(seq) - 1] = seq[:-1]
        n_prompt = 1 + len(prompt)  # targets from position n_prompt - 1 on are continuation tokens
        y[n_prompt - 1 : len(seq) - 1] = seq[n_prompt:]
        return x, y

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        p = self.pairs[i]
        xc, yc = self.encode(p.prompt, p.chosen)
        xr, yr = self.encode(p.prompt, p.rejected)
        text = self.text_emb.get(p.conditions.get("text", ""))
        cond = to_arrays(pair_conditions(p.conditions, text), self.cfg)
        return {"x_chosen": xc, "y_chosen": yc, "x_rejected": xr, "y_rejected": yr, **cond}
