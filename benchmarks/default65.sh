#!/bin/bash
# Issue 18's goal 1 setting: the default pipeline with seeds 0-4 only (65 runs: 4 models x 5 seeds + the
# ablation's 45 arm runs), from a clean state in a fresh clone of HEAD, `uv sync` before timing, then
#   uv run reprozoo repro --jobs 2
# with every progress line time-stamped (seconds since the start) in WORKDIR/d65.log, and a summary of
# the blocks' training time from the runs' env.json. Run it on an otherwise idle machine:
#   bash benchmarks/default65.sh [WORKDIR, default /tmp]      (about 10-15 minutes on 2 cores)
#   bash benchmarks/default65.sh /tmp all                     (the default as committed, 130 runs: d130, d130.log)
set -u
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=${1:-/tmp}
name=d65
[ "${2:-}" = all ] && name=d130
d="$work/$name"
rm -rf "$d" && git clone -q "$repo" "$d" && cd "$d" && uv sync -q || exit 1
if [ "$name" = d65 ]; then
  sed -i 's/^  seeds: \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]$/  seeds: [0, 1, 2, 3, 4]/' params.yaml
  sed -i 's/^seeds: \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]$/seeds: [0, 1, 2, 3, 4]/' recipes/ablations/mnist1d_cnn_tricks.yaml
  uv run --no-sync reprozoo pipeline mnist1d > /dev/null || exit 1
  git -c user.name=b -c user.email=b@b commit -qam "65-run setting" || exit 1
fi
start=$(date +%s.%N)
uv run --no-sync reprozoo repro --jobs 2 2>&1 | while IFS= read -r line; do
  printf '%7.1f %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$line"; done > "$work/$name.log"
rc=${PIPESTATUS[0]}
echo "exit $rc wall $(echo "$(date +%s.%N) - $start" | bc) s (log $work/$name.log)"
echo "runs: $(ls -d runs/mnist1d_*/seed* | wc -l)"
uv run --no-sync python - <<'PY'
import json, pathlib
blocks = {}
for f in pathlib.Path("runs").glob("*/seed*/env.json"):
    e = json.loads(f.read_text())
    if "block_wall_seconds" in e:
        blocks[(f.parts[1], str(e.get("seed_block")))] = e["block_wall_seconds"]
print(f"{len(blocks)} blocks, {sum(blocks.values()):.0f} core-s:",
      ", ".join(f"{r} {w:.0f}" for (r, _), w in sorted(blocks.items(), key=lambda kv: -kv[1])))
PY
