#!/usr/bin/env bash
# Install the pinned real clients for the client tests; idempotent and quick
# when nothing changed.
#   .venv/         python3 -m venv + requirements.txt (PyPI XenAPI, hash-checked)
#   node_modules/  npm ci from package-lock.json (npm xen-api)
# Both are git-ignored. A stamp file records the hash of the file each was
# installed from; a changed requirements.txt or package-lock.json reinstalls.
set -euo pipefail
cd "$(dirname "$0")"

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

PYTHON="${PYTHON:-python3}"
want="$(hash_of requirements.txt)"
if [[ -x .venv/bin/python && "$(cat .venv/.xapi-rs-stamp 2>/dev/null)" == "$want" ]] &&
   .venv/bin/python -c 'import XenAPI' 2>/dev/null; then
  echo "setup: .venv up to date"
else
  echo "setup: creating .venv"
  rm -rf .venv
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
  echo "$want" > .venv/.xapi-rs-stamp
fi

want="$(hash_of package-lock.json)"
if [[ -d node_modules/xen-api && "$(cat node_modules/.xapi-rs-stamp 2>/dev/null)" == "$want" ]]; then
  echo "setup: node_modules up to date"
else
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.xapi-rs-stamp
fi

echo "setup: XenAPI $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("XenAPI"))')," \
  "xen-api $(node -p 'require("./node_modules/xen-api/package.json").version'), node $(node --version)"
