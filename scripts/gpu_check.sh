#!/usr/bin/env bash
# The suite's GPU path, exercised on a lent GPU inside a fixed time budget. Stages (GPU_CHECK_STAGES):
#   forms (the default; issue 38; about 5 minutes, so a 15-minute lease leaves time to start and rerun):
#      F1. the CUDA tests (tests/test_cuda.py without its torch.compile test, which alone takes about two
#          minutes and passed on the 2026-11-30 lease), then
#      F2. benchmarks/se_overhead.py with SE's excitation forms (linear, conv1x1, functional, mm) x impl
#          (fused, reference), sebench's SE-ResNet-50 and ResNet-50 beside timm's seresnet50 and resnet50,
#          channels_last, batch 64, eager and CUDA graphs for all four alike, fp32 then bf16 autocast;
#          each run stops starting repeats at its share of the budget (--time-limit) and prints what it has.
#      Outputs: env.txt, pytest_cuda.log, se_forms.log, summary.txt.
#   bench cuda suite runs (issue 19's full check):
#   1. benchmarks first, on the quiet GPU: SE overhead (ResNet-50, ours and timm's, fp32 and bf16,
#      channels_last) and the CIFAR training loop's throughput (ResNet-20 and ResNet-110, ours vs the
#      DataLoader reference);
#   then, side by side (nothing in them is timed):
#   2. the CUDA tests (tests/test_cuda.py: AMP, channels_last, compile, on-device loader, SE tail, NCCL);
#   3. the rest of the test suite with CUDA visible (pytest-xdist, 4 workers);
#   4. `paper`-profile runs of variants_cnn3_cifar10 (arXiv 2304.06502 Table 1, its own recipe) on the
#      CIFAR-10 JPEG q75 mirror, seed-major (every row of seed 0, then seed 1, ...; one wave of 6 runs took
#      about 7 minutes on an H200 beside the test suite); at the deadline no further wave starts and the
#      runs still training are stopped and left out (only finished runs come back).
# GPU_CHECK_STAGES picks steps (default "forms"; "bench cuda suite runs" for issue 19's check, "runs" for a
# lease spent on runs). Everything goes to $OUT (at most 8 files; default results/gpu/<date>-<device>/):
# env.txt, pytest_cuda.log, se_forms.log, bench.log, pytest_all.log, runs.log, runs.tar.gz (run records
# without checkpoints), summary.txt. summary.txt's last line names the results/gpu/<date>-<device>/ folder
# the files belong in once they are back.
#
#   OUT=/tmp/gpu scripts/gpu_check.sh              # on the GPU machine (the device tool sets OUT)
#   OUT=/tmp/gpu scripts/gpu_check.sh --dry-run    # on a CPU: the same steps at toy sizes (tests/test_gpu_check.py)
#
# Data: the CIFAR-10 JPEG mirror from $SEBENCH_CIFAR10_JPEG or .cache/cifar10-jpeg.tar.xz (copied there
# before the call: the lossless archives are too big to travel). Missing Python packages travel as wheels
# in .whl/ and are installed into /tmp/site. GPU_CHECK_BUDGET_S (default 330 for "forms" alone, else 540)
# bounds the whole script.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
START=$(date +%s)
STAGES=${GPU_CHECK_STAGES:-forms}  # which steps run (a later lease may need others)
has() { [[ " $STAGES " == *" $1 "* ]]; }
BUDGET=${GPU_CHECK_BUDGET_S:-$([ "$STAGES" = forms ] && echo 330 || echo 540)}
# results/gpu/<date>-<device>/: the GPU's model in lower case (h200), cpu-dry-run for a dry run
DEVICE_SLUG=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 | awk '{print tolower($NF)}')
if [ $DRY = 1 ] || [ -z "$DEVICE_SLUG" ]; then DEVICE_SLUG=cpu-dry-run; fi
RESULT_DIR=results/gpu/$(date -u +%F)-$DEVICE_SLUG
OUT=${OUT:-$RESULT_DIR}
mkdir -p "$OUT"
left() { echo $((BUDGET - ($(date +%s) - START))); }
say() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$OUT/summary.txt"; }
PY=${PYTHON:-python3}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SEBENCH_CACHE=${SEBENCH_CACHE:-$PWD/.cache}
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
if [ $DRY = 0 ] && [ -z "${SEBENCH_CIFAR10_JPEG:-}" ] && [ -f .cache/cifar10-jpeg.tar.xz ]; then
  export SEBENCH_CIFAR10_JPEG=$PWD/.cache/cifar10-jpeg.tar.xz
fi
RESULTS=$(mktemp -d)/results
SB="$PY -m sebench"

{
  date -u; hostname; nvidia-smi 2>&1 || echo "no nvidia-smi"
  $PY - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version() if torch.cuda.is_available() else None)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
for name in ("pydantic", "timm", "pandas", "matplotlib", "yaml", "tqdm", "wandb", "submitit"):
    try:
        m = __import__(name)
        print(name, getattr(m, "__version__", "?"))
    except ImportError:
        print(name, "missing")
EOF
} > "$OUT/env.txt" 2>&1
say "env: $(grep -m1 '^torch\|^python' "$OUT/env.txt")"

# The mirror decodes once into the cache (about 20 s) while the benchmarks run.
decode_pid=
if [ $DRY = 0 ] && [ -n "${SEBENCH_CIFAR10_JPEG:-}" ] && { has bench || has runs; }; then
  $PY -c "from sebench.data import load_arrays; load_arrays('cifar10-jpeg', path='$SEBENCH_CIFAR10_JPEG')" \
    > "$OUT/runs.log" 2>&1 &
  decode_pid=$!
fi

BENCH_AMPS=(off bf16)
# stage bench (issue 19) times the default form, eager only, inside its 75 s timeouts; stage forms all of it
FORMS_ARGS=(--models "sebench se_resnet50 (3x3)" "timm seresnet50" --layouts channels_last --forms all
            --impls fused reference --exec eager graphs)
if [ $DRY = 1 ]; then
  SE_ARGS=(--quick --layouts channels_last --threads 1 --exec eager)
  FORMS_ARGS+=(--quick --threads 1)
  LOOP_R20=(--train 200 --test 100 --epochs 1 --threads 1 --workers 0)
  LOOP_R110=(--train 100 --test 100 --epochs 1 --threads 1 --workers 0 --no-ceiling)
  # Both benchmarks refuse bf16 on a CPU without native bf16 (they would time the emulation): the dry
  # run keeps the bf16 arms where this CPU has the flag and times fp32 alone where it has not.
  $PY -c "from sebench.engine.env import cpu_bf16_flag as f; raise SystemExit(f() is None)" 2>/dev/null \
    || BENCH_AMPS=(off)
else
  SE_ARGS=(--layouts channels_last --exec eager --batch-size 64 --repeats 7 --iters 3 --warmup 3)
  FORMS_ARGS+=(--batch-size 64 --repeats 7 --iters 3 --warmup 3)
  LOOP_R20=(--train 0 --test 0 --epochs 2 --workers 6)
  LOOP_R110=(--train 20000 --test 0 --epochs 1 --workers 6 --no-ceiling)
fi

# F. (stage "forms") the CUDA tests, then the SE forms benchmark on the quiet GPU
if has forms; then
  timeout $(( $(left) / 3 )) $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "not torch_compile" \
    > "$OUT/pytest_cuda.log" 2>&1
  say "F1. CUDA tests: rc $? -- $(tail -n 1 "$OUT/pytest_cuda.log")"
  n=${#BENCH_AMPS[@]}
  for amp in "${BENCH_AMPS[@]}"; do
    share=$(( ($(left) - 15) / n )); n=$((n - 1))  # this run's share of what is left, 15 s kept for the end
    if [ $share -lt 30 ]; then say "F2. no time left for se_overhead.py --amp $amp"; continue; fi
    echo "== se_overhead.py --amp $amp (time limit $((share - 15)) s)" >> "$OUT/se_forms.log"
    timeout $share $PY benchmarks/se_overhead.py --amp $amp "${FORMS_ARGS[@]}" --time-limit $((share - 15)) \
      > "$OUT/.se_forms.part" 2>&1
    say "F2. se_overhead.py --amp $amp: rc $?"
    grep '^fastest form\|^sebench SE overhead\|^CUDA graphs\|^time limit\|^peak' "$OUT/.se_forms.part" \
      | awk '!seen[$0]++' | while read -r line; do say "F2. amp $amp: $line"; done
    cat "$OUT/.se_forms.part" >> "$OUT/se_forms.log"; rm -f "$OUT/.se_forms.part"
  done
fi

# 1. benchmarks first, on the quiet GPU (the mirror decodes on the CPU meanwhile)
has bench && {
  for amp in "${BENCH_AMPS[@]}"; do
    echo "== se_overhead.py --amp $amp"
    timeout 75 $PY benchmarks/se_overhead.py --models "sebench se_resnet50 (3x3)" "timm seresnet50" \
      --amp $amp "${SE_ARGS[@]}"
  done
  for model in resnet20 resnet110; do
    echo "== loader_vs_reference.py --model $model --amp ${BENCH_AMPS[-1]}"
    args=("${LOOP_R20[@]}"); [ $model = resnet110 ] && args=("${LOOP_R110[@]}")
    timeout 90 $PY benchmarks/loader_vs_reference.py --model $model --amp ${BENCH_AMPS[-1]} "${args[@]}"
  done
} > "$OUT/bench.log" 2>&1
has bench && say "1. benchmarks: $(grep -c '^sebench SE overhead\|^speedup' "$OUT/bench.log") result lines; $(grep '^sebench SE overhead\|^speedup' "$OUT/bench.log" | tr '\n' ';')"

[ -n "$decode_pid" ] && wait "$decode_pid"

# 2-4. the CUDA tests and the rest of the suite, beside the paper runs (nothing here is timed)
DEADLINE=$(( $(left) - 30 ))  # the runs stop here; what follows (packing, the tests' ends) fits in 30 s
if [ "$DEADLINE" -lt 30 ]; then
  { has cuda || has suite || has runs; } && say "only $(left) s left: no tests or runs"; DEADLINE=0
fi
if has cuda && [ $DEADLINE -gt 0 ]; then
  (
    timeout $(( DEADLINE / 2 )) $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT/pytest_cuda.log" 2>&1
    say "2. CUDA tests: rc $? -- $(tail -n 1 "$OUT/pytest_cuda.log")"
  ) &
  cuda_tests_pid=$!
fi
if has suite && [ $DEADLINE -gt 0 ]; then
  timeout $(( DEADLINE - 5 )) $PY -m pytest -q -p no:cacheprovider -n 4 --ignore tests/test_gpu_check.py \
    --ignore tests/test_cuda.py > "$OUT/pytest_all.log" 2>&1 &
  tests_pid=$!
fi
if [ $DRY = 1 ]; then
  RUN=(variants_cnn3_cifar10 --profile smoke ${GPU_CHECK_RUN_SET:+--set "$GPU_CHECK_RUN_SET"})
  SEEDS=(0)
  JOBS=2
else
  RUN=(variants_cnn3_cifar10 --profile paper --set data.name=cifar10-jpeg)
  SEEDS=(0 1 2 3 4)
  JOBS=6
fi
STOP="$RESULTS.stop"
if has runs && [ $DEADLINE -gt 0 ]; then
  mkdir -p "$RESULTS"
  (
    for seed in "${SEEDS[@]}"; do  # seed-major: a wave is every row of one seed
      [ -e "$STOP" ] && break
      $SB run "${RUN[@]}" --results "$RESULTS" --jobs $JOBS --only seed=$seed
    done
  ) >> "$OUT/runs.log" 2>&1 &
  runs_pid=$!
  while kill -0 $runs_pid 2>/dev/null && [ "$(left)" -gt 30 ]; do sleep 2; done
  if kill -0 $runs_pid 2>/dev/null; then
    say "deadline: stopping the runs still training (no further wave starts)"
    touch "$STOP"; kill -TERM $runs_pid 2>/dev/null
    pkill -TERM -f -- "--results $RESULTS"; sleep 3  # this script's runners only (their results folder)
    pkill -KILL -f -- "--results $RESULTS" 2>/dev/null
  fi
  wait $runs_pid 2>/dev/null
fi
finished=$(grep -l '"status": "finished"' "$RESULTS"/runs/*/*/summary.json 2>/dev/null | wc -l)
has runs && say "4. runs: $finished finished; $(grep -c 'finished' "$OUT/runs.log") finished lines in runs.log"
if [ -d "$RESULTS/runs" ]; then
  # finished runs only, without checkpoints or locks
  (cd "$RESULTS" && find runs -name summary.json -exec grep -l '"status": "finished"' {} + \
     | xargs -r -n1 dirname | tar czf "$OUT/runs.tar.gz" --exclude=ckpt --exclude=.lock -T -)
fi
[ -n "${cuda_tests_pid:-}" ] && wait $cuda_tests_pid
if [ -n "${tests_pid:-}" ]; then
  wait $tests_pid; rc=$?
  say "3. test suite with CUDA visible: rc $rc -- $(tail -n 1 "$OUT/pytest_all.log")"
fi
say "done in $(($(date +%s) - START)) s; outputs in $OUT; they belong in $RESULT_DIR/"
