#!/usr/bin/env bash
# On a lent GPU: paper/res_cub200 (random weights) on a CUB-format copy, baseline and GCA-HNG under bf16,
# precision and finiteness checks, steps/s and peak memory, and cost.py's whole-step rows. See scripts/gpu_smoke.py.
source "$(dirname "$0")/env.sh"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
python scripts/gpu_smoke.py --out "${OUT:-runs/gpu_smoke}" "$@"
