#!/usr/bin/env bash
# Collects the GPU evidence on a CUDA machine (issues 4, 5, 7): the CUDA
# parity test, m2h3 with --require-device cuda, first-image timings of fresh
# processes, the benchmark experiments' cuda cells, and the multi-GPU matrix
# against a one-GPU baseline. Bundles go to runs/gpu*/; $OUT gets
# summary.txt and tarballs of the bundles and logs.
# Usage: OUT=gpu-out RUNNER=target/release/runner PARITY_BIN=.devbin/cuda_parity scripts/gpu_evidence.sh
# Optional: BASELINE=path/to/an/older/runner adds its first-image and
# benchmark timings, run on the same machine, for side-by-side ratios.
set -u
# STEPS: which parts to run (default all): firstimage parity m2h3 bench multigpu
#   (and, not by default: profile, for nvcc -Xptxas -v and an ncu summary)
R=${RUNNER:-target/release/runner}
OUT=${OUT:-gpu-out}
# logs and bundles are packed into $OUT at the end (few files come back)
L=${LOGS:-/tmp/gpu-logs}
P=${PARITY_BIN:-.devbin/cuda_parity}
mkdir -p "$OUT" "$L" runs
S="$OUT/summary.txt"
STEPS=${STEPS:-"firstimage parity m2h3 bench multigpu"}
want() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }
: > "$S"
step() { echo "== $*" | tee -a "$S"; }
last() { tail -n 1 "$1"; }
nvidia-smi -L > "$L/nvidia-smi.txt" 2>&1
"$R" env > "$L/env.txt" 2>&1
export XDG_CACHE_HOME=/tmp/braggrun-xdg
REF="-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -detpixels 1024 -mosflm -phisteps 10 -osc 0.1 -mosaic 0.5 -mosaic_dom 10"
# first image of fresh processes: cold (empty PTX cache and driver JIT
# cache, each runner its own) then warm
first_image() { # runner label cache-dir
  rm -rf "$3"
  for k in cold warm; do
    for d in float64 float32; do
      t0=$(date +%s.%N); XDG_CACHE_HOME=$3 CUDA_CACHE_PATH=$3/nv RUST_LOG=braggrun=debug timeout 120 "$1" nanobragg $REF -device cuda -dtype $d -floatfile /tmp/ref-$d.bin > "$L/nb-$2-$k-$d.log" 2>&1; rc=$?; t1=$(date +%s.%N)
      echo "$2 $k $d exit $rc wall $(awk "BEGIN{print $t1 - $t0}") s" | tee -a "$S"
    done
  done
}
if want firstimage; then
step "first image of fresh processes (reference case, cold then warm PTX cache)"
first_image "$R" current /tmp/braggrun-xdg-first
[ -n "${BASELINE:-}" ] && first_image "$BASELINE" baseline /tmp/braggrun-xdg-base
fi
if want profile; then
step "profile: registers (nvcc -Xptxas -v) and ncu on the float32 and float64 reference render"
for d in float double; do
  nvcc -cubin -arch=sm_90 -DREAL=$d -DNDIR=0 -Xptxas -v -o /tmp/k.cubin src/engine/cuda/kernel.cu 2>&1 | grep -A2 render_pixels | tee -a "$S"
done
for d in float32 float64; do
  timeout 180 ncu --clock-control none -k render_pixels -c 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy --section InstructionStats \
    "$R" nanobragg $REF -device cuda -dtype $d -floatfile /tmp/p.bin > "$L/ncu-$d.txt" 2>&1; echo "ncu $d exit $?" | tee -a "$S"
done
fi
if want parity; then
step "cuda_parity"
timeout 400 "$P" --test-threads 8 > "$L/cuda_parity.log" 2>&1; echo "exit $?: $(grep 'test result' "$L/cuda_parity.log")" | tee -a "$S"
fi
if want m2h3; then
step "m2h3 --require-device cuda"
timeout 200 "$R" run experiments/m2h3.toml --require-device cuda --out runs/gpu > "$L/m2h3.log" 2>&1; echo "exit $? $(last "$L/m2h3.log")" | tee -a "$S"
fi
if want bench; then
for e in bench-reference bench-scaling; do
  step "$e (cuda cells)"
  timeout 400 "$R" run experiments/$e.toml --only device=cuda --jobs 1 --out runs/gpu > "$L/$e.log" 2>&1; echo "exit $? $(last "$L/$e.log")" | tee -a "$S"
  grep -h "|" "$(last "$L/$e.log")/summary.md" 2>/dev/null | tee -a "$S" > /dev/null
done
if [ -n "${BASELINE:-}" ]; then
  step "bench-reference (cuda cells) with the baseline runner"
  timeout 300 "$BASELINE" run experiments/bench-reference.toml --only device=cuda --jobs 1 --out /tmp/runs-baseline > "$L/baseline-bench.log" 2>&1; echo "exit $? $(last "$L/baseline-bench.log")" | tee -a "$S"
  cp -r "$(last "$L/baseline-bench.log")" "$L/baseline-bench-reference" 2>/dev/null
fi
fi
if want multigpu; then
step "multi-gpu: warm-up (compiles the kernels), two GPUs, one GPU"
timeout 300 "$R" run experiments/multi-gpu.toml --set model.detector.fpixels=64 --set model.detector.spixels=64 --require-device cuda --out runs/gpu-warmup > "$L/mg-warm.log" 2>&1
for v in all 0; do
  if [ $v = all ]; then unset CUDA_VISIBLE_DEVICES; dir=runs/gpu-2gpus; else export CUDA_VISIBLE_DEVICES=0; dir=runs/gpu-1gpu; fi
  t0=$(date +%s.%N); timeout 300 "$R" run experiments/multi-gpu.toml --require-device cuda --out $dir > "$L/mg-$v.log" 2>&1; rc=$?; t1=$(date +%s.%N)
  echo "CUDA_VISIBLE_DEVICES=$v exit $rc wall $(awk "BEGIN{print $t1 - $t0}") s $(last "$L/mg-$v.log")" | tee -a "$S"
done
unset CUDA_VISIBLE_DEVICES
"$R" compare "$(last "$L/mg-all.log")" "$(last "$L/mg-0.log")" > "$L/mg-compare.txt" 2>&1; echo "compare exit $?" | tee -a "$S"
fi
step "verify"
for b in runs/gpu*/*/*/; do "$R" verify "$b" > /dev/null 2>&1; echo "verify $b exit $?" | tee -a "$S"; done
[ -d runs/gpu ] && tar czf "$OUT/published.tgz" runs/gpu
[ -d runs/gpu-2gpus ] && tar czf "$OUT/multigpu.tgz" runs/gpu-2gpus runs/gpu-1gpu
tar czf "$OUT/logs.tgz" -C "$L" .
ls -la "$OUT"
