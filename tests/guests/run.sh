#!/usr/bin/env bash
# The real-guest tests: host-agent's disk hot-plug on a real guest (cargo test -p host-agent --test it real_, with
# XAPI_RS_REAL_LIBVIRT=qemu:///system), the VM lifecycle of xapi-server on libvirt/QEMU (TCG), driven through the
# pinned Python XenAPI SDK (tests/guests/lifecycle.py), then an administrator's xe script (tests/guests/xe_admin.sh).
#
#   tests/guests/run.sh [--keep]        (from anywhere; as root; build the daemon first: cargo build -p xapi-server)
#
# Starts libvirt's daemons if they are not running (tests/libvirt/start.sh; this script never stops them: the
# caller runs tests/libvirt/stop.sh), builds the tiny guest (tests/guest/build.sh, into target/tinyguest), installs
# the pinned clients (tests/clients/setup.sh), then runs lifecycle.py with --daemon target/debug/xapi-server, which
# starts and stops its own daemon. --keep keeps its data dir (target/guest-tests/<random>: daemon.log, the store,
# run/consoles/<vm-uuid>.log).
# Ends with "RESULT passed=N failed=M" (a suite that crashed, timed out or printed no RESULT line counts as one
# more failure) and exits non-zero if anything failed.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
limit=420 # seconds for lifecycle.py (it takes ~1 min; its own timeouts are far shorter)

fail_setup() {
  echo "FAIL $1"
  echo "RESULT passed=0 failed=1"
  exit 1
}

tests/libvirt/start.sh || fail_setup "tests/libvirt/start.sh"
tests/guest/build.sh >/dev/null || fail_setup "tests/guest/build.sh"
tests/clients/setup.sh || fail_setup "tests/clients/setup.sh"
[[ -x target/debug/xapi-server ]] || fail_setup "no target/debug/xapi-server: run cargo build -p xapi-server first"
[[ -x target/debug/xe ]] || fail_setup "no target/debug/xe: run cargo build -p xe first"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# host-agent against the real libvirt: disk hot-plug, NBD and CD media on the tiny guest (~40 s).
XAPI_RS_REAL_LIBVIRT=qemu:///system XAPI_RS_TINYGUEST="$repo/target/tinyguest" timeout --kill-after=20 300 \
  cargo test --locked -p host-agent --test it real_ -- --nocapture 2>&1 | tee "$out"
rc="${PIPESTATUS[0]}"
line="$(grep -E '^test result: (ok|FAILED)\. [0-9]+ passed; [0-9]+ failed' "$out" | tail -n 1)"
hp=0 hf=0
if [[ -n "$line" ]]; then
  hp="$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")"
  hf="$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")"
fi
if [[ "$rc" -ne 0 && "$hf" -eq 0 ]]; then
  echo "FAIL host-agent real_ tests: exited $rc without reporting a failed test"
  hf=1
elif [[ "$hp" -eq 0 && "$hf" -eq 0 ]]; then
  echo "FAIL host-agent real_ tests: no test ran"
  hf=1
fi
echo "host-agent: exit $rc, $hp passed, $hf failed"

timeout --kill-after=20 "$limit" tests/clients/.venv/bin/python tests/guests/lifecycle.py \
  --daemon target/debug/xapi-server --guest-dir target/tinyguest "$@" 2>&1 | tee "$out"
rc="${PIPESTATUS[0]}"
line="$(grep -E '^RESULT passed=[0-9]+ failed=[0-9]+$' "$out" | tail -n 1)"
if [[ -n "$line" ]]; then
  p="${line#RESULT passed=}"
  p="${p%% *}"
  f="${line##*failed=}"
else
  p=0 f=0
fi
if [[ "$rc" -ne 0 && "$f" -eq 0 ]]; then
  if [[ "$rc" -eq 124 || "$rc" -eq 137 ]]; then
    echo "FAIL lifecycle.py: timed out after ${limit}s"
  else
    echo "FAIL lifecycle.py: exited $rc without reporting a failed check"
  fi
  f=1
elif [[ "$rc" -eq 0 && -z "$line" ]]; then
  echo "FAIL lifecycle.py: no RESULT line"
  f=1
fi
echo "guests: exit $rc, $p passed, $f failed"

# The administrator's script.
timeout --kill-after=10 120 tests/guests/xe_admin.sh 2>&1 | tee "$out"
rc="${PIPESTATUS[0]}"
line="$(grep -E '^RESULT passed=[0-9]+ failed=[0-9]+$' "$out" | tail -n 1)"
xp=0 xf=0
if [[ -n "$line" ]]; then
  xp="${line#RESULT passed=}"
  xp="${xp%% *}"
  xf="${line##*failed=}"
fi
if [[ "$rc" -ne 0 && "$xf" -eq 0 ]]; then
  echo "FAIL xe_admin.sh: exited $rc without reporting a failed check"
  xf=1
fi
p=$((p + xp + hp))
f=$((f + xf + hf))
echo "RESULT passed=$p failed=$f"
[[ "$f" -eq 0 ]]
