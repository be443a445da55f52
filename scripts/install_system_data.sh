#!/usr/bin/env bash
# Installs the Debian package that carries Fashion-MNIST, when it is missing and we may (root + apt-get).
# Everything else the benchmark reads comes from PyPI packages or the shared data folder.
set -euo pipefail
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
[[ -f $FASHION ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "[setup] Fashion-MNIST is not installed and this user cannot apt-get install it." >&2
  echo "        Run as root: apt-get install -y dataset-fashion-mnist; otherwise the benchmark fetches the official" >&2
  echo "        files into its data folder on first use (README, Quickstart: Data)." >&2
fi
