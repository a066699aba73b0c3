#!/usr/bin/env bash
# One device call for issue 6: GPU parity tests of the Triton neuron, `bench bench` at B=256 (vanilla,
# TGO-like, MPD-SGR-like; fp32 and bf16; plain vs fused vs ANN limit), bf16 accuracy on digits, and a
# repeat of the fp32 vanilla row for run-to-run spread. Everything lands under $OUT (JSON + logs).
# Usage on the device machine (repo root): bash scripts/gpu_check.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
py=python3
$py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/env.log"
echo "== 1. pytest -m gpu" | tee "$OUT/pytest.log"
timeout 120 $py -m pytest -q -m gpu tests/test_fused.py -p no:cacheprovider 2>&1 | tee -a "$OUT/pytest.log"
echo "== 2. bench bench B=256 fp32+bf16" | tee "$OUT/bench.log"
timeout 240 $py -m bench.cli_bench --batch-size 256 --workload vanilla,tgo,mpd --precision fp32,bf16 \
  --iters 8 --warmup 2 --json "$OUT/bench_b256.json" 2>&1 | tee -a "$OUT/bench.log"
echo "== 3. bf16 accuracy (digits)" | tee "$OUT/acc.log"
timeout 60 $py scripts/bf16_accuracy.py "$OUT/bf16_accuracy.json" 2>&1 | tee -a "$OUT/acc.log"
echo "== 4. bf16 + channels_last, and a repeat of fp32 vanilla (spread)" | tee -a "$OUT/bench.log"
timeout 60 $py -m bench.cli_bench --batch-size 256 --workload vanilla --path fused,ann --precision bf16 \
  --channels-last --iters 8 --warmup 2 --json "$OUT/bench_b256_bf16_cl.json" 2>&1 | tee -a "$OUT/bench.log"
timeout 70 $py -m bench.cli_bench --batch-size 256 --workload vanilla --precision fp32 \
  --iters 8 --warmup 2 --json "$OUT/bench_b256_repeat.json" 2>&1 | tee -a "$OUT/bench.log"
echo "== done"
