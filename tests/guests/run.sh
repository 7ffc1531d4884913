#!/usr/bin/env bash
# The real-guest tests: host-agent's disk hot-plug on a real guest (cargo test -p host-agent --test it real_, with
# XAPI_RS_REAL_LIBVIRT=qemu:///system), the VM lifecycle of xapi-server on libvirt/QEMU (TCG), driven through the
# pinned Python XenAPI SDK (tests/guests/lifecycle.py), VHD disks on real storage (tests/guests/storage.py), then an
# administrator's xe script (tests/guests/xe_admin.sh).
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
total_p=0 total_f=0

# suite NAME SECONDS FORMAT COMMAND...: runs one suite under a time limit and adds what it reports to the totals.
# FORMAT is `result` (a "RESULT passed=N failed=M" line) or `cargo` (cargo test's "test result:" line). A suite that
# times out, exits non-zero without a failed check, or reports nothing counts as one more failure.
suite() {
  local name="$1" limit="$2" format="$3" rc line p=0 f=0
  shift 3
  timeout --kill-after=20 "$limit" "$@" 2>&1 | tee "$out"
  rc="${PIPESTATUS[0]}"
  if [[ "$format" == cargo ]]; then
    line="$(grep -E '^test result: (ok|FAILED)\. [0-9]+ passed; [0-9]+ failed' "$out" | tail -n 1)"
    if [[ -n "$line" ]]; then
      p="$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")"
      f="$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")"
    fi
  else
    line="$(grep -E '^RESULT passed=[0-9]+ failed=[0-9]+$' "$out" | tail -n 1)"
    if [[ -n "$line" ]]; then
      p="${line#RESULT passed=}"
      p="${p%% *}"
      f="${line##*failed=}"
    fi
  fi
  if [[ "$rc" -ne 0 && "$f" -eq 0 ]]; then
    if [[ "$rc" -eq 124 || "$rc" -eq 137 ]]; then
      echo "FAIL $name: timed out after ${limit}s"
    else
      echo "FAIL $name: exited $rc without reporting a failed check"
    fi
    f=1
  elif [[ "$p" -eq 0 && "$f" -eq 0 ]]; then
    echo "FAIL $name: reported no result"
    f=1
  fi
  echo "$name: exit $rc, $p passed, $f failed"
  total_p=$((total_p + p))
  total_f=$((total_f + f))
}

py=tests/clients/.venv/bin/python
# host-agent against the real libvirt: disk hot-plug, NBD and CD media on the tiny guest (~40 s).
XAPI_RS_REAL_LIBVIRT=qemu:///system XAPI_RS_TINYGUEST="$repo/target/tinyguest" \
  suite "host-agent real_ tests" 300 cargo cargo test --locked -p host-agent --test it real_ -- --nocapture
suite lifecycle.py "$limit" result $py tests/guests/lifecycle.py \
  --daemon target/debug/xapi-server --guest-dir target/tinyguest "$@"
suite storage.py 420 result $py tests/guests/storage.py \
  --daemon target/debug/xapi-server --guest-dir target/tinyguest "$@"
# The administrator's script.
suite xe_admin.sh 120 result tests/guests/xe_admin.sh
echo "RESULT passed=$total_p failed=$total_f"
[[ "$total_f" -eq 0 ]]
