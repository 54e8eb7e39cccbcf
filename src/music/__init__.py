"""The music floor: what every other package means by a style, a key, an instrument, a bar, a form,
a token and a condition. Imports only :mod:`src.utils` (and third-party libraries).

    vocab        styles, emotions, time signatures, the drum program, the unlabelled style
    theory       pitch classes, scales, key estimation and parsing, transposition, parallel mode
    instruments  General MIDI programs: names, prompt words, registers
    notes        a score's notes as an (N, 4) array, bar grids and per-bar contents
    form         song forms ('verse,chorus:4') and repetition sections (the planner's plan)
    features     per-piece features (MusPy / Yang & Lerch)
    scoring      the heuristic passage scorer built on those features
    tokenizer    the REMI+ BPE tokenizer, its special tokens and per-token tables
    conditions   the planner's conditions: built from a manifest row, a pair or a request
"""
