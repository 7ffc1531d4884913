#!/usr/bin/env bash
# Undoes tests/libvirt/start.sh: stops the daemons it started (recorded in STATE_DIR), by PID, and nothing else.
#
#   tests/libvirt/stop.sh [STATE_DIR]        (default STATE_DIR: <repo>/target/libvirt-state); as root
#
# libvirtd leaves running guests running when it exits, so before stopping a libvirtd of ours this destroys the
# running domains named xapi-* (the toolstack names its domains xapi-<uuid>); other domains are left alone, and so
# is a libvirtd this script did not start, with all its domains. Idempotent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${1:-$repo/target/libvirt-state}"
uri=qemu:///system

say() { echo "libvirt-stop: $*"; }

[[ $EUID -eq 0 ]] || {
  echo "libvirt-stop: error: must run as root" >&2
  exit 1
}
[[ -d "$state" ]] || {
  say "nothing to stop (no $state)"
  exit 0
}

# running PID NAME: PID is a process called NAME that has not exited. An exited one stays a zombie until its parent
# reaps it, which takes PID 1 of these sandboxes ~2 s: the daemons' parent is PID 1 once start.sh has returned.
running() {
  [[ "$1" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]] &&
    [[ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]]
}
# recorded RECORD NAME: prints the pid in RECORD if it is a running process called NAME.
recorded() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  running "$pid" "$2" && echo "$pid"
}
# stop RECORD NAME: SIGTERM, up to 15 s, then SIGKILL; removes the record.
stop() {
  local pid i
  if pid="$(recorded "$1" "$2")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      running "$pid" "$2" || break
      sleep 0.1
    done
    if running "$pid" "$2"; then
      say "$2 (pid $pid) still running after 15 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $2 (pid $pid)"
    stopped+=1
  fi
  rm -f "$1"
}
declare -i stopped=0

if recorded "$state/libvirtd.pid" libvirtd >/dev/null; then
  if doms="$(timeout 20 virsh -c "$uri" list --name 2>/dev/null)"; then
    for dom in $doms; do
      if [[ "$dom" == xapi-* ]]; then
        if timeout 20 virsh -c "$uri" destroy "$dom" >/dev/null; then
          say "destroyed domain $dom"
        else
          say "warning: could not destroy domain $dom"
        fi
      else
        say "warning: domain $dom is not ours (not xapi-*): left running, without a libvirtd"
      fi
    done
  else
    say "warning: $uri does not answer; running domains (if any) are left as they are"
  fi
fi
stop "$state/libvirtd.pid" libvirtd
stop "$state/tini-libvirtd.pid" tini # exits with its libvirtd; this is only in case it did not
stop "$state/virtlogd.pid" virtlogd
((stopped)) || say "no daemon started by tests/libvirt/start.sh is running"
