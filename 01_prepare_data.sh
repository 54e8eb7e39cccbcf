#!/usr/bin/env bash
# Stage 1: sources -> labelled manifest -> splits -> REMI+ tokeniser (BPE) -> token shards.
#   bash 01_prepare_data.sh [--preset tiny|small|full] [--config FILE] [--set key=value ...]
#                           [--midi_dir DIR --style STYLE ...] [--no_music21] [--mirror DIR_OR_URL]
# Outputs under data/processed/<preset>/ (see docs in README.md); reruns resume and skip.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "01_prepare_data.sh: no Python environment; run: bash setup.sh" >&2; exit 1; }
preset=tiny
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="${2:?--preset needs tiny, small or full}"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
config="config/data_${preset}.yaml"
[ -f "$config" ] || { echo "01_prepare_data.sh: unknown preset '$preset' (no $config)" >&2; exit 2; }
exec "$PY" -m src.data.prepare --config "$config" ${args[@]+"${args[@]}"}
