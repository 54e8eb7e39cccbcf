#!/usr/bin/env bash
# The whole pipeline on the offline default data: setup (when needed), stages 01 -> 05, an evaluation report.
#   bash run_full_pipeline.sh [--preset tiny|small|full] [--force] [--config_dir DIR] [--mirror DIR_OR_URL]
# A stage whose artefacts are up to date is skipped unless --force. The full preset trains with
# torchrun over every local GPU; small and full download public datasets (--mirror: from a local copy).
# At the end: the artefacts and the time each stage took.
set -euo pipefail
cd "$(dirname "$0")"
preset=tiny; force=0; config_dir=config; mirror=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="${2:?--preset needs tiny, small or full}"; shift 2 ;;
    --force) force=1; shift ;;
    --config_dir) config_dir="${2:?--config_dir needs a folder}"; shift 2 ;;
    --mirror) mirror=(--mirror "${2:?--mirror needs a folder or http(s) address}"); shift 2 ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) echo "run_full_pipeline.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
for f in "data_$preset.yaml" "symbolic_$preset.yaml" "renderer_$preset.yaml" "alignment_$preset.yaml" generation.yaml eval.yaml; do
  [ -f "$config_dir/$f" ] || { echo "run_full_pipeline.sh: missing $config_dir/$f (preset '$preset')" >&2; exit 2; }
done
PY=.venv/bin/python
declare -a report
timed() {  # timed NAME COMMAND...: run, and remember how long it took
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "=== $name"
  "$@"
  report+=("$(printf '%-28s %5ss' "$name" $(( $(date +%s) - t0 )))")
}
start=$(date +%s)
timed "setup" bash setup.sh --quiet
timed "1 prepare data" "$PY" -m src.data.prepare --config "$config_dir/data_$preset.yaml" ${mirror[@]+"${mirror[@]}"}

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())" | tail -n 1)
config_value() {  # config_value FILE KEY: a top-level value of a config (its base merged, {preset} filled in)
  "$PY" -m src.utils.config "$1" "$2" | tail -n 1
}
train_stage() {  # train_stage NAME SCRIPT CONFIG: --force starts over; torchrun over every GPU for full
  local name="$1" script="$2" cfg="$3"
  if [ "$force" = 1 ]; then
    rm -rf "$(config_value "$cfg" out_dir)"
  fi
  if [ "$preset" = full ] && [ "$gpus" -gt 1 ]; then
    timed "$name (torchrun x$gpus)" .venv/bin/torchrun --standalone --nproc_per_node="$gpus" "$script" --config "$cfg"
  else
    timed "$name" "$PY" "$script" --config "$cfg"
  fi
}
train_stage "2 train planner" 02_train_symbolic.py "$config_dir/symbolic_$preset.yaml"
train_stage "3 train renderer" 03_train_renderer.py "$config_dir/renderer_$preset.yaml"
train_stage "4 align planner (DPO)" 04_preference_alignment.py "$config_dir/alignment_$preset.yaml"
force_flag=(); [ "$force" = 1 ] && force_flag=(--force)
timed "5 demo songs" "$PY" -m src.generation.demos --config "$config_dir/generation.yaml" --preset "$preset" ${force_flag[@]+"${force_flag[@]}"}

out=$(config_value "$config_dir/generation.yaml" output_dir)
# 6. the evaluation report: supervised vs aligned planner on held-out conditions (redone when either changes, or
# the sampling defaults and controls of generation.yaml, or eval.yaml)
supervised="$(config_value "$config_dir/symbolic_$preset.yaml" out_dir)/best.pt"
aligned="$(config_value "$config_dir/alignment_$preset.yaml" out_dir)/best.pt"
eval_report="$out/eval/$preset/report.md"
if [ "$force" = 0 ] && [ -f "$eval_report" ] && [ "$eval_report" -nt "$supervised" ] && [ "$eval_report" -nt "$aligned" ] \
  && [ "$eval_report" -nt "$config_dir/generation.yaml" ] && [ "$eval_report" -nt "$config_dir/eval.yaml" ]; then
  echo "=== 6 evaluation report: up to date ($eval_report)"
else
  timed "6 evaluation report" "$PY" -m src.eval --checkpoint "$supervised" --checkpoint "$aligned" \
    --data_dir "$(config_value "$config_dir/data_$preset.yaml" processed_dir)" --config "$config_dir/eval.yaml" \
    --name "$preset" --out_dir "$out/eval"
fi
echo
echo "=== artefacts"
ls -1 "$out"/demo_* 2>/dev/null | sed 's/^/  /'
echo "  (data: data/processed/$preset/ and data/subsets/$preset/; checkpoints: checkpoints/{symbolic,renderer,aligned}/$preset/; logs: tensorboard --logdir runs/)"
echo "  $eval_report (main table below; plots and per-feature tables inside)"
sed -n '/^## Main table/,/^- /p' "$eval_report" | sed '1,2d;$d' | sed 's/^/  /'
echo "=== time per stage"
printf '  %s\n' "${report[@]}"
echo "  total                        $(( $(date +%s) - start ))s"
echo "=== hear new songs in a browser: $PY -m src.demo --preset $preset   (then open http://127.0.0.1:7860/)"
