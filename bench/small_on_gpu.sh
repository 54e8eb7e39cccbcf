#!/usr/bin/env bash
# The small preset trained on one lent GPU inside 10-minute calls (issue 18's small-preset figures).
# Raw output: docs/results/small_h100/. Three parts, run where each says:
#
#   bash bench/small_on_gpu.sh pack           # here: stage 1 (music21 only), wheels and a data tarball
#   bash bench/small_on_gpu.sh train          # on the GPU machine, from the repository root: planner
#   bash bench/small_on_gpu.sh align          # on the same machine, right after: DPO of that planner
#
# `train` probes 80 steps, then trains as many whole steps of config/symbolic_small.yaml as fit the call
# (BUDGET seconds, default 555) with the cosine schedule ending at that step; `align` runs
# config/alignment_small.yaml with fewer on-policy openings and steps (set below). Each packs the
# checkpoint's inference part (no optimiser state) into <= 16 MiB pieces under $OUT; .gpu/pack.py
# join puts them back here, where `python -m src.eval` makes the report.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
part=${1:?pack, train or align}
OUT=${OUT:-/tmp/small_on_gpu}
mkdir -p "$OUT"
case "$part" in
pack)
  bash 01_prepare_data.sh --preset small --set pop909.enabled=false --set maestro.enabled=false \
    --set audio.enabled=false          # POP909 and MAESTRO need the internet; the planner needs no audio
  HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python -c \
    "from src.models.text_encoder import caption_embeddings as c; c('data/processed/small')"
  mkdir -p .gpu .whl .git/info
  grep -qsx '/.gpu/' .git/info/exclude || printf '/.gpu/\n/.whl/\n' >> .git/info/exclude
  cp bench/pack_checkpoint.py .gpu/pack.py
  tar -cJf .gpu/data_small.tar.xz data/processed/small data/subsets/small
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
    miditok==3.1.0 symusic==0.6.0 mido==1.3.3 pretty_midi==0.2.11.post0 importlib_resources pySmartDL platformdirs
  ;;
train)
  T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-555}))
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
  tar -xJf .gpu/data_small.tar.xz
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
  common=(--config config/symbolic_small.yaml --set train.sample_every=0 --set train.num_workers=8)
  P0=$(date +%s)
  timeout 200 $PY 02_train_symbolic.py "${common[@]}" --set out_dir=/tmp/probe --set run_dir=/tmp/probe_runs \
    --set train.max_steps=80 --set train.log_every=20 --set train.eval_every=100000 > "$OUT/probe.log" 2>&1
  overhead=$(( $(date +%s) - P0 ))   # start, 80 steps and one validation: an upper bound on the run's own
  sps=$($PY -c "
import re, sys
t = {int(m[4]): int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) for m in
     re.findall(r'(\d\d):(\d\d):(\d\d) .*step (\d+)/\d+ loss', open('$OUT/probe.log').read())}
print((t[80] - t[20]) / 60)")
  steps=$($PY -c "print(min(20000, max(200, int(($DEADLINE - $(date +%s) - $overhead - 30) / ($sps * 1.04) // 100 * 100))))")
  echo "probe: $sps s/step, probe run $overhead s; training $steps steps" | tee "$OUT/plan.txt"
  timeout $(( DEADLINE - $(date +%s) )) $PY 02_train_symbolic.py "${common[@]}" --set train.max_steps="$steps" \
    --set train.eval_every=$(( steps / 6 )) --set train.log_every=100 > "$OUT/train_small.log" 2>&1
  $PY .gpu/pack.py pack checkpoints/symbolic/small/best.pt "$OUT" sup | tee -a "$OUT/plan.txt"
  tar -czf "$OUT/runs_small.tgz" runs/symbolic/small checkpoints/symbolic/small/symbolic_config.yaml
  ;;
align)
  export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
  timeout 480 $PY 04_preference_alignment.py --config config/alignment_small.yaml --set on_policy.conditions=64 \
    --set train.max_steps=600 --set train.eval_every=100 --set train.log_every=50 > "$OUT/dpo_small.log" 2>&1
  $PY .gpu/pack.py pack checkpoints/aligned/small/best.pt "$OUT" dpo
  tar -czf "$OUT/runs_aligned_small.tgz" runs/aligned/small checkpoints/aligned/small/alignment_config.yaml \
    checkpoints/aligned/small/on_policy_pairs.json
  ;;
*) echo "small_on_gpu.sh: unknown part '$part' (pack, train or align)" >&2; exit 2 ;;
esac
