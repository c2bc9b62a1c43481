#!/bin/bash
# Where a no-op `dvc repro` (everything up to date) spends its time, in a scratch copy of this checkout's
# HEAD (its committed files plus runs/, reports/, datasets/ and the DVC cache; the checkout is not touched):
#   whole      the repository as it is: DVC indexes every pipeline's dvc.yaml/dvc.lock
#   root       only the root pipeline (the other pipelines' dvc.yaml/dvc.lock removed; their recipes stay)
#   root-1dep  root, and each train stage's list of code files collapsed to one file (the first by name), in dvc.yaml and dvc.lock
# Each variant: one untimed call (DVC's state database learns the copied files), then REPS timed calls.
#   bash benchmarks/noop_breakdown.sh [WORKDIR, default /tmp/noop_breakdown] [REPS, default 3]
set -eu
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=${1:-/tmp/noop_breakdown}
reps=${2:-3}
dvc="$repo/.venv/bin/dvc"
rm -rf "$work" && mkdir -p "$work"
cd "$repo" && git archive HEAD | tar -x -C "$work"
cp -r runs reports datasets "$work/" && mkdir -p "$work/.dvc" && cp -r .dvc/cache .dvc/config "$work/.dvc/"
cd "$work" && git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm scratch
timed() {  # label
  # a pending stage would be run by the repro below (trainings): refuse instead
  "$dvc" status dvc.yaml | grep -q "up to date" || { echo "$1: dvc.yaml is not up to date here"; "$dvc" status dvc.yaml | head; exit 1; }
  "$dvc" repro > /dev/null 2>&1 || { echo "$1: dvc repro failed"; exit 1; }
  for _ in $(seq "$reps"); do
    s=$(date +%s.%N); "$dvc" repro > /dev/null 2>&1; printf '%s: %.2f s\n' "$1" "$(echo "$(date +%s.%N) - $s" | bc)"
  done
}
timed whole
git ls-files pipelines | grep -v '^pipelines/ablations/' | grep -E 'dvc\.(yaml|lock)$' | xargs rm
timed root
"$repo/.venv/bin/python" - <<'EOF'
import yaml  # collapse each stage's code deps to one file (the first by name), the same in both files
y = yaml.safe_load(open("dvc.yaml"))
for st in y["stages"].values():
    body = st.get("do", st)
    code = sorted(d for d in body.get("deps", []) if str(d).startswith("src/"))
    body["deps"] = [d for d in body.get("deps", []) if d not in code[1:]]
yaml.safe_dump(y, open("dvc.yaml", "w"), sort_keys=False)
lock = yaml.safe_load(open("dvc.lock"))
for st in lock["stages"].values():
    code = sorted(d["path"] for d in st.get("deps", []) if d["path"].startswith("src/"))
    st["deps"] = [d for d in st.get("deps", []) if d["path"] not in code[1:]]
yaml.safe_dump(lock, open("dvc.lock", "w"), sort_keys=False)
EOF
timed root-1dep
