#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` for scripts/bench-vs-llama.sh, from the llama.cpp sources
# vendored in PyPI's `llama-cpp-python==0.3.36` (llama.cpp commit 0c1e570, the commit of the
# exactness references), with GGML_NATIVE so it uses every SIMD extension of this CPU.
#
#   scripts/build-llama-bench.sh [DIR [TARGET...]]   (default: target/llama.cpp llama-bench)
#
# Other llama.cpp tools build the same way (scripts/kld-vs-llama.sh asks for llama-perplexity).
# Prints the path of each built binary, the last target's last; use it as LLAMA_BENCH. Needs pip, cmake and a C++
# compiler (as root, cmake and g++ are installed from Debian's packages when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-target/llama.cpp}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(llama-bench)
version=0.3.36
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

src="$dir/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
  # Only this package as a source distribution: its build dependencies stay wheels.
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$dir"
  tar -xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir"
fi

cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build "$src/build" --target "${targets[@]}" -j "$(nproc)" >/dev/null
for t in "${targets[@]}"; do
  echo "$src/build/bin/$t"
done
