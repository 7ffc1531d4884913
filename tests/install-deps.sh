#!/usr/bin/env bash
# Installs what building and testing xapi-rs needs on a Debian 12 machine, as root; skips what is there.
#   Rust (cargo) must already be installed (https://rustup.rs); the rest comes from Debian's packages.
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v curl >/dev/null || need+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
  echo "install-deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "install-deps: cargo not found; install Rust first (rustup)" >&2; exit 1; }
echo "install-deps: $(cargo --version), $(python3 --version), node $(node --version)"
