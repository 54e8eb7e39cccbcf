"""MusicCaps (Agostinelli et al., 2023; CC BY-SA 4.0) captions as an evaluation prompt set.

Only the caption table is used (no audio). Each row's caption is the text prompt; its tempo,
mood and genre words (in the caption and the ``aspect_list``) become the planner's tempo,
emotion and style controls, and its instrument words the instrument set (as for any prompt).
A control no word names falls back to a default, and every control records where it came from.
"""

from __future__ import annotations

import ast
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.data.downloads import RemoteFile
from src.music.instruments import instruments_in_prompt

MUSICCAPS = RemoteFile(url="https://huggingface.co/datasets/google/MusicCaps/resolve/main/musiccaps-public.csv")

# whole words, lower case. Tempo: the first listed phrase that occurs wins; emotion and style: the
# label named most often (ties: the earliest)
TEMPO_WORDS = {
    "very fast": 170.0, "very slow": 60.0, "slow tempo": 72.0, "medium tempo": 100.0, "moderate tempo": 100.0,
    "fast tempo": 140.0, "uptempo": 132.0, "up tempo": 132.0, "mid tempo": 100.0, "slow": 72.0, "fast": 140.0,
}  # fmt: skip
EMOTION_WORDS = {
    "HAPPY": ("happy", "joyful", "cheerful", "upbeat", "uplifting", "fun", "playful", "bright", "groovy", "festive"),
    "SAD": ("sad", "melancholic", "melancholy", "sorrowful", "mournful", "depressing", "nostalgic", "emotional",
            "heartfelt", "longing"),
    "TENSE": ("tense", "aggressive", "intense", "suspenseful", "scary", "dramatic", "angry", "ominous", "dark",
              "menacing", "epic"),
    "PEACEFUL": ("calm", "relaxing", "peaceful", "soothing", "mellow", "chill", "serene", "meditative", "gentle",
                 "dreamy", "relaxed", "tranquil"),
}  # fmt: skip
STYLE_WORDS = {
    "CLASSICAL": ("classical", "orchestra", "orchestral", "baroque", "symphonic", "opera", "string quartet"),
    "JAZZ": ("jazz", "swing", "bebop", "blues", "bossa nova"),
    "FOLK": ("folk", "country", "celtic", "bluegrass", "traditional"),
    "ELECTRONIC": ("electronic", "edm", "techno", "house", "trance", "dubstep", "synthwave", "electro",
                   "drum and bass"),
    "AMBIENT": ("ambient", "new age", "drone", "meditation"),
    "POP": ("pop", "k pop", "j pop", "r b", "dance pop"),
}  # fmt: skip


@dataclass
class CaptionPrompt:
    row: int  # 1-based data row of the CSV
    id: str  # ytid when the table has one
    caption: str
    aspects: list[str] = field(default_factory=list)


@dataclass
class PromptControls:
    style: str
    emotion: str
    tempo: float
    instruments: list[str]
    evidence: dict[str, str]  # control -> the word that set it, or "default"


def read_prompts(path: str | Path, limit: int = 0) -> list[CaptionPrompt]:
    """Rows of a MusicCaps-style CSV (a ``caption`` column; ``ytid`` and ``aspect_list`` optional)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--prompts_csv {path} not found; download MusicCaps' table with: python -m src.data.fetch musiccaps"
        )
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "caption" not in (reader.fieldnames or []):
            raise ValueError(f"--prompts_csv {path}: no 'caption' column (columns: {reader.fieldnames})")
        for n, rec in enumerate(reader, 1):
            caption = (rec.get("caption") or "").strip()
            if not caption:
                raise ValueError(f"--prompts_csv {path}: row {n} has an empty caption")
            out.append(CaptionPrompt(n, rec.get("ytid") or f"row{n}", caption, parse_aspects(rec.get("aspect_list"))))
            if limit and len(out) >= limit:
                break
    return out


def parse_aspects(text: str | None) -> list[str]:
    """MusicCaps' ``aspect_list`` is a Python list literal: "['pop', 'mellow piano']"."""
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [t.strip(" '\"") for t in text.strip("[]").split(",") if t.strip(" '\"")]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def _words(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "


def _vote(text: str, table: dict[str, tuple[str, ...]]) -> tuple[str, str] | None:
    """The label whose words occur most often in ``text`` (ties: the earliest), with its first word."""
    hits: dict[str, list[tuple[int, str]]] = {}
    for label, words in table.items():
        for w in words:
            hits.setdefault(label, []).extend((m.start(), w) for m in re.finditer(f" {w} ", text))
    hits = {k: sorted(v) for k, v in hits.items() if v}
    if not hits:
        return None
    label = max(hits, key=lambda k: (len(hits[k]), -hits[k][0][0]))
    return label, hits[label][0][1]


def controls_for(
    prompt: CaptionPrompt, default_style: str, default_emotion: str, default_tempo: dict[str, float]
) -> PromptControls:
    """Tempo, emotion, style and instruments named by one caption (and its aspects)."""
    text = _words(" . ".join([prompt.caption, *prompt.aspects]))
    evidence: dict[str, str] = {}
    style_hit = _vote(text, STYLE_WORDS)
    style = style_hit[0] if style_hit else default_style
    evidence["style"] = style_hit[1] if style_hit else "default"
    emotion_hit = _vote(text, EMOTION_WORDS)
    emotion = emotion_hit[0] if emotion_hit else default_emotion
    evidence["emotion"] = emotion_hit[1] if emotion_hit else "default"
    bpm = re.search(r"\b(\d{2,3})\s*bpm\b", prompt.caption.lower())
    tempo_hit = next((w for w in TEMPO_WORDS if f" {w} " in text), None)
    if bpm and 30 <= int(bpm.group(1)) <= 300:
        tempo, evidence["tempo"] = float(bpm.group(1)), bpm.group(0)
    elif tempo_hit:
        tempo, evidence["tempo"] = TEMPO_WORDS[tempo_hit], tempo_hit
    else:
        tempo, evidence["tempo"] = default_tempo.get(emotion, 100.0), "default"
    instruments = [w for w, _ in instruments_in_prompt(prompt.caption)]
    return PromptControls(style, emotion, tempo, instruments, evidence)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How often each control came from a word rather than a default."""
    n = max(1, len(rows))
    out: dict[str, Any] = {"prompts": len(rows)}
    for key in ("style", "emotion", "tempo"):
        out[f"{key}_from_words"] = round(sum(r["evidence"][key] != "default" for r in rows) / n, 3)
    out["with_instruments"] = round(sum(bool(r["instruments"]) for r in rows) / n, 3)
    return out
