#!/usr/bin/env bash
# Third device check (issue 7), prepared without a GPU: torch.compile (reduce-overhead, CUDA graphs) for the
# no-grad passes, plain vs DATE 10% in the same run, with the one-off compile seconds; the update step now reuses
# the gradient pass's unconditional eps; batch 8 (memory target < 24 GiB); 20% and 100% updates.
# Needs .gpu/wheels (diffusers etc.) and .gpu/cache (the CLIP tokenizer) carried as in run 2.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD DATE_EDIT_CACHE=$PWD/.gpu/cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# 1: batch 1, fp16, eager and compiled, 10/20/100% (about 4 min with one compile of ~2 min)
python3 benchmarks/cost.py --dtypes fp16 --batches 1 --fractions 10,20,100 --ckpt-default --compile \
  --repeats 2 --warmup 1 --budget-s ${BUDGET1:-300} --out "$OUT/run3" 2>&1 | grep -v "^{"
# 2: batch 8, fp16, 10% (memory)
python3 benchmarks/cost.py --dtypes fp16 --batches 8 --fractions 10 --ckpt-default --no-diffusers \
  --repeats 1 --warmup 1 --budget-s ${BUDGET2:-120} --out "$OUT/run3-b8" 2>&1 | grep -v "^{"
