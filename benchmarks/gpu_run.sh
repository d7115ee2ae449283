#!/usr/bin/env bash
# One prepared run of everything that needs an NVIDIA GPU, inside 8 minutes, every result under one folder:
#   1. the GPU tests: tests/test_cuda.py and the cuda cases of the files the simulator otherwise runs (-k cuda);
#   2. python -m verify --backends cuda (the full shape catalogue on the device);
#   3. python -m benchmarks --sizes reference large --backends cuda cuda-out torch-cuda, with the device copy
#      bandwidth (cuda-out: the kernels writing into arrays made once, out=).
# Usage: bash benchmarks/gpu_run.sh [OUTDIR]   (default: gpu-run-<date>). Run from anywhere; needs the cuda extra.
# Each step has its own time limit (200 + 120 + 150 s = 7 min 50 s); a step that fails or runs out is reported and
# the next one still runs. Exit status: 0 if every step passed, 1 if one failed, 2 if there is no usable GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-run-$(date +%Y%m%d-%H%M%S)}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

# fail fast and say why where there is no GPU (or no numba-cuda): nothing else would run
if ! why=$(python - <<'EOF' 2>&1
import sys
try:
    from numba import cuda
except ImportError as exc:
    sys.exit(f"numba-cuda is not installed ({exc}): pip install -e \".[cuda]\"")
if not cuda.is_available():
    sys.exit("Numba finds no usable NVIDIA GPU (no device or no driver)")
gpu = cuda.get_current_device()
print(f"{gpu.name.decode() if isinstance(gpu.name, bytes) else gpu.name}, compute capability {gpu.compute_capability}")
EOF
); then
    echo "gpu_run: nothing run: ${why##*$'\n'}" >&2
    echo "gpu_run: without a GPU, check the CUDA kernels in Numba's simulator: python -m verify --backends cuda" >&2
    exit 2
fi
mkdir -p "$OUT"
echo "gpu_run: $why; results in $OUT/"
{ nvidia-smi 2>/dev/null || true; echo "$why"; } > "$OUT/device.txt"

status=0
step() {  # step NAME SECONDS COMMAND...: run, keep its output in OUT/NAME.txt, report its exit status and time
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    local verdict="passed"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="ran past ${limit} s"; elif [ $rc -ne 0 ]; then verdict="failed (exit $rc)"; fi
    [ $rc -eq 0 ] || status=1
    printf 'gpu_run: %-10s %s in %d s: %s\n' "$name" "$verdict" $((SECONDS - start)) "$*" | tee -a "$OUT/summary.txt"
    tail -n 3 "$OUT/$name.txt" | sed 's/^/    /'
}

step tests 200 python -m pytest -q -p no:cacheprovider -k cuda tests/test_cuda.py tests/test_errors.py \
    tests/test_hard_inputs.py tests/test_nn.py tests/test_switchable_norm.py tests/test_rms_norm.py \
    tests/test_batch_norm_split.py
step verify 120 python -m verify --backends cuda --json "$OUT/verify.json"
step benchmarks 150 python -m benchmarks --sizes reference large --backends cuda cuda-out torch-cuda --no-first-call \
    --json "$OUT/benchmarks.json"
exit $status
