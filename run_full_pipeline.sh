#!/usr/bin/env bash
# The whole pipeline on the offline default data: setup (if needed), then every stage in order.
#   bash run_full_pipeline.sh [--preset tiny|small|full]
set -euo pipefail
cd "$(dirname "$0")"
preset=tiny
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="${2:?--preset needs tiny, small or full}"; shift 2 ;;
    *) echo "run_full_pipeline.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
start=$(date +%s)
bash setup.sh --quiet
t=$(date +%s); bash 01_prepare_data.sh --preset "$preset"; t1=$(( $(date +%s) - t ))
echo "stage 1 (data): ${t1}s   total: $(( $(date +%s) - start ))s"
