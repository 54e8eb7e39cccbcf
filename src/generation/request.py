"""A song request from user input, checked field by field: stage 5's flags and the demo page's fields."""

from __future__ import annotations

import dataclasses

from src.generation.config import GenerationConfig
from src.generation.song import RequestError, SongRequest
from src.music.form import parse_form, total_bars
from src.music.theory import parse_key
from src.music.vocab import EMOTIONS, STYLES, TIME_SIGNATURES, metre_in_prompt

TEMPO_RANGE = (30.0, 300.0)


def song_request(
    cfg: GenerationConfig,
    *,
    prompt: str = "",
    style: str = "CLASSICAL",
    emotion: str = "HAPPY",
    tempo: float | None = None,
    form: str = "",
    bars_per_section: int = 8,
    key: str = "",
    time_signature: str = "",
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    max_bars: int = 0,
) -> SongRequest:
    """Every check before anything is generated; a :class:`RequestError` names the field.

    ``tempo=None``: the emotion's default; ``form=""``: the style's default; ``time_signature=""``: the metre a
    prompt word names (waltz 3/4, jig 6/8, march 2/4, ...), else 4/4; ``max_bars`` > 0 caps the song's length;
    a sampling field left None: ``cfg.sampling``'s.
    """
    style, emotion = style.upper(), emotion.upper()
    if style not in STYLES:
        raise RequestError("style", f"unknown style {style!r} (choose {', '.join(STYLES)})")
    if emotion not in EMOTIONS:
        raise RequestError("emotion", f"unknown emotion {emotion!r} (choose {', '.join(EMOTIONS)})")
    tempo = tempo if tempo is not None else cfg.default_tempo.get(emotion, 100.0)
    if not TEMPO_RANGE[0] <= tempo <= TEMPO_RANGE[1]:
        raise RequestError("tempo", f"{tempo:g} is outside {TEMPO_RANGE[0]:g}-{TEMPO_RANGE[1]:g} BPM")
    if not 1 <= bars_per_section <= 64:
        raise RequestError("bars_per_section", f"{bars_per_section} is outside 1-64")
    try:
        given = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "guidance": guidance}
        sampling = dataclasses.replace(cfg.sampling, **{k: v for k, v in given.items() if v is not None})
    except ValueError as e:  # the message starts with the field's name
        raise RequestError(str(e).split()[0], str(e).split(" ", 1)[1]) from None
    form = form.strip() or cfg.default_forms.get(style, "a,b,a")
    try:
        sections = parse_form(form, bars_per_section)
    except ValueError as e:
        raise RequestError("form", str(e).removeprefix("--form: ")) from None
    bars = total_bars(sections)
    if max_bars and bars > max_bars:
        raise RequestError("form", f"{form!r} makes {bars} bars; at most {max_bars} here")
    time_signature = time_signature.strip() or (metre_in_prompt(prompt) or ("", "4/4"))[1]
    if time_signature not in TIME_SIGNATURES:
        raise RequestError("time_signature", f"{time_signature!r} is not one of {', '.join(TIME_SIGNATURES)}")
    if key.strip():
        try:
            parse_key(key)
        except ValueError as e:
            raise RequestError("key", str(e).removeprefix("--key: ")) from None
    return SongRequest(
        prompt=prompt,
        style=style,
        emotion=emotion,
        tempo=float(tempo),
        form=form,
        bars_per_section=bars_per_section,
        key=key.strip(),
        time_signature=time_signature,
        seed=seed,
        sampling=sampling,
    )
