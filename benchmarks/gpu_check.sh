#!/usr/bin/env bash
# The device checks: the real-size SD 1.5, SDXL, SD3 and FLUX architectures (random weights) on one CUDA GPU.
#
#   bash benchmarks/gpu_check.sh [STAGE ...]      (default: base)
#
# Stages (each writes cost-<card>.json/.md under $OUT/<stage>; budgets in seconds via the named variables):
#   base        fp16 batches 1, 4, 8 (edit and generate, 10/20/100% updates), fp32/bf16 at batch 1
#               (BUDGET_FP16=170, BUDGET_OTHER=80)
#   objectives  fp16 with the CUDA default VAE checkpointing, CLIP + ImageReward (its real architecture,
#               random weights), the TAESD gradient decoder, batch 8, per-phase breakdown (BUDGET_OBJECTIVES=100)
#   compile     torch.compile (reduce-overhead, CUDA graphs) of the no-grad passes, eager vs compiled, plain vs
#               DATE 10/20/100% at batch 1 (BUDGET_COMPILE=300), and batch 8 fp16 10% memory (BUDGET_B8=120)
#   sdxl        the real-size SDXL base architecture (random weights) at 1024 px, 50 steps, batch 1: plain vs DATE
#               10% with the CUDA default VAE checkpointing, fp16 then bf16, with diffusers' SDXL pipeline as a
#               baseline and the per-phase breakdown (BUDGET_SDXL=300)
#   flow        the real-size SD3-medium and FLUX.1-dev architectures (random weights) at 1024 px, bf16, batch 1:
#               plain vs DATE 10% with and without per-block gradient checkpointing of the transformer, with
#               diffusers' own pipelines as baselines (BUDGET_SD3=200, BUDGET_FLUX=300)
#   toy16       issue 27's finer toy world: the toy model retrained with a factor-4 autoencoder (16x16 latents)
#               on the GPU into $OUT/toy16 (MINUTES_TOY16=8 of wall time, evaluation included); then, here on the
#               CPU: python -m benchmarks.studies.toy_edit_controls --model <that folder> --split val (not part of 'all')
#   all         every stage above but toy16
#
# Where the GPU machine has no network, carry in .gpu/:
#   .gpu/wheels/*.whl  (pip download --no-deps diffusers==0.42.1 importlib_metadata zipp [image-reward's wheels])
#   .gpu/cache/clip-tokenizer/  (a copy of ~/.cache/date-edit/clip-tokenizer)
set -uo pipefail
OUT=${OUT:-benchmarks/results}
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(base)
[ "${STAGES[0]}" = all ] && STAGES=(base objectives compile sdxl flow)
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export DATE_EDIT_CACHE=$PWD/.gpu/cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
cost() { python3 -m benchmarks.cost.date_cost "$@" 2>&1 | grep -v "^{"; }
for stage in "${STAGES[@]}"; do
  case "$stage" in
    base)
      cost --dtypes fp16 --batches 1,4,8 --fractions 10,20,100 --large-batch-fractions 10 --edit --checkpointing \
        --repeats 2 --warmup 1 --budget-s "${BUDGET_FP16:-170}" --out "$OUT/fp16"
      cost --dtypes fp32,bf16 --batches 1 --fractions 10,100 --no-diffusers \
        --repeats 2 --warmup 1 --budget-s "${BUDGET_OTHER:-80}" --out "$OUT/other" ;;
    objectives)
      cost --dtypes fp16 --batches 1,8 --fractions 10 --imagereward --ckpt-default --taesd --breakdown --no-diffusers \
        --repeats 2 --warmup 1 --budget-s "${BUDGET_OBJECTIVES:-100}" --out "$OUT/run2" ;;
    compile)
      cost --dtypes fp16 --batches 1 --fractions 10,20,100 --ckpt-default --compile \
        --repeats 2 --warmup 1 --budget-s "${BUDGET_COMPILE:-300}" --out "$OUT/run3"
      cost --dtypes fp16 --batches 8 --fractions 10 --ckpt-default --no-diffusers \
        --repeats 1 --warmup 1 --budget-s "${BUDGET_B8:-120}" --out "$OUT/run3-b8" ;;
    sdxl)
      cost --arch sdxl --dtypes fp16,bf16 --batches 1 --fractions 10 --ckpt-default --breakdown \
        --repeats 2 --warmup 1 --budget-s "${BUDGET_SDXL:-300}" --out "$OUT/sdxl" ;;
    flow)
      cost --arch sd3 --dtypes bf16 --batches 1 --fractions 10 --ckpt-default --block-checkpointing --breakdown \
        --repeats 2 --warmup 1 --budget-s "${BUDGET_SD3:-200}" --out "$OUT/sd3"
      cost --arch flux --dtypes bf16 --batches 1 --fractions 10 --ckpt-default --block-checkpointing --breakdown \
        --repeats 2 --warmup 1 --budget-s "${BUDGET_FLUX:-300}" --out "$OUT/flux" ;;
    toy16)
      python3 -m date_edit.toy.train --device cuda --threads 8 --vae-channels 8,16,32 --unet-channels 32,64,112,112 \
        --minutes "${MINUTES_TOY16:-8}" --out "$OUT/toy16" --results "$OUT/toy16-training.json" ;;
    *) echo "gpu_check.sh: unknown stage '$stage': use base, objectives, compile, sdxl, flow, toy16 or all" >&2
       exit 2 ;;
  esac
done
