#!/usr/bin/env bash
# The GPU check (issue 21), one script under 8 minutes on one H200: the CUDA tests, then the GPU benchmarks,
# written to one JSON and a markdown table. Run on the GPU machine from the repository root, with the wheels of
# bench/gpu/gpu_wheels.sh in .whl/ and the goldens in .golden/ (device tool: carry [".whl", ".golden"]):
#     bash bench/gpu_check.sh "$OUT"
# PYTHON=.venv/bin/python GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash bench/gpu_check.sh runs/gpu_check checks the
# plumbing on a CPU (4 min 25 s on 2 cores; the GPU floors are not met there).
set -uo pipefail
out=${1:-runs/gpu_check}
device=${GPU_CHECK_DEVICE:-cuda}
quick=${GPU_CHECK_QUICK:-}
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
[ -d .golden ] && export NBP_GOLDEN_DIR=$PWD/.golden
status=0
step() {  # name, timeout seconds, command...: a step that fails or runs over is recorded and the next runs
    local name=$1 limit=$2; shift 2
    [ -z "$quick" ] || limit=$((limit * 6))  # a CPU is slower even at the small sizes
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" > >(tee "$out/$name.log") 2>&1
    local rc=$?
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}" >> "$out/steps.jsonl"
    [ $rc -eq 0 ] || status=1
}
: > "$out/steps.jsonl"
if [ "$device" = cuda ]; then
    step cuda_tests 150 $python -m pytest -m cuda -p no:cacheprovider -o addopts="" -q tests/test_cuda.py tests/test_transformer.py
else
    step cuda_tests 600 env NBP_TEST_DEVICE=cpu $python -m pytest -p no:cacheprovider -o addopts="" -q tests/test_cuda.py
fi
size=700m; frames=256; far_steps=25; far_layers=0; tok_size=128; batch=8; batches="1 16"
graphs=cuda-graphs; compiled=compiled
[ "$device" = cuda ] || { graphs=static; compiled=static; }  # a CPU runs the same static step eagerly
if [ -n "$quick" ]; then size=small; frames=12; far_steps=3; far_layers=2; tok_size=32; batch=1; batches=1; fi
cd bench
step decode 100 $python decode.py --device "$device" --size "$size" --batches $batches --hybrid-only \
    --decodings $graphs --json "$out/decode.json"
step decode_dynamic 40 $python decode.py --device "$device" --size "$size" --batches 1 --blocks 16 --hybrid-only \
    --decodings dynamic --json "$out/decode_dynamic.json"
step decode_compiled 120 $python decode.py --device "$device" --size "$size" --batches 1 --blocks 16 --hybrid-only \
    --decodings $compiled --json "$out/decode_compiled.json"
step tokenizer 60 $python tokenizer.py --presets nbp-magvit2 --size "$tok_size" --batch "$batch" --repeats 3 \
    --device "$device" --json "$out/tokenizer.json"
step train_lm 90 $python train_lm.py --device "$device" --size "${size/small/bench}" --dtype bf16 --batch "$batch" \
    --steps 5 --json "$out/train_lm.json"
step far 100 $python far.py --layers "$far_layers" --heads 12 --frames "$frames" --steps "$far_steps" --batch 4 --device "$device" \
    --bf16 --uncached-rollout --probe --decoding "$graphs" --dynamic-rollout --json "$out/far.json"
cd ..
$python bench/gpu/gpu_report.py "$out" || status=1
exit $status
