#!/usr/bin/env bash
# The committed NB201 study (issue 15): run it, or resume it with the same OUT and the same code.
# Methods are listed cheapest first: jobs run seed-major, so a session that stops part-way has as
# many whole methods of the current seed as possible (the order changes no number).
# Layout (issue 21): one torch thread per job, JOBS (default 2) jobs side by side; `threads=1` is
# part of the committed study's budget (its numbers depend on it), JOBS is not (any value, same
# numbers).
#   HARNESS_DATA_DIR=../shared [JOBS=2] tools/run_study.sh OUT
# A lane (a shard of the same study in its own folder, joined later with `harness merge RUN OUT`):
# METHODS and SEEDS pick its jobs, e.g. one job per lane, one lane per core:
#   METHODS=pinas SEEDS=0 JOBS=1 tools/run_study.sh /work/study-runs/lane-pinas-s0
set -euo pipefail
OUT=${1:?usage: [METHODS=a,b SEEDS=0,1 JOBS=2] tools/run_study.sh OUT}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
exec "$HERE/.venv/bin/harness" run --suite nb201 --budget study \
    --methods "${METHODS:-params,flops,synflow,naswot,spos,senas,stcnas,kshot,pinas,fairnas}" \
    --seeds "${SEEDS:-0,1,2}" --set threads=1 --jobs "${JOBS:-2}" --out "$OUT" --no-progress
