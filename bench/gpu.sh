#!/usr/bin/env bash
# Everything the GPU issue measures, in one run on a machine with a CUDA GPU (one `device` call):
#   bench/gpu.sh DATA_DIR OUT_DIR
# DATA_DIR holds views.npy (uint8 (N, 224, 224, 3) paper views; with their mirror images the paper parity's views)
# and photos/ (dev photos for the balanced preset's protection through each backend). Steps, in this order:
#   env            python, torch, CUDA, driver and GPU (nvidia-smi)
#   build          the CUDA kernels (build/libcomcloak_kernels.so, loaded by comcloak.kernels from there)
#   tests + parity, side by side (nothing timed): the gpu-marked tests (kernels against their references, the CUDA
#                  graph and its on-device draws against eager, the Cloaker on CUDA) and the CUDA graph fp32/bf16
#                  against eager fp32 on the paper protocol (bench/gpu_parity.py)
#   bench-*        one at a time: eager fp32, CUDA-graph fp32 and bf16 (comcloak bench, JSON + markdown) for the
#                  balanced preset, the paper step (EfficientNet-Lite0), the strong preset and the paper step on
#                  ResNet50 (random weights), at batch 32 (3 interleaved rounds), 128 and 256 (one round, one
#                  worker at a time: they would not fit side by side)
#   protect-*      the balanced preset's protection through torch fp32 and torch-cudagraph bf16 (then fp32):
#                  comcloak eval --protocol platform on the photos, the surrogates as judges, crop view
# Environment: GPU_BUDGET_S (default 3000): a step that would start later is skipped, and each step's timeout is
# capped by what is left; GPU_STEPS: comma-separated step names (or prefixes) to run (default all).
# Every step writes OUT_DIR/NAME.log; OUT_DIR/steps.txt has one line per step (exit code, seconds).
# Without an installed comcloak (a GPU image with its own torch), the checkout itself is put on PYTHONPATH.
set -uo pipefail
data=${1:?usage: bench/gpu.sh DATA_DIR OUT_DIR}
out=${2:?usage: bench/gpu.sh DATA_DIR OUT_DIR}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deadline=$(( $(date +%s) + ${GPU_BUDGET_S:-3000} ))
python=${PYTHON:-python3}
if ! "$python" -c "import comcloak" 2>/dev/null; then  # the checkout is the package (pyproject: comcloak = ".")
  mkdir -p /tmp/comcloak-src && ln -sfn "$root" /tmp/comcloak-src/comcloak
  export PYTHONPATH=/tmp/comcloak-src${PYTHONPATH:+:$PYTHONPATH}
fi
comcloak() { "$python" -m comcloak "$@"; }
export python data out

wanted() {  # is step $1 selected by GPU_STEPS?
  [ -z "${GPU_STEPS:-}" ] && return 0
  local item
  for item in ${GPU_STEPS//,/ }; do [[ $1 == "$item"* ]] && return 0; done
  return 1
}

step() {  # step NAME CAP_SECONDS COMMAND...: run it under a timeout, log to OUT/NAME.log, record rc and seconds
  local name=$1 cap=$2; shift 2
  wanted "$name" || return 0
  local left=$(( deadline - $(date +%s) ))
  if (( left < 15 )); then echo "$name skipped (budget spent)" >> "$out/steps.txt"; return 0; fi
  local began=$(date +%s) rc
  # bash -c: the steps are this script's functions (exported below); timeout signals the whole step's group
  timeout -k 10 $(( cap < left ? cap : left )) bash -c '"$@"' step "$@" > "$out/$name.log" 2>&1; rc=$?
  echo "$name rc=$rc $(( $(date +%s) - began ))s" >> "$out/steps.txt"
  tail -3 "$out/$name.log" | sed "s/^/  $name: /"
}

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$python" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
  command -v nvcc >/dev/null && nvcc --version | tail -2
  "$python" -m pip list 2>/dev/null | grep -iE "^(onnx|onnxruntime|tensorrt|numpy|pillow|safetensors) " || true
}

build() {
  cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES=native -DCMAKE_BUILD_TYPE=Release && cmake --build build -j
  "$python" -c "from comcloak.kernels import kernel_status; print(kernel_status())"
}

protect() {  # protect BACKEND PRECISION: the balanced preset's protection, the same photos, profiles and judges
  comcloak eval "$data/photos" --protocol platform --strengths balanced --judges none --views crop \
    --codecs facebook,instagram,whatsapp,wechat --device cuda --backend "$1" --precision "$2" -q \
    --json "$out/protect-balanced-$1-$2.json" --report "$out/protect-balanced-$1-$2.md"
}

bench() {  # bench NAME ARGS...: eager and CUDA-graph rows, fp32 and bf16
  local name=$1; shift
  comcloak bench --device cuda --backends torch@fp32,torch-cudagraph --precision fp32,bf16 --json "$out/$name.json" \
    "$@"
}
export -f comcloak environment build protect bench

echo "GPU run $(date -u +%FT%TZ) at $(git rev-parse --short HEAD 2>/dev/null)" >> "$out/steps.txt"
step env 60 environment
step build 240 build
step tests 300 "$python" -m pytest -q -m gpu -p no:cacheprovider tests/kernels tests/engine/test_torch_runners.py \
  tests/engine/test_backends.py tests/engine/test_gpu_robust.py &
step parity 300 "$python" bench/gpu_parity.py "$data/views.npy" --mirror --json "$out/parity-gpu.json" &
wait
step bench-balanced-32 300 bench bench-balanced-32 --strength balanced --batch 32 --rounds 3 --min-seconds 0
step bench-balanced-128 300 bench bench-balanced-128 --strength balanced --batch 128 --min-seconds 0
step bench-balanced-256 400 bench bench-balanced-256 --strength balanced --batch 256 --min-seconds 0
step protect-torch 300 protect torch fp32
step protect-cudagraph-bf16 300 protect torch-cudagraph bf16
step bench-paper-lite0 300 bench bench-paper-lite0 --classifier efficientnet_lite0 --through comodel:jpeg:50 \
  --batch 32,128,256 --rounds 3 --min-seconds 1
step bench-strong-32 300 bench bench-strong-32 --strength strong --batch 32 --rounds 3 --min-seconds 0
step bench-strong-128 400 bench bench-strong-128 --strength strong --batch 128 --min-seconds 0
step bench-strong-256 500 bench bench-strong-256 --strength strong --batch 256 --min-seconds 0
step bench-paper-resnet50-32 300 bench bench-paper-resnet50-32 --classifier resnet50 --random-weights \
  --through comodel:jpeg:50 --batch 32 --rounds 3 --min-seconds 1
step bench-paper-resnet50-128 300 bench bench-paper-resnet50-128 --classifier resnet50 --random-weights \
  --through comodel:jpeg:50 --batch 128,256 --min-seconds 1
step protect-cudagraph-fp32 300 protect torch-cudagraph fp32
echo "done $(date -u +%FT%TZ)" >> "$out/steps.txt"
