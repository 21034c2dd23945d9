#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU: builds what it can (FP32/FP16 ONNX, TensorRT engine when
# TensorRT is importable), runs parity + latency for torch CUDA (fp32/fp16/bf16/compile), ONNX Runtime CUDA/TRT
# (when onnxruntime-gpu is installed) and the TensorRT engine at 256x256, 720x1280 and 1080x1920, and writes
# everything (results.json/.csv/.md, latency.png, environment.json, run.log) into one folder.
#
#   benchmarks/gpu.sh                       # -> benchmarks/results/gpu/
#   benchmarks/gpu.sh OUT_DIR --tiny        # a quick check of the script itself
#   benchmarks/gpu.sh OUT_DIR --checkpoint latest_net_G_A.pth --batch 1,8
#
# Needs only python3 with torch (CUDA build), onnx and numpy; no pip install of this repo (the script maps
# the package folders itself). PYTHON=/path/to/python overrides the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="benchmarks/results/gpu"
if [[ $# -gt 0 && "$1" != -* ]]; then
    out="$1"
    shift
fi
mkdir -p "$out"
"${PYTHON:-python3}" benchmarks/gpu.py -o "$out" "$@" 2>&1 | tee "$out/run.log"
