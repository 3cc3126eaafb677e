#!/usr/bin/env bash
# The device check: real-size SD 1.5 architecture (random weights) on one CUDA GPU.
# Needs diffusers (and the CLIP tokenizer files) carried in .gpu/ where the GPU machine has no network:
#   .gpu/wheels/*.whl  (pip download --no-deps diffusers==0.42.1 importlib_metadata zipp)
#   .gpu/cache/clip-tokenizer/  (a copy of ~/.cache/date-edit/clip-tokenizer)
# Writes cost-<card>.json/.md for fp16 (batches 1, 4, 8, edit and generate) and fp32/bf16 (batch 1) under $OUT.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export DATE_EDIT_CACHE=$PWD/.gpu/cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
mkdir -p "$OUT/fp16" "$OUT/other"
python3 benchmarks/cost.py --dtypes fp16 --batches 1,4,8 --fractions 10,20,100 --large-batch-fractions 10 \
  --edit --checkpointing --repeats 2 --warmup 1 --budget-s ${BUDGET_FP16:-170} --out "$OUT/fp16" 2>&1 | grep -v "^{"
python3 benchmarks/cost.py --dtypes fp32,bf16 --batches 1 --fractions 10,100 --no-diffusers \
  --repeats 2 --warmup 1 --budget-s ${BUDGET_OTHER:-80} --out "$OUT/other" 2>&1 | grep -v "^{"
