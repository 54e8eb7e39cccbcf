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

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from src.data.token_store import TokenStore
from src.eval import metrics as M
from src.eval.config import EvalConfig
from src.eval.judges import Judge, judge_features
from src.generation.song import SongControls, SongGenerator, SongRequest
from src.models.builders import codec_from_checkpoint, load_codec, load_planner
from src.models.sampling import SamplingConfig
from src.models.text_encoder import caption_embeddings
from src.music.conditions import Conditions
from src.music.features import HISTOGRAM_METRICS, SCALAR_METRICS, TEXTURE_METRICS, piece_metrics, texture
from src.music.form import form_of, parse_form, total_bars
from src.music.instruments import instruments_in_prompt, score_programs
from src.music.notes import notes_array, onsets_per_second, parse_time_signature
from src.music.scoring import SCORED_FEATURES
from src.music.theory import estimate_key, key_name, parse_key
from src.music.tokenizer import BOS, TokenCodec
from src.music.vocab import HIGH_AROUSAL, mode_of, style_label
from src.training.symbolic import data_stats
from src.utils.io import read_jsonl
from src.utils.parallel import pool_map

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
    texture: dict[str, float] = field(default_factory=dict)

    def measure(self) -> Piece:
        num, den = parse_time_signature(self.time_signature)
        self.metrics = piece_metrics(self.notes, self.tpq, self.qpm, [(0, num, den)])
        self.texture = texture(self.notes, self.tpq)
        return self

    @property
    def style(self) -> str:
        return style_label(self.request["row"]["style"]) if "row" in self.request else "-"

    def realism_features(self, unscored: bool = False) -> np.ndarray:
        """The real-vs-generated classifier's input: every scalar metric, histogram and texture measure; with
        ``unscored``, without the scalars that DPO's heuristic scores (SCORED_FEATURES)."""
        names = [k for k in SCALAR_METRICS if not (unscored and k in SCORED_FEATURES)]
        scalars = [self.metrics[k] for k in names] + [self.texture[k] for k in TEXTURE_METRICS]
        return np.concatenate([scalars, *(self.metrics[k] for k in HISTOGRAM_METRICS)])

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


def writable_rows(rows: list[dict], codec: TokenCodec) -> tuple[list[dict], list[dict]]:
    """(conditions the generator can write, those left out with their reason): a metre the tokenizer cannot
    write bars of (9/8, which it re-bars as 4/4) cannot be asked for."""
    kept: list[dict] = []
    left: list[dict] = []
    for r in rows:
        if codec.written_metre(r["time_signature"]):
            kept.append(r)
        else:
            left.append({"id": r["id"], "reason": f"the tokenizer cannot write {r['time_signature']} bars"})
    return kept, left


def real_pieces(
    data_dir: str | Path, split: str, codec: TokenCodec, limit: int = 0, seed: int = 0, max_bars: int = 0
) -> list[Piece]:
    """The split's pieces as the planner sees them (decoded from their tokens), with their labels; with
    ``max_bars``, each piece's first ``max_bars`` bars (as long as the songs made under its conditions, so
    that length, which moves pitch range, pitch classes and repetition, does not tell them apart)."""
    rows = [r for r in read_jsonl(Path(data_dir) / "manifest.jsonl") if r["split"] == split]
    if limit and len(rows) > limit:
        rows = [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), limit, replace=False))]
    store = TokenStore(data_dir)
    out = []
    for r in tqdm(rows, desc=f"real {split} pieces", unit="piece", leave=False):
        ids = store[store.row_to_item[r["row"]]].astype(np.int64)
        opens = codec.bar_token_starts(ids)
        if max_bars and len(opens) > max_bars:
            ids = ids[: opens[max_bars]]  # BPE tokens never span a bar line
        score = codec.decode(ids)
        out.append(piece_from_score(r["id"], score, ids.tolist(), qpm=float(r["tempo"]), request={"row": r}))
    return out


def song_piece(
    gen: SongGenerator, row: dict, i: int, j: int, text: np.ndarray, max_bars: int, seed: int, sampling: SamplingConfig
) -> Piece:
    """Song ``j`` of condition ``i`` (seeded by both, so it is the same whichever process makes it)."""
    req = request_of(row, max_bars, seed + 1000 * i + j, sampling)
    song = gen.generate(req, text, parse_form(req.form, req.bars_per_section))
    return piece_from_score(
        f"{row['id']}#{j}", song.score, song.ids, request={"row": row, "req": req}, facts=song.facts
    )


def generate_set(
    gen: SongGenerator,
    rows: list[dict],
    text_emb: np.ndarray,
    num_samples: int,
    max_bars: int,
    seed: int,
    sampling: SamplingConfig,
    name: str,
) -> list[Piece]:
    """``num_samples`` songs per held-out condition (seeded per condition and sample), in this process."""
    return [
        song_piece(gen, row, i, j, text_emb[row["row"]], max_bars, seed, sampling)
        for i, row in enumerate(tqdm(rows, desc=f"generating ({name})", unit="condition"))
        for j in range(num_samples)
    ]


_WORKER_GENERATORS: dict[str, SongGenerator] = {}  # a generation worker's planners, loaded once per process


def _init_generation_worker(checkpoints: list[str], data_dir: str, controls: SongControls) -> None:
    torch.set_num_threads(1)  # one core per worker: the same numbers however many workers share the songs
    for path in checkpoints:
        model, state = load_planner(path, data_dir)
        _WORKER_GENERATORS[path] = SongGenerator(model, codec_from_checkpoint(state), state["data_stats"], controls)


def _song_job(job: tuple) -> Piece:
    path, row, i, j, text, max_bars, seed, sampling = job
    return song_piece(_WORKER_GENERATORS[path], row, i, j, text, max_bars, seed, sampling)


def generate_sets(
    checkpoints: list[str],
    data_dir: str,
    controls: SongControls,
    rows: list[dict],
    text_emb: np.ndarray,
    cfg: EvalConfig,
    sampling: SamplingConfig,
) -> dict[str, list[Piece]]:
    """Every checkpoint's songs for ``rows``, over ``cfg.workers`` processes of one thread each (songs are
    independent and seeded by condition, so the result does not depend on how they are shared out)."""
    jobs = [
        (path, row, i, j, text_emb[row["row"]], cfg.max_bars, cfg.seed, sampling)
        for path in checkpoints
        for i, row in enumerate(rows)
        for j in range(cfg.num_samples)
    ]
    workers = cfg.workers or os.cpu_count() or 1
    init = (checkpoints, data_dir, controls)
    threads = torch.get_num_threads()
    try:
        songs = pool_map(_song_job, jobs, workers, "generating", _init_generation_worker, init, "song", "spawn")
    finally:  # one worker (or few songs) runs here, on one thread as well
        torch.set_num_threads(threads)
        _WORKER_GENERATORS.clear()
    per = len(rows) * cfg.num_samples
    return {path: songs[k * per : (k + 1) * per] for k, path in enumerate(checkpoints)}


class BigramStepper:
    """Next-token log-probabilities of a bigram table (the :class:`~src.generation.song.Stepper` protocol)."""

    def __init__(self, log_probs: torch.Tensor):
        self.log_probs = log_probs  # (V, V): row = previous token

    def start(self, prompt: torch.Tensor) -> torch.Tensor:
        return self.log_probs[int(prompt[0, -1])][None]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        return self.log_probs[int(token[-1])][None]


class BigramBaseline:
    """Per-style token bigram (add-one) of the training split: the floor. Its songs come from the same
    :class:`SongGenerator` as the planners' (same masks, key plan, re-sampling and fix-ups)."""

    def __init__(self, data_dir: str | Path, codec: TokenCodec):
        self.codec = codec
        V = len(codec.bpe_to_base)
        store = TokenStore(data_dir)
        counts: dict[str, np.ndarray] = {}
        for r in read_jsonl(Path(data_dir) / "manifest.jsonl"):
            if r["split"] != "train" or r["row"] not in store.row_to_item:
                continue
            ids = np.concatenate([[BOS], store[store.row_to_item[r["row"]]].astype(np.int64)])
            c = counts.setdefault(r["style"], np.ones((V, V), np.float64))
            np.add.at(c, (ids[:-1], ids[1:]), 1)
        self.log_probs = {s: torch.from_numpy(np.log(c / c.sum(1, keepdims=True))).float() for s, c in counts.items()}
        pooled = sum(counts.values())
        self.pooled = torch.from_numpy(np.log(pooled / pooled.sum(1, keepdims=True))).float()

    def stepper(self, cond: Conditions, cond_fn: Any, sampling: SamplingConfig) -> BigramStepper:
        return BigramStepper(self.log_probs.get(cond.style, self.pooled))


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


def control_accuracy(pieces: list[Piece], judges: dict[str, Judge], arousal_threshold: float = 2.5) -> dict[str, float]:
    """Shares of generated songs whose result matches the request (NaN: nothing to check).

    Delivered (the song as written, after the generator's fix-ups): tempo, bars, named instruments, key,
    mode, arousal, and emotion and style as the judges hear them. ``raw_*``: the first sample as the model
    wrote it (``facts["raw"]``), before re-sampling, transposition, parallel-mode mapping, voice
    reassignment or the tempo rewrite. ``fix_*``: how often each fix-up fired. Valence is the estimated
    mode; arousal is onsets per second at the requested tempo on the emotion's side of the labels'
    threshold; ``raw_named_share``: the mean share of notes the model put on the named programs."""
    if not pieces or "req" not in pieces[0].request:
        return {}
    checks: dict[str, list[float]] = {}

    def add(name: str, value: Any) -> None:
        checks.setdefault(name, []).append(float(value))

    x = np.stack([p.judged() for p in pieces])
    predictions = {k: j.predict(x) for k, j in judges.items()}
    for i, p in enumerate(pieces):
        req = p.request["req"]
        want_bars = total_bars(parse_form(req.form, req.bars_per_section))
        add("tempo", abs(p.qpm - req.tempo) < 0.5)
        add("bars", p.facts.get("bars") == want_bars)
        named = [prog for _, prog in instruments_in_prompt(req.prompt)]
        if named:
            add("instruments", set(named) <= set(p.programs))
        tonic, mode, _ = estimate_key(p.notes)
        if req.key:
            add("key", (tonic, mode) == parse_key(req.key))
        add("mode", mode == mode_of(req.emotion))
        high = onsets_per_second(p.notes, p.tpq, req.tempo) >= arousal_threshold
        add("arousal", high == (req.emotion in HIGH_AROUSAL))
        if p.facts.get("raw"):
            for k, v in raw_checks(p.facts, req, bool(named), arousal_threshold).items():
                add(k, v)
        for k in judges:
            if getattr(req, k) is not None:  # an unlabelled piece's request names no style
                add(k, predictions[k][i] == getattr(req, k))
    out = {k: float(np.mean(v)) for k, v in checks.items()}
    for k in ("tempo", "bars", "instruments", "key", "mode", "arousal", *judges):
        out.setdefault(k, float("nan"))
    return out | {"instrument_requests": len(checks.get("instruments", []))}


def raw_checks(facts: dict[str, Any], req: SongRequest, named: bool, arousal_threshold: float) -> dict[str, float]:
    """One song's checks of the first sample as the model wrote it (``facts["raw"]``) and which fix-ups fired
    (``facts["fixups"]``); the evaluation report and ``bench.eval_controls`` both count these."""
    raw, fix = facts["raw"], facts["fixups"]
    checks = {
        "raw_mode": raw["mode"] == mode_of(req.emotion),
        "raw_arousal": (raw["onsets_per_second"] >= arousal_threshold) == (req.emotion in HIGH_AROUSAL),
        "raw_tempo": raw["tempo"] is not None and abs(raw["tempo"] - req.tempo) <= 0.1 * req.tempo,
        "fix_resampled": fix["samples"] > 1,
        "fix_transposed": bool(fix.get("transposed")),
        "fix_parallel_mode": bool(fix.get("parallel_mode")),
    }
    if req.key:  # against the key the planner was given (tonic C for a key-relative planner)
        checks["raw_key"] = raw["key"] == facts.get("conditioned_key", key_name(*parse_key(req.key)))
    if named:
        checks["fix_reassigned"] = bool(fix.get("voices_reassigned"))
        checks["fix_unrestricted"] = bool(fix.get("unrestricted_resample"))
        if raw["named_share"] is not None:  # None: a song without notes
            checks["raw_named_share"] = raw["named_share"]
    return {k: float(v) for k, v in checks.items()}


def diversity(sets: dict[str, list[Piece]], seed: int) -> dict[str, float]:
    """Distinct 4-grams of each set's tokens, on the same number of 4-grams for every set."""
    count = min(sum(max(len(p.ids) - 3, 0) for p in ps) for ps in sets.values())
    return {name: M.distinct_ngrams([p.ids for p in ps], 4, count=count, seed=seed) for name, ps in sets.items()}


def real_vs_generated(
    real: list[Piece], other: list[Piece], seed: int, folds: int = 5, unscored: bool = False
) -> float:
    """Cross-validated accuracy of a logistic regression telling ``real`` from ``other`` pieces on
    :meth:`Piece.realism_features` (``unscored``: without what DPO's heuristic scores), on equal numbers of each
    (0.5 = indistinguishable; NaN: too few)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(real), len(other))
    if n < folds:
        return float("nan")
    rng = np.random.default_rng(seed)
    a = [real[i] for i in sorted(rng.choice(len(real), n, replace=False))]
    b = [other[i] for i in sorted(rng.choice(len(other), n, replace=False))]
    x = np.stack([p.realism_features(unscored) for p in a + b])
    y = np.array([1] * n + [0] * n)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, x, y, cv=cv).mean())


def texture_by_style(sets: dict[str, list[Piece]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per set and style: the mean of each texture measure and the number of pieces."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, pieces in sets.items():
        for style in sorted({p.style for p in pieces}):
            mine = [p for p in pieces if p.style == style]
            means = {k: float(np.mean([p.texture[k] for p in mine])) for k in TEXTURE_METRICS}
            out.setdefault(name, {})[style] = {**means, "pieces": len(mine)}
    return out


def arousal_threshold(data_dir: str | Path) -> float:
    """The onsets per second that separated high from low arousal when stage 1 labelled the data."""
    path = Path(data_dir) / "data_config.yaml"
    try:
        return float(yaml.safe_load(path.read_text())["labels"]["arousal_threshold"])
    except (OSError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: labels.arousal_threshold not found ({e}); rerun: bash 01_prepare_data.sh") from None


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
    checkpoints: list[str],
    data_dir: str,
    cfg: EvalConfig | None = None,
    midi_dirs: list[str] | None = None,
    sampling: SamplingConfig | None = None,
    controls: SongControls | None = None,
) -> dict[str, Any]:
    """Everything the report shows; the sets themselves under ``"sets"`` (for plots). ``sampling`` and
    ``controls`` are stage 5's (config/generation.yaml), so the report measures what a user gets."""
    cfg = cfg or EvalConfig()
    sampling, controls = sampling or SamplingConfig(), controls or SongControls()
    num_samples, max_bars, seed, split = cfg.num_samples, cfg.max_bars, cfg.seed, cfg.split
    if not checkpoints and not midi_dirs:
        raise ValueError("nothing to evaluate: give --checkpoint and/or --midi_dir")
    loaded = [(c, *load_planner(c, data_dir)) for c in checkpoints]
    codec = codec_from_checkpoint(loaded[0][2]) if loaded else load_codec(data_dir)
    test = real_pieces(data_dir, split, codec, max_bars=max_bars)
    if len(test) < 2:
        raise ValueError(f"{data_dir}: the {split} split has {len(test)} piece(s); the comparison needs 2 or more")
    train = real_pieces(data_dir, "train", codec, limit=cfg.train_pieces, seed=seed, max_bars=max_bars)
    rows = [p.request["row"] for p in test]
    if cfg.conditions:
        rows = [rows[i] for i in sorted(np.random.default_rng(seed).permutation(len(rows))[: cfg.conditions])]
    rows, left_out = writable_rows(rows, codec)
    for r in left_out:
        log.warning("condition %s left out: %s", r["id"], r["reason"])
    text_emb = caption_embeddings(data_dir)
    n_songs = len(rows) * num_samples  # the ceiling is a set of as many real pieces as each generated set has songs
    pick = np.random.default_rng(seed + 1).permutation(len(train))[:n_songs]
    ceiling = [train[i] for i in sorted(pick)]
    sets: dict[str, list[Piece]] = {"real test vs train (ceiling)": ceiling}
    kinds = {"real test vs train (ceiling)": "real"}
    songs = generate_sets(checkpoints, data_dir, controls, rows, text_emb, cfg, sampling) if loaded else {}
    for path, _, state in loaded:
        name = f"{Path(path).parent.parent.name}/{Path(path).parent.name}" if Path(path).parent.name else path
        name = f"{name} ({'aligned' if state.get('kind') == 'aligned_planner' else 'supervised'})"
        sets[name] = songs[path]
        kinds[name] = "checkpoint"
    for folder in midi_dirs or []:
        sets[f"midi: {folder}"] = midi_folder_set(folder, codec)
        kinds[f"midi: {folder}"] = "midi"
    if cfg.bigram:
        bigram = BigramBaseline(data_dir, codec)
        train_rows = [r for r in read_jsonl(Path(data_dir) / "manifest.jsonl") if r["split"] == "train"]
        gen = SongGenerator(None, codec, data_stats(train_rows), controls, stepper=bigram.stepper)
        name = "bigram (floor)"
        sets[name] = generate_set(gen, rows, text_emb, num_samples, max_bars, seed, sampling, name)
        kinds["bigram (floor)"] = "baseline"
    judges = train_judges(train, test, seed)
    comparisons = {name: compare(ps, test) for name, ps in tqdm(sets.items(), desc="comparing", unit="set")}
    div = diversity({**sets, "real test": test}, seed)
    threshold = arousal_threshold(data_dir)
    realism = {name: real_vs_generated(test, ps, seed) for name, ps in sets.items()}
    unscored = {name: real_vs_generated(test, ps, seed, unscored=True) for name, ps in sets.items()}
    accuracy = {name: control_accuracy(ps, judges, threshold) for name, ps in sets.items()}
    table = [
        {
            **summary_row(name, comparisons[name], len(sets[name])),
            "kind": kinds[name],
            "distinct_4grams": div[name],
            "real_vs_set_accuracy": realism[name],
            "real_vs_set_unscored": unscored[name],
            **{f"control_{k}": v for k, v in accuracy[name].items()},
        }
        for name in sets
    ]
    return {
        "data_dir": data_dir,
        "conditions": len(rows),
        "conditions_left_out": left_out,
        "num_samples": num_samples,
        "max_bars": max_bars,
        "seed": seed,
        "split": split,
        "sampling": dataclasses.asdict(sampling),
        "controls": dataclasses.asdict(controls),
        "real_test_pieces": len(test),
        "real_train_pieces_sampled": len(train),
        "ceiling_pieces": len(ceiling),
        "arousal_threshold": threshold,
        "judges": {
            k: {"classes": j.classes, "test_accuracy": j.test_accuracy, "test_pieces": j.test_pieces}
            for k, j in judges.items()
        },
        "real_test_distinct_4grams": div["real test"],
        "table": table,
        "texture": texture_by_style({"real test": test, **sets}),
        "features": comparisons,
        "sets": sets,
        "test": test,
    }
