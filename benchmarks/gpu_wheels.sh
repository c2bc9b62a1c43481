#!/usr/bin/env bash
# Wheels (and the mmcv sdist) that benchmarks/gpu_smoke.py needs on the lent GPU machine, whose image has
# Python 3.12, torch, numpy, scipy, matplotlib, opencv-python-headless, transformers, pytest but no network:
#   bash benchmarks/gpu_wheels.sh            # -> .whl/ (ignored by git; about 20 MiB)
# then, there: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site
#              python3 benchmarks/gpu_smoke.py --out $OUT/gpu_smoke.json --mmcv-sdist .whl/mmcv-2.1.0.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PKGS=(mmengine==0.10.7 addict yapf platformdirs termcolor mnist1d==0.0.2.post1 dvclive==3.49.1 dvc-render
      dvc-studio-client funcy ruamel.yaml voluptuous mmsegmentation==1.2.2 prettytable wcwidth mmdet==3.3.0
      pycocotools shapely terminaltables ftfy)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" -d .whl "${PKGS[@]}"
# mmcv's sdist: pip cannot download it without building its metadata (which imports torch), so take the
# source uv unpacked when it built mmcv here (`uv sync --extra openmmlab`), without build outputs.
src=$(ls -d "${UV_CACHE_DIR:-$HOME/.cache/uv}"/sdists-v*/pypi/mmcv/2.1.0/*/src 2>/dev/null | head -1)
[ -n "$src" ] || { echo "no mmcv 2.1.0 source in uv's cache: run 'uv sync --extra openmmlab' first" >&2; exit 1; }
tar -czf .whl/mmcv-2.1.0.tar.gz --exclude=build --exclude='*.so' --exclude='*.egg-info' \
    --transform 's,^src,mmcv-2.1.0,' -C "$(dirname "$src")" src
du -sh .whl
