#!/usr/bin/env bash
# Everything the GPU issue measures, in one run on a machine with a CUDA GPU (one `device` call):
#   bench/gpu.sh VIEWS.npy|PHOTO_DIR [OUT_DIR]
# 1. builds the kernels (build/libcomcloak_kernels.so, loaded by comcloak.kernels from there);
# 2. runs the gpu-marked tests (kernels against their references, CUDA graph against eager);
# 3. benchmarks eager fp32 / CUDA-graph fp32 / CUDA-graph bf16 (/ onnxruntime-cuda when installed) for
#    EfficientNet-Lite0 and ResNet50 (random weights) through comodel:jpeg:50 at batch 32/128/256;
# 4. the parity of the CUDA graph with eager fp32 on the paper protocol (views plus their mirror images).
set -euo pipefail
views=${1:?usage: bench/gpu.sh VIEWS.npy|PHOTO_DIR [OUT_DIR]}
out=${2:-bench/results}
mkdir -p "$out"
cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES=native > "$out/gpu-build.log" 2>&1 && cmake --build build -j >> "$out/gpu-build.log" 2>&1
python -m pytest -q -m gpu tests/kernels tests/engine/test_torch_runners.py 2>&1 | tail -15 | tee "$out/gpu-tests.log"
backends=torch,torch-cudagraph
python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" 2>/dev/null \
  && backends=$backends,onnxruntime
for classifier in efficientnet_lite0 resnet50; do
  comcloak bench --device cuda --classifier "$classifier" --random-weights --through comodel:jpeg:50 \
    --backends "$backends" --precision fp32,bf16 --batch 32,128,256 --min-seconds 3 --json "$out/gpu-$classifier-comodel_jpeg50.json"
done
python bench/gpu_parity.py "$views" --mirror --json "$out/parity-gpu.json"
