#!/usr/bin/env bash
# Second device check (issue 7): fp16 with VAE checkpointing as the CUDA default, the CLIP + ImageReward
# objective (ImageReward's real architecture, random weights), the TAESD gradient decoder, batch 8, and a
# per-phase breakdown of one update. Carries diffusers and image-reward's pure-Python wheels in .gpu/wheels.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD DATE_EDIT_CACHE=$PWD/.gpu/cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 benchmarks/cost.py --dtypes fp16 --batches 1,8 --fractions 10 --imagereward --ckpt-default --taesd \
  --breakdown --no-diffusers --repeats 2 --warmup 1 --budget-s ${BUDGET:-100} --out "$OUT/run2" 2>&1 | grep -v "^{"
