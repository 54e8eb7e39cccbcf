"""The closed vocabularies every stage shares: styles, emotions, time signatures, drums."""

from __future__ import annotations

import re

STYLES = ("POP", "CLASSICAL", "JAZZ", "FOLK", "ELECTRONIC", "AMBIENT")
UNLABELLED = "UNLABELLED"  # the style of a piece no source labelled (its style condition is dropped)
EMOTIONS = ("HAPPY", "SAD", "TENSE", "PEACEFUL")
HIGH_AROUSAL = ("HAPPY", "TENSE")
MINOR_EMOTIONS = ("SAD", "TENSE")  # low valence: the labels give these to minor-mode pieces


def mode_of(emotion: str) -> str:
    """The mode (valence) an emotion label stands for."""
    return "minor" if emotion in MINOR_EMOTIONS else "major"


TIME_SIGNATURES = ("4/4", "3/4", "2/4", "6/8", "12/8", "3/8", "5/4", "6/4", "1/4")
DRUMS = 128  # the drum kit's program number in manifests, conditions and prompts (GM programs are 0..127)
# Prompt words that name a metre (dances and forms) -> a time signature of TIME_SIGNATURES.
METRE_WORDS = {
    "waltz": "3/4",
    "minuet": "3/4",
    "mazurka": "3/4",
    "polonaise": "3/4",
    "sarabande": "3/4",
    "jig": "6/8",
    "gigue": "6/8",
    "tarantella": "6/8",
    "barcarolle": "6/8",
    "siciliana": "6/8",
    "march": "2/4",
    "polka": "2/4",
    "reel": "4/4",
    "hornpipe": "4/4",
}


def metre_in_prompt(prompt: str) -> tuple[str, str] | None:
    """The first metre word a prompt names and its time signature, e.g. ("waltz", "3/4"); None if none."""
    text = re.sub(r"[^a-z]+", " ", prompt.lower())
    hits = [(m.start(), w) for w in METRE_WORDS for m in re.finditer(rf"\b{w}(e?s)?\b", text)]
    if not hits:
        return None
    word = min(hits)[1]
    return word, METRE_WORDS[word]


def style_label(style: str | None) -> str:
    """A style for tables and statistics: None (unlabelled) becomes ``UNLABELLED``."""
    return style or UNLABELLED


# an emotion with the other valence and the same arousal: the label of a piece moved to the parallel mode
PARALLEL_EMOTION = {"HAPPY": "TENSE", "TENSE": "HAPPY", "PEACEFUL": "SAD", "SAD": "PEACEFUL"}


def emotion_of(mode: str, arousal: float, threshold: float) -> str:
    """Russell's quadrants as in EMOPIA: valence = mode, arousal = onsets per second against ``threshold``."""
    high = arousal >= threshold
    if mode == "major":
        return "HAPPY" if high else "PEACEFUL"
    return "TENSE" if high else "SAD"
