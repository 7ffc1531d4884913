#!/usr/bin/env bash
# Run the real-client tests against a started xapi-server.
#   tests/clients/run.sh URL USER PASSWORD [HTTPS_URL CA_FILE]
#     e.g. http://127.0.0.1:8080 root secret https://127.0.0.1:8443 var/xapi-ssl.pem
# Installs the pinned clients if needed (setup.sh), then runs the Python SDK
# suite, the Python SDK disk-import suite (needs the pool's default SR), the
# Xen Orchestra suite over json-rpc, xml-rpc and auto, and the Xen
# Orchestra events suite (watchEvents on; changes made by the Python SDK) over
# json-rpc and xml-rpc.
# With HTTPS_URL and CA_FILE (the daemon's certificate file) it also runs the
# Python SDK suite over HTTPS (ignore_ssl=True), the SDK's certificate checks
# (py_tls.py: with the CA given, and failing without it) and the Xen
# Orchestra suite over HTTPS (allowUnauthorized) for each transport.
# Ends with "clients: N passed, M failed" (N, M count checks; a suite that
# crashed, timed out or printed no RESULT line counts as one more failure)
# and exits non-zero if anything failed.
set -uo pipefail
if [[ $# -ne 3 && $# -ne 5 ]]; then
  echo "usage: $0 URL USER PASSWORD [HTTPS_URL CA_FILE]" >&2
  exit 2
fi
url="$1" user="$2" password="$3" https_url="${4:-}" ca_file="${5:-}"
here="$(cd "$(dirname "$0")" && pwd)"

total_passed=0
total_failed=0
failed_suites=()

if ! "$here/setup.sh"; then
  echo "FAIL setup.sh"
  echo "clients: 0 passed, 1 failed"
  exit 1
fi

# run_suite NAME TIMEOUT_S CMD...
run_suite() {
  local name="$1" limit="$2"
  shift 2
  echo "=== $name"
  local out rc
  out="$(mktemp)"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$out"
  rc="${PIPESTATUS[0]}"
  local line p f
  line="$(grep -E '^RESULT passed=[0-9]+ failed=[0-9]+$' "$out" | tail -n 1)"
  rm -f "$out"
  if [[ -n "$line" ]]; then
    p="${line#RESULT passed=}"; p="${p%% *}"
    f="${line##*failed=}"
  else
    p=0 f=0
  fi
  if [[ "$rc" -ne 0 && "$f" -eq 0 ]]; then
    [[ "$rc" -eq 124 || "$rc" -eq 137 ]] && echo "FAIL $name: timed out after ${limit}s" ||
      echo "FAIL $name: exited $rc without reporting a failed check"
    f=1
  elif [[ "$rc" -eq 0 && -z "$line" ]]; then
    echo "FAIL $name: no RESULT line"
    f=1
  fi
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  [[ "$f" -ne 0 ]] && failed_suites+=("$name")
  echo "=== $name: exit $rc, $p passed, $f failed"
}

run_suite py_sdk 120 "$here/.venv/bin/python" "$here/py_sdk.py" "$url" "$user" "$password"
run_suite py_import 180 "$here/.venv/bin/python" "$here/py_import.py" "$url" "$user" "$password"
for transport in json-rpc xml-rpc auto; do
  run_suite "xo-$transport" 90 node "$here/xo.mjs" "$url" "$user" "$password" "$transport"
done
for transport in json-rpc xml-rpc; do
  run_suite "xo-events-$transport" 90 node "$here/xo_events.mjs" "$url" "$user" "$password" "$transport"
done
if [[ -n "$https_url" ]]; then
  run_suite py_sdk-https 120 "$here/.venv/bin/python" "$here/py_sdk.py" "$https_url" "$user" "$password"
  run_suite py_tls 60 "$here/.venv/bin/python" "$here/py_tls.py" "$https_url" "$user" "$password" "$ca_file"
  for transport in json-rpc xml-rpc auto; do
    run_suite "xo-https-$transport" 90 node "$here/xo.mjs" "$https_url" "$user" "$password" "$transport"
  done
fi

if [[ ${#failed_suites[@]} -gt 0 ]]; then
  echo "failed suites: ${failed_suites[*]}"
fi
echo "clients: $total_passed passed, $total_failed failed"
[[ "$total_failed" -eq 0 ]]
