"""FluidSynth rendering of MIDI to audio with a General MIDI soundfont."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
INSTALL_HINT = "install it with: sudo apt-get install -y fluidsynth fluid-soundfont-gm (or bash setup.sh)"


def find_soundfont(path: str = "") -> str:
    """The configured soundfont, else the first GM soundfont found on the system."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"soundfont {path} not found")
        return path
    for cand in SOUNDFONT_CANDIDATES:
        if Path(cand).is_file():
            return cand
    raise FileNotFoundError(f"no General MIDI soundfont found; {INSTALL_HINT}")


def render_midi(
    midi_path: str | Path, sample_rate: int = 22050, soundfont: str = "", min_seconds: float = 0.0
) -> np.ndarray:
    """Render a MIDI file to mono float32 audio in [-1, 1] with FluidSynth, at least
    ``min_seconds`` long (the song's end plus a release tail: nothing is cut)."""
    import pretty_midi

    sf2 = find_soundfont(soundfont)
    try:
        import fluidsynth  # noqa: F401  (pretty_midi needs pyfluidsynth and libfluidsynth)
    except ImportError as e:
        raise RuntimeError(f"FluidSynth is not available ({e}); {INSTALL_HINT}") from None
    audio = pretty_midi.PrettyMIDI(str(midi_path)).fluidsynth(fs=sample_rate, sf2_path=sf2)
    audio = np.pad(audio, (0, max(0, int(np.ceil(min_seconds * sample_rate)) - len(audio))))
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return (audio / peak * 0.9 if peak > 0 else audio).astype(np.float32)
