"""Preference pairs for DPO: the file format, its validation, and offline synthetic pairs.

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
corrupted copy of the same passage (:mod:`src.data.corruptions`), each with its heuristic scores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.data.corruptions import CORRUPTIONS, DEFAULT_CORRUPTIONS, PITCH_CORRUPTIONS, corrupt
from src.music.conditions import pair_condition_dict
from src.music.notes import bar_starts, time_signatures
from src.music.scoring import ScorerConfig, score_tokens
from src.music.tokenizer import SPECIAL_TOKENS

log = logging.getLogger(__name__)


@dataclass
class PreferenceConfig:
    enabled: bool = False
    out_path: str = "data/subsets/tiny/preference_data.json"
    train_pairs: int = 1000
    validation_pairs: int = 100
    prompt_bars: int = 2
    continuation_bars: int = 4
    max_tokens: int = 255  # prompt + continuation (the planner's block size minus BOS)
    corruptions: list[str] = field(default_factory=lambda: list(DEFAULT_CORRUPTIONS))
    seed: int = 0
    scorer: ScorerConfig = field(default_factory=ScorerConfig)

    def __post_init__(self) -> None:
        if bad := set(self.corruptions) - set(CORRUPTIONS):
            raise ValueError(f"preference.corruptions: unknown {sorted(bad)}; known: {', '.join(CORRUPTIONS)}")


# ----------------------------------------------------------------------------- synthetic pairs


def synthetic_pair(
    row: dict, ids: np.ndarray, codec: Any, cfg: PreferenceConfig, kind: str, rng: np.random.Generator
) -> dict | None:
    """A real passage of one piece against a corrupted copy; None when the piece cannot give one."""
    tok = codec.tok
    starts = codec.bar_token_starts(ids)
    P, C = cfg.prompt_bars, cfg.continuation_bars
    if len(starts) < P + C + 1:
        return None
    b0 = int(rng.integers(0, len(starts) - P - C))
    score = tok.decode(ids.tolist())
    tpq = score.ticks_per_quarter
    ticks = bar_starts(int(score.end()) + 1, tpq, time_signatures(score))
    if len(ticks) < b0 + P + C + 1:
        return None
    lo, hi = int(ticks[b0 + P]), int(ticks[b0 + P + C])
    bad = score.copy()
    changed = False
    for track in bad.tracks:
        if track.is_drum and kind in PITCH_CORRUPTIONS:
            continue
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
    gs, bs = codec.bar_token_starts(good_ids), codec.bar_token_starts(bad_ids)
    if len(gs) < b0 + P + C + 1 or len(bs) < b0 + P + C + 1:
        return None
    prompt = good_ids[gs[b0] : gs[b0 + P]]
    if not np.array_equal(prompt, bad_ids[bs[b0] : bs[b0 + P]]):
        return None
    chosen = good_ids[gs[b0 + P] : gs[b0 + P + C]]
    rejected = bad_ids[bs[b0 + P] : bs[b0 + P + C]]
    if len(prompt) + max(len(chosen), len(rejected)) > cfg.max_tokens or np.array_equal(chosen, rejected):
        return None
    conds = pair_condition_dict(row, b0)
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


def build_synthetic_pairs(cfg: PreferenceConfig, rows: list[dict], store: Any, codec: Any, tok_hash: str) -> dict:
    """A pair file's contents: pairs from train and validation pieces, corruptions in turn, and their summary
    (stage 1 writes it to ``cfg.out_path`` as a cached step's record)."""
    from tqdm import tqdm

    rng = np.random.default_rng(cfg.seed)
    pairs: list[dict] = []
    taken: set[str] = set()  # a pair's id is its piece, bar and corruption: drawn twice, it is drawn again
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
                if pair is not None and pair["id"] not in taken:
                    taken.add(pair["id"])
                    pairs.append(pair)
                    made += 1
                    bar.update(1)
    wins = [p["scores"]["chosen"] > p["scores"]["rejected"] for p in pairs]
    summary = {
        "pairs": len(pairs),
        "by_source": {k: sum(p["source"] == k for p in pairs) for k in sorted({p["source"] for p in pairs})},
        "chosen_scores_higher": round(float(np.mean(wins)), 3) if wins else 0.0,
    }
    log.info("preference pairs: %s -> %s", summary, cfg.out_path)
    return {"tokenizer_hash": tok_hash, "summary": summary, "pairs": pairs}


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
    first = len(SPECIAL_TOKENS)  # special tokens are no music
    if not isinstance(ids, list) or not all(isinstance(i, int) and first <= i < vocab for i in ids):
        raise ValueError(f"{where}.{part}: must be a list of token ids in [{first}, {vocab})")
    if required and not ids:
        raise ValueError(f"{where}.{part}: empty")
    return ids
