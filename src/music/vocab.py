"""The closed vocabularies every stage shares: styles, emotions, time signatures, drums."""

from __future__ import annotations

STYLES = ("POP", "CLASSICAL", "JAZZ", "FOLK", "ELECTRONIC", "AMBIENT")
UNLABELLED = "UNLABELLED"  # the style of a piece no source labelled (its style condition is dropped)
EMOTIONS = ("HAPPY", "SAD", "TENSE", "PEACEFUL")
HIGH_AROUSAL = ("HAPPY", "TENSE")
TIME_SIGNATURES = ("4/4", "3/4", "2/4", "6/8", "12/8", "3/8", "5/4", "6/4", "1/4")
DRUMS = 128  # the drum kit's program number in manifests, conditions and prompts (GM programs are 0..127)


def style_label(style: str | None) -> str:
    """A style for tables and statistics: None (unlabelled) becomes ``UNLABELLED``."""
    return style or UNLABELLED


def emotion_of(mode: str, arousal: float, threshold: float) -> str:
    """Russell's quadrants as in EMOPIA: valence = mode, arousal = onsets per second against ``threshold``."""
    high = arousal >= threshold
    if mode == "major":
        return "HAPPY" if high else "PEACEFUL"
    return "TENSE" if high else "SAD"
