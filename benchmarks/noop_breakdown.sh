#!/bin/bash
# Where a no-op `dvc repro` (everything up to date) spends its time, in a scratch copy of this checkout's
# HEAD (its committed files plus runs/, reports/, datasets/, the code manifests and the DVC cache; the
# checkout is not touched):
#   uv-whole   `uv run dvc repro`, the README's command: uv's start-up, then DVC indexes every pipeline
#   whole      `.venv/bin/dvc repro`: the same without uv
#   one-stage  `.venv/bin/dvc repro train_mnist1d_cnn@0`: one up-to-date stage, so nearly all of it is DVC
#              reading every pipeline into its index (the floor of any `dvc repro` in this repository)
#   version    `.venv/bin/dvc --version`: Python and DVC's own start-up
#   root       only the root pipeline (the other pipelines' dvc.yaml/dvc.lock removed; their recipes stay)
# Each variant: one untimed call (DVC's state database learns the copied files), then REPS timed calls.
#   bash benchmarks/noop_breakdown.sh [WORKDIR, default /tmp/noop_breakdown] [REPS, default 3]
set -eu
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=${1:-/tmp/noop_breakdown}
reps=${2:-3}
dvc="$repo/.venv/bin/dvc"
rm -rf "$work" && mkdir -p "$work"
cd "$repo" && git archive HEAD | tar -x -C "$work"
cp -r runs reports datasets "$work/" && mkdir -p "$work/.dvc" "$work/.reprozoo" && cp -r .dvc/cache .dvc/config "$work/.dvc/"
[ -d .reprozoo/code ] && cp -r .reprozoo/code "$work/.reprozoo/"
cd "$work" && git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm scratch
timed() {  # label command...
  label=$1; shift
  # a pending stage would be run by the repro below (trainings): refuse instead
  "$dvc" status dvc.yaml | grep -q "up to date" || { echo "$label: dvc.yaml is not up to date here"; "$dvc" status dvc.yaml | head; exit 1; }
  "$@" > /dev/null 2>&1 || { echo "$label: $* failed"; exit 1; }
  for _ in $(seq "$reps"); do
    s=$(date +%s.%N); "$@" > /dev/null 2>&1; printf '%s: %.2f s\n' "$label" "$(echo "$(date +%s.%N) - $s" | bc)"
  done
}
export UV_PROJECT="$repo"  # `uv run` uses the checkout's environment (the copy has none)
timed uv-whole uv run --project "$repo" dvc repro
timed whole "$dvc" repro
timed one-stage "$dvc" repro train_mnist1d_cnn@0
timed version "$dvc" --version
git ls-files pipelines | grep -v '^pipelines/ablations/' | grep -E 'dvc\.(yaml|lock)$' | xargs rm
timed root "$dvc" repro
