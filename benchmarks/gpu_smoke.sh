#!/usr/bin/env bash
# GPU smoke run for twinlm's training step (issue 12, item 8): the Ettin-17m and -150m shapes,
# both twins, bf16, flash_attention_2 when it can be imported (else sdpa), sequence lengths 1,024
# and 8,192, 50 timed steps each on synthetic token data; prints tokens/s per GPU, MFU and the
# ratio to the published anchors, and writes the rows to ${OUT:-.}/gpu_smoke.json.
#
#   bash benchmarks/gpu_smoke.sh               # on a machine with one CUDA GPU
#   bash benchmarks/gpu_smoke.sh --cpu-dry-run # tiny shapes on CPU, checks the script only
# Extra arguments go to benchmarks/gpu_smoke.py (see its --help), e.g. --steps 100 --compile.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-.}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if ! "$PY" -c "import torch, transformers" 2>/dev/null; then
  echo "gpu_smoke: $PY cannot import torch and transformers; point PYTHON at an environment with them" >&2
  exit 2
fi
if [[ " $* " != *" --cpu-dry-run "* ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_smoke: torch sees no CUDA device" >&2; exit 2; }
  if ! "$PY" -c "import flash_attn" 2>/dev/null; then
    # A prebuilt wheel only (building flash-attn from source takes an hour); sdpa otherwise.
    timeout 180 "$PY" -m pip install --quiet --only-binary=:all: flash-attn >/dev/null 2>&1 \
      && echo "gpu_smoke: installed flash-attn" || echo "gpu_smoke: flash-attn not installable here; using sdpa"
  fi
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
"$PY" benchmarks/gpu_smoke.py --json "$OUT_DIR/gpu_smoke.json" "$@"
