#!/usr/bin/env bash
# Fetch, on a machine with pip's registry, the wheels the GPU machine lacks (it has torch, lightning,
# transformers, numpy, scipy, einops, pyyaml), for Python 3.12 x86-64, into .whl/, and copy the official goldens
# (../shared/golden) into .golden/ (both git-ignored). Then run bench/gpu_check.sh there with both carried.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pin() { grep -E "^$1==" requirements.txt; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d .whl "$(pin av)" "$(pin vector-quantize-pytorch)" "$(pin omegaconf)" "$(pin diffusers)" \
    einx==0.4.3 frozendict==2.5.1 loguru==0.7.3 torch-einops-utils==0.2.0 importlib_metadata==10.2.0 zipp==4.1.2 \
    hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
# deepspeed ships as a source archive: built here into a pure-Python wheel (no CUDA ops compiled)
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl "$(pin deepspeed)"
grep -qx '/.golden/' .git/info/exclude || echo '/.golden/' >> .git/info/exclude
if [ -d ../shared/golden ]; then rm -rf .golden && cp -r ../shared/golden .golden; fi
du -sh .whl .golden 2>/dev/null
