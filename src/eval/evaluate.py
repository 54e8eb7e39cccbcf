"""Evaluate checkpoints (or MIDI folders) against held-out real music, the way the field reports it.

For every held-out (test split) piece, its conditions (caption, style, emotion, tempo, key, time
signature, section form, capped at ``max_bars``) ask each checkpoint for ``num_samples`` songs.
Every set (generated, baselines) is then measured with :mod:`src.music.features` and compared with
the real test pieces: per feature, Yang & Lerch's KL divergence and overlapping area; diversity as
distinct 4-grams; and, for generated songs, control accuracy (tempo, bars, named instruments, key,
and emotion and style as judged by classifiers trained on the real training split).

Baselines give every figure a scale: the real test split against the training split (the ceiling)
and a per-style bigram model sampled under the same conditions (the floor).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from src.data.token_store import TokenStore
from src.eval import metrics as M
from src.eval.config import EvalConfig
from src.eval.judges import Judge, judge_features
from src.generation.arrange import finalise
from src.generation.song import SongGenerator, SongRequest
from src.models.builders import codec_from_checkpoint, load_codec, load_planner
from src.models.sampling import Grammar, SamplingConfig
from src.models.text_encoder import caption_embeddings
from src.music.features import HISTOGRAM_METRICS, SCALAR_METRICS, piece_metrics
from src.music.form import form_of, parse_form, total_bars
from src.music.instruments import instruments_in_prompt, score_programs
from src.music.notes import notes_array, parse_time_signature
from src.music.theory import estimate_key, parse_key
from src.music.tokenizer import BOS, EOS, TokenCodec
from src.utils.io import read_jsonl

log = logging.getLogger(__name__)
FEATURES = (*SCALAR_METRICS, *HISTOGRAM_METRICS)


@dataclass
class Piece:
    """One piece to measure: its notes and what was asked of it (generated) or known (real)."""

    name: str
    notes: np.ndarray  # (N, 4)
    tpq: int
    qpm: float
    time_signature: str
    programs: list[int]
    ids: list[int]  # BPE tokens (diversity)
    request: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def measure(self) -> Piece:
        num, den = parse_time_signature(self.time_signature)
        self.metrics = piece_metrics(self.notes, self.tpq, self.qpm, [(0, num, den)])
        return self

    def judged(self) -> np.ndarray:
        return judge_features(self.metrics, self.notes, self.qpm, self.programs)


def piece_from_score(name: str, score: Any, ids: list[int], qpm: float | None = None, **extra: Any) -> Piece:
    """A measured piece; ``qpm`` overrides the score's tempo (a real piece's label, not its tempo bin)."""
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    if qpm is None:
        qpm = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    return Piece(
        name=name,
        notes=notes_array(score),
        tpq=score.ticks_per_quarter,
        qpm=qpm,
        time_signature=f"{ts.numerator}/{ts.denominator}" if ts else "4/4",
        programs=score_programs(score),
        ids=[int(i) for i in ids],
        **extra,
    ).measure()


def request_of(row: dict, max_bars: int, seed: int, sampling: SamplingConfig) -> SongRequest:
    return SongRequest(
        prompt=row["caption"],
        style=row["style"],
        emotion=row["emotion"],
        tempo=float(row["tempo"]),
        form=form_of(row["sections"], max_bars),
        key=row["key"],
        time_signature=row["time_signature"],
        seed=seed,
        sampling=sampling,
    )


def real_pieces(data_dir: str | Path, split: str, codec: TokenCodec, limit: int = 0, seed: int = 0) -> list[Piece]:
    """The split's pieces as the planner sees them (decoded from their tokens), with their labels."""
    rows = [r for r in read_jsonl(Path(data_dir) / "manifest.jsonl") if r["split"] == split]
    if limit and len(rows) > limit:
        rows = [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), limit, replace=False))]
    store = TokenStore(data_dir)
    out = []
    for r in tqdm(rows, desc=f"real {split} pieces", unit="piece", leave=False):
        ids = store[store.row_to_item[r["row"]]].astype(np.int64)
        score = codec.decode(ids)
        out.append(piece_from_score(r["id"], score, ids.tolist(), qpm=float(r["tempo"]), request={"row": r}))
    return out


def generate_set(
    model: Any,
    state: dict,
    codec: TokenCodec,
    rows: list[dict],
    text_emb: np.ndarray,
    num_samples: int,
    max_bars: int,
    seed: int,
    sampling: SamplingConfig,
    name: str,
) -> list[Piece]:
    """``num_samples`` songs per held-out condition from one checkpoint (seeded per condition and sample)."""
    gen = SongGenerator(model, codec, state["data_stats"])
    out = []
    for i, row in enumerate(tqdm(rows, desc=f"generating ({name})", unit="condition")):
        for j in range(num_samples):
            req = request_of(row, max_bars, seed + 1000 * i + j, sampling)
            song = gen.generate(req, text_emb[row["row"]], parse_form(req.form, req.bars_per_section))
            out.append(
                piece_from_score(
                    f"{row['id']}#{j}", song.score, song.ids, request={"row": row, "req": req}, facts=song.facts
                )
            )
    return out


class BigramBaseline:
    """Per-style token bigram (add-one), sampled under the REMI+ grammar to the requested bars: the floor."""

    def __init__(self, data_dir: str | Path, codec: TokenCodec):
        self.codec, self.grammar = codec, Grammar(codec)
        V = len(codec.bpe_to_base)
        store = TokenStore(data_dir)
        self.counts: dict[str, np.ndarray] = {}
        for r in read_jsonl(Path(data_dir) / "manifest.jsonl"):
            if r["split"] != "train" or r["row"] not in store.row_to_item:
                continue
            ids = np.concatenate([[BOS], store[store.row_to_item[r["row"]]].astype(np.int64)])
            c = self.counts.setdefault(r["style"], np.ones((V, V), np.float64))
            np.add.at(c, (ids[:-1], ids[1:]), 1)

    def sample(self, style: str, bars: int, gen: torch.Generator, max_tokens: int = 4096) -> list[int]:
        counts = torch.from_numpy(self.counts.get(style) if style in self.counts else sum(self.counts.values()))
        ids, prev, n_bars = [BOS], BOS, 0
        while len(ids) < max_tokens:
            allowed = self.grammar.mask(torch.tensor([prev]))[0]
            allowed[EOS] = False  # the song ends at its planned length
            p = counts[prev] * allowed
            nxt = int(torch.multinomial(p / p.sum(), 1, generator=gen))
            if self.codec.starts_bar[nxt]:
                if n_bars == bars:
                    break
                n_bars += 1
            ids.append(nxt)
            prev = nxt
        return ids


def bigram_set(bigram: BigramBaseline, rows: list[dict], num_samples: int, max_bars: int, seed: int) -> list[Piece]:
    out = []
    for i, row in enumerate(tqdm(rows, desc="generating (bigram)", unit="condition")):
        for j in range(num_samples):
            req = request_of(row, max_bars, seed + 1000 * i + j, SamplingConfig())
            sections = parse_form(req.form, req.bars_per_section)
            ids = bigram.sample(row["style"], total_bars(sections), torch.Generator().manual_seed(req.seed))
            score = finalise(bigram.codec.decode(ids), req.tempo, req.time_signature, sections)
            bars = int(np.sum(bigram.codec.starts_bar[np.array(ids)]))
            out.append(
                piece_from_score(
                    f"{row['id']}#{j}",
                    score,
                    ids,
                    request={"row": row, "req": req},
                    facts={"tempo": req.tempo, "bars": bars},
                )
            )
    return out


def midi_folder_set(folder: str | Path, codec: TokenCodec) -> list[Piece]:
    """Every .mid/.midi file of a folder as a set (no requests: distribution and diversity only)."""
    from symusic import Score

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .mid files")
    out = []
    for f in tqdm(files, desc=f"reading {folder}", unit="file"):
        score = Score(str(f))
        out.append(piece_from_score(f.name, score, list(codec.tok.encode(score).ids)))
    return out


# --------------------------------------------------------------------------------- measuring sets


def compare(gen: list[Piece], real: list[Piece]) -> dict[str, dict[str, float]]:
    """Per feature: Yang & Lerch's comparison of a set with the real test pieces."""
    return {
        f: M.compare_sets(np.stack([p.metrics[f] for p in gen]), np.stack([p.metrics[f] for p in real]))
        for f in FEATURES
    }


def control_accuracy(pieces: list[Piece], judges: dict[str, Judge]) -> dict[str, float]:
    """Shares of generated songs whose measured result matches the request (NaN: nothing to check)."""
    if not pieces or "req" not in pieces[0].request:
        return {}
    tempo, bars, instruments, key, judged = [], [], [], [], {k: [] for k in judges}
    x = np.stack([p.judged() for p in pieces])
    predictions = {k: j.predict(x) for k, j in judges.items()}
    for i, p in enumerate(pieces):
        req = p.request["req"]
        want_bars = total_bars(parse_form(req.form, req.bars_per_section))
        tempo.append(abs(p.qpm - req.tempo) < 0.5)
        bars.append(p.facts.get("bars") == want_bars)
        named = [prog for _, prog in instruments_in_prompt(req.prompt)]
        if named:
            instruments.append(set(named) <= set(p.programs))
        tonic, mode = parse_key(req.key)
        est = estimate_key(p.notes)
        key.append((est[0], est[1]) == (tonic, mode))
        for k in judges:
            if getattr(req, k) is not None:  # an unlabelled piece's request names no style
                judged[k].append(predictions[k][i] == getattr(req, k))
    share = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    return {
        "tempo": share(tempo),
        "bars": share(bars),
        "instruments": share(instruments),
        "instrument_requests": len(instruments),
        "key": share(key),
        **{k: share(v) for k, v in judged.items()},
    }


def diversity(sets: dict[str, list[Piece]], seed: int) -> dict[str, float]:
    """Distinct 4-grams of each set's tokens, on the same number of 4-grams for every set."""
    count = min(sum(max(len(p.ids) - 3, 0) for p in ps) for ps in sets.values())
    return {name: M.distinct_ngrams([p.ids for p in ps], 4, count=count, seed=seed) for name, ps in sets.items()}


def train_judges(train: list[Piece], test: list[Piece], seed: int) -> dict[str, Judge]:
    judges = {}
    x_train, x_test = np.stack([p.judged() for p in train]), np.stack([p.judged() for p in test])
    for fieldname in ("emotion", "style"):  # unlabelled pieces (style None, e.g. Lakh) are left out
        y = [p.request["row"][fieldname] for p in train]
        known = [i for i, v in enumerate(y) if v is not None]
        if len({y[i] for i in known}) < 2:
            log.warning("fewer than two %s labels in the training split: no %s judge", fieldname, fieldname)
            continue
        judge = Judge.fit(fieldname, x_train[known], [y[i] for i in known], seed)
        y_test = [p.request["row"][fieldname] for p in test]
        known_test = [i for i, v in enumerate(y_test) if v is not None]
        judge.score_on(x_test[known_test], [y_test[i] for i in known_test])
        judges[fieldname] = judge
    return judges


def summary_row(name: str, comparison: dict[str, dict[str, float]], n: int) -> dict[str, Any]:
    return {
        "set": name,
        "pieces": n,
        "mean_overlap": float(np.mean([c["overlap"] for c in comparison.values()])),
        "mean_kl": float(np.mean([c["kl"] for c in comparison.values()])),
    }


def evaluate(
    checkpoints: list[str], data_dir: str, cfg: EvalConfig | None = None, midi_dirs: list[str] | None = None
) -> dict[str, Any]:
    """Everything the report shows; the sets themselves under ``"sets"`` (for plots)."""
    cfg = cfg or EvalConfig()
    num_samples, max_bars, seed, split = cfg.num_samples, cfg.max_bars, cfg.seed, cfg.split
    if not checkpoints and not midi_dirs:
        raise ValueError("nothing to evaluate: give --checkpoint and/or --midi_dir")
    loaded = [(c, *load_planner(c, data_dir)) for c in checkpoints]
    codec = codec_from_checkpoint(loaded[0][2]) if loaded else load_codec(data_dir)
    test = real_pieces(data_dir, split, codec)
    if len(test) < 2:
        raise ValueError(f"{data_dir}: the {split} split has {len(test)} piece(s); the comparison needs 2 or more")
    train = real_pieces(data_dir, "train", codec, limit=cfg.train_pieces, seed=seed)
    rows = [p.request["row"] for p in test]
    if cfg.conditions:
        rows = [rows[i] for i in sorted(np.random.default_rng(seed).permutation(len(rows))[: cfg.conditions])]
    text_emb = caption_embeddings(data_dir)
    sets: dict[str, list[Piece]] = {"real test vs train (ceiling)": train}
    kinds = {"real test vs train (ceiling)": "real"}
    for path, model, state in loaded:
        name = f"{Path(path).parent.parent.name}/{Path(path).parent.name}" if Path(path).parent.name else path
        name = f"{name} ({'aligned' if state.get('kind') == 'aligned_planner' else 'supervised'})"
        torch.manual_seed(seed)
        sets[name] = generate_set(
            model, state, codec, rows, text_emb, num_samples, max_bars, seed, SamplingConfig(), name
        )
        kinds[name] = "checkpoint"
    for folder in midi_dirs or []:
        sets[f"midi: {folder}"] = midi_folder_set(folder, codec)
        kinds[f"midi: {folder}"] = "midi"
    if cfg.bigram:
        sets["bigram (floor)"] = bigram_set(BigramBaseline(data_dir, codec), rows, num_samples, max_bars, seed)
        kinds["bigram (floor)"] = "baseline"
    judges = train_judges(train, test, seed)
    comparisons = {name: compare(ps, test) for name, ps in tqdm(sets.items(), desc="comparing", unit="set")}
    div = diversity({**sets, "real test": test}, seed)
    controls = {name: control_accuracy(ps, judges) for name, ps in sets.items()}
    table = [
        {
            **summary_row(name, comparisons[name], len(sets[name])),
            "kind": kinds[name],
            "distinct_4grams": div[name],
            **{f"control_{k}": v for k, v in controls[name].items()},
        }
        for name in sets
    ]
    return {
        "data_dir": data_dir,
        "conditions": len(rows),
        "num_samples": num_samples,
        "max_bars": max_bars,
        "seed": seed,
        "split": split,
        "real_test_pieces": len(test),
        "real_train_pieces_sampled": len(train),
        "judges": {
            k: {"classes": j.classes, "test_accuracy": j.test_accuracy, "test_pieces": j.test_pieces}
            for k, j in judges.items()
        },
        "real_test_distinct_4grams": div["real test"],
        "table": table,
        "features": comparisons,
        "sets": sets,
        "test": test,
    }
