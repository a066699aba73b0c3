#!/usr/bin/env bash
# One prepared device call (issue 14, ~10 min of a 15-min budget): GPU parity tests of the Triton neuron
# (including the folded TGO/MPD-SGR V-penalties, fp32 and bf16), `bench perf` at B=256 (vanilla, TGO, MPD-SGR;
# fp32 and bf16; plain vs fused vs the ANN limit), and the evaluation workloads (APGD-100 with and without
# batched EOT 10, SNN vs the ANN at T*B). Everything lands under $OUT (JSON + logs).
# Usage on the device machine (repo root): bash scripts/gpu_check.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
py=python3
$py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/env.log"
echo "== 1. pytest -m gpu" | tee "$OUT/pytest.log"
timeout 150 $py -m pytest -q -m gpu tests/test_fused.py -p no:cacheprovider 2>&1 | tee -a "$OUT/pytest.log"
echo "== 2. bench perf B=256 fp32+bf16 (training with the folded regularisers, PGD-7)" | tee "$OUT/perf.log"
timeout 240 $py -m snnbench.cli_perf --dataset cifar10 --batch-size 256 --workload vanilla,tgo,mpd --precision fp32,bf16 \
  --iters 8 --warmup 2 --json "$OUT/perf_b256.json" 2>&1 | tee -a "$OUT/perf.log"
echo "== 3. evaluation: APGD-100, EOT 1 and batched EOT 10, B=64, vs the ANN at T*B" | tee "$OUT/eval.log"
timeout 200 $py -m snnbench.cli_perf --dataset cifar10 --batch-size 64 --workload "" --eval apgd,apgd_eot \
  --apgd-steps 100 --eot 10 --json "$OUT/perf_eval_b64.json" 2>&1 | tee -a "$OUT/eval.log"
echo "== done"
