#!/bin/bash
# The default pipeline from a clean state, parallel then serial, back to back: two fresh clones of this
# repository's HEAD (no runs, no prepared data, no DVC cache), `uv sync` before timing, then
#   clone 1: uv run reprozoo repro --jobs 2      clone 2: uv run dvc repro
# and the comparison of their dvc.lock files. Run it on an otherwise idle machine:
#   bash benchmarks/default_back_to_back.sh [WORKDIR, default /tmp]      (about 80 minutes on 2 cores)
set -u
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=${1:-/tmp}
for d in par ser; do
  rm -rf "$work/$d" && git clone -q "$repo" "$work/$d" && (cd "$work/$d" && uv sync -q)
done
timed() {  # name, command...
  local name=$1; shift
  local s; s=$(date +%s.%N)
  (cd "$work/$name" && "$@" > "$work/$name.log" 2>&1)
  echo "$name: exit $? wall $(echo "$(date +%s.%N) - $s" | bc) s ($*; log $work/$name.log)"
}
timed par uv run reprozoo repro --jobs 2
timed ser uv run dvc repro
cd "$work/par" && uv run python benchmarks/compare_locks.py "$work/ser" "$work/par"
