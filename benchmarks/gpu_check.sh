#!/usr/bin/env bash
# GPU readiness in one go, on a CUDA machine, from the repository root (kd_plugin via PYTHONPATH, no install):
#   bash benchmarks/gpu_check.sh OUT.md [DATA]
# 1. the CUDA tests (tests/test_cuda.py; they skip without a GPU);
# 2. KD throughput (benchmarks/kd_throughput.py, every case in one process: start-up dominates short runs on a GPU)
#    in fp32 and with --amp bf16 --channels-last;
# 3. the DDP benchmark (benchmarks/ddp_scaling.py) with one process per GPU present (NCCL);
# 4. with DATA (CIFAR-10 python batches, e.g. the real subset): time to accuracy (benchmarks/time_to_accuracy.py,
#    --device cuda; kd-plugin only where torchdistill is not installed, which the report says).
# Writes OUT.md: date, device, versions, then each step's command, exit status, seconds and its output. Steps that
# need a missing package (torchdistill, Distiller) skip those cases with a note. Exit status: 1 if any step failed.
# About 4 minutes on one H200. Environment: PYTHON (default python3), STEP_TIMEOUT seconds per step (default 300).
set -uo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: bash benchmarks/gpu_check.sh OUT.md [DATA]" >&2; exit 2; }
out_md=$1
data=${2:-}
[ -z "$data" ] || [ -d "$data" ] || { echo "gpu_check: no data folder $data" >&2; exit 2; }
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
step_timeout=${STEP_TIMEOUT:-300}
mkdir -p "$(dirname "$out_md")"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" ||
  { echo "gpu_check: torch sees no CUDA device" >&2; exit 2; }
gpus=$("$python" -c "import torch; print(torch.cuda.device_count())")
data_flag=()
[ -z "$data" ] || data_flag=(--data "$data")

{
  echo "# GPU check"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- device: $("$python" -c "import torch; print(torch.cuda.get_device_name(), 'x', torch.cuda.device_count())")"
  echo "- nvidia-smi: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null |
                      head -n 1 || echo unavailable)"
  echo "- $("$python" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], '| torch',
          torch.__version__, '| CUDA', torch.version.cuda, '| torchvision', torchvision.__version__)")"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); data: ${data:-generated images}"
  echo
} > "$out_md"

summary=()
failed=0
step() {  # step NAME COMMAND...: run it, keep its output, note its status and time
  local name=$1; shift
  local log="$scratch/step.log" began ended code
  echo "+ $name: $*" >&2
  began=$(date +%s)
  timeout "$step_timeout" "$@" >"$log" 2>&1
  code=$?
  ended=$(date +%s)
  [ "$code" -eq 0 ] || failed=1
  summary+=("| $name | \`$*\` | $code | $((ended - began)) |")
  { echo "## $name"; echo; echo "\`$*\` (exit $code, $((ended - began)) s)"; echo
    grep -v -e '^round [0-9]' -e '^+ ' "$log" | tail -n 80; echo; } >> "$scratch/body.md"
  tail -n 3 "$log" >&2
}

step "CUDA tests" "$python" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
throughput=(benchmarks/kd_throughput.py --device cuda --in-process --augment y --steps 30 --warmup 5 --workers 8
            "${data_flag[@]}")
step "KD throughput, fp32" "$python" "${throughput[@]}"
step "KD throughput, bf16 + channels_last" "$python" "${throughput[@]}" --amp bf16 --channels-last
step "DDP, $gpus process(es)" "$python" benchmarks/ddp_scaling.py --device cuda --nproc "$gpus" \
  --arch vgg7_bn_cifar --epochs 2 "${data_flag[@]}"
if [ -n "$data" ]; then
  step "time to accuracy" "$python" benchmarks/time_to_accuracy.py --device cuda --data "$data" --epochs 15 \
    --teacher-epochs 15 --seeds 0 1 --workers 8 -o "$scratch/time_to_accuracy"
fi

{
  echo "| step | command | exit | seconds |"
  echo "|---|---|---|---|"
  printf '%s\n' "${summary[@]}"
  echo
  cat "$scratch/body.md"
} >> "$out_md"
echo "gpu_check: wrote $out_md$([ "$failed" -eq 0 ] || echo ' (a step failed)')" >&2
exit "$failed"
