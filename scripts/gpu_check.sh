#!/usr/bin/env bash
# One prepared device call (issue 14, ~10 min of a 15-min budget): GPU parity tests of the Triton neuron
# (including the folded TGO/MPD-SGR V-penalties, fp32 and bf16), `bench perf` at B=256 (vanilla, TGO, MPD-SGR;
# fp32 and bf16; plain vs fused vs the ANN limit), the evaluation workloads (APGD-100 with and without
# batched EOT 10, SNN vs the ANN at T*B), and the whole standard protocol beside AutoAttack standard on the same
# SNN and images (issue 25: the protocol's throughput over AutoAttack's, and over the ANN running the same
# stages). Everything lands under $OUT (JSON + logs).
# Usage on the device machine (repo root): bash scripts/gpu_check.sh
# CPU rehearsal with tiny sizes: SMALL=1 bash scripts/gpu_check.sh  (digits, B=8, a few iterations)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
py=python3
if [ "${SMALL:-0}" = 1 ]; then  # the same calls at CPU sizes (checks the script, not the speed)
  DS=digits; B=8; B_EVAL=8; ITERS=1; APGD=5; BUDGET=smoke
else
  DS=cifar10; B=256; B_EVAL=64; ITERS=8; APGD=100; BUDGET=full
fi
$py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/env.log"
echo "== 1. pytest -m gpu" | tee "$OUT/pytest.log"
timeout 150 $py -m pytest -q -m gpu tests/test_fused.py -p no:cacheprovider 2>&1 | tee -a "$OUT/pytest.log"
echo "== 2. bench perf B=256 fp32+bf16 (training with the folded regularisers, PGD-7)" | tee "$OUT/perf.log"
timeout 240 $py -m snnbench.cli_perf --dataset $DS --batch-size $B --workload vanilla,tgo,mpd --precision fp32,bf16 \
  --iters $ITERS --warmup 2 --json "$OUT/perf_b256.json" 2>&1 | tee -a "$OUT/perf.log"
echo "== 3. evaluation: APGD-100, EOT 1 and batched EOT 10, B=64, vs the ANN at T*B" | tee "$OUT/eval.log"
timeout 200 $py -m snnbench.cli_perf --dataset $DS --batch-size $B_EVAL --workload "" --eval apgd,apgd_eot \
  --apgd-steps $APGD --eot 10 --json "$OUT/perf_eval_b64.json" 2>&1 | tee -a "$OUT/eval.log"
echo "== 4. the standard protocol (snn-standard-v2, $BUDGET budget) beside AutoAttack standard, same SNN and images, B=64" \
  | tee "$OUT/protocol.log"
timeout 200 $py -m snnbench.cli_perf --dataset $DS --batch-size $B_EVAL --workload "" --eval standard,autoattack \
  --protocol-budget $BUDGET --path fused,ann --json "$OUT/perf_protocol_b64.json" 2>&1 | tee -a "$OUT/protocol.log"
echo "== done"
