#!/usr/bin/env bash
# Starts libvirt's daemons (virtlogd, libvirtd) for the VM tests on a machine without systemd, and waits until
# qemu:///system answers. Installs nothing (tests/install-deps.sh does), edits no configuration, and starts no
# libvirt network: guests get no NIC or a user-mode one.
#
#   tests/libvirt/start.sh [STATE_DIR]        (default STATE_DIR: <repo>/target/libvirt-state); as root
#
# Idempotent: a daemon that is already running (its /run/*.pid names a live process) is used as it is. The daemons
# this script starts are recorded in STATE_DIR (virtlogd.pid, libvirtd.pid, tini-libvirtd.pid), and
# tests/libvirt/stop.sh stops exactly those. Their logs (warnings and errors) go to STATE_DIR/*.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${1:-$repo/target/libvirt-state}"
uri=qemu:///system

say() { echo "libvirt-start: $*"; }
die() {
  echo "libvirt-start: error: $*" >&2
  exit 1
}

[[ $EUID -eq 0 ]] || die "must run as root (the tests use $uri)"
for b in /usr/sbin/libvirtd /usr/sbin/virtlogd; do
  [[ -x "$b" ]] || die "$b not found: run tests/install-deps.sh"
done
for b in tini virsh qemu-system-x86_64; do
  command -v "$b" >/dev/null || die "$b not found: run tests/install-deps.sh"
done
mkdir -p "$state"
state="$(cd "$state" && pwd -P)"

# alive PIDFILE NAME: the file names a live process called NAME (not just any process that reuses an old pid, nor
# one that has exited and waits, as a zombie, for its parent to reap it).
alive() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] &&
    [[ "$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" != Z ]]
}
# wait_for PIDFILE NAME SECONDS
wait_for() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    alive "$1" "$2" && return 0
    sleep 0.1
  done
  return 1
}
# A record in STATE_DIR only stands for a daemon this script started while that daemon still runs.
forget_stale() { # RECORD PIDFILE
  if [[ -e "$1" && "$(cat "$1")" != "$(cat "$2" 2>/dev/null)" ]]; then rm -f "$1"; fi
}

# Pitfall: while /dev/kvm is 0600 root:root, every libvirt call takes ~40 s. libvirt probes QEMU's capabilities
# with CAP_DAC_OVERRIDE and so sees KVM, but QEMU itself runs as libvirt-qemu (group kvm) and cannot open
# /dev/kvm; libvirt then finds its cached capabilities "not valid any more" and probes QEMU again (~4 s, several
# times) on every define and start. root:kvm 0660 is what udev sets on a normal machine; without udev nobody
# does. (KVM does not run real guests on these sandboxes anyway: the domains use type='qemu', i.e. TCG.)
if [[ -e /dev/kvm ]] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

# virtlogd first: the QEMU driver hands it the guests' console (<serial><log file=...>) and /var/log/libvirt/qemu.
forget_stale "$state/virtlogd.pid" /run/virtlogd.pid
if alive /run/virtlogd.pid virtlogd; then
  [[ -e "$state/virtlogd.pid" ]] || say "virtlogd already running (pid $(cat /run/virtlogd.pid)); stop.sh will leave it"
else
  rm -f "$state/virtlogd.pid"
  LIBVIRT_LOG_OUTPUTS="3:file:$state/virtlogd.log" /usr/sbin/virtlogd -d </dev/null >>"$state/virtlogd.stdout" 2>&1 ||
    die "virtlogd did not start; see $state/virtlogd.stdout and $state/virtlogd.log"
  wait_for /run/virtlogd.pid virtlogd 5 || die "virtlogd did not write /run/virtlogd.pid; see $state/virtlogd.log"
  echo "$(cat /run/virtlogd.pid)" >"$state/virtlogd.pid"
  say "started virtlogd (pid $(cat "$state/virtlogd.pid"))"
fi

forget_stale "$state/libvirtd.pid" /run/libvirtd.pid
if alive /run/libvirtd.pid libvirtd; then
  if [[ -e "$state/libvirtd.pid" ]]; then
    say "libvirtd already running (pid $(cat /run/libvirtd.pid), started by this script)"
  else
    say "libvirtd already running (pid $(cat /run/libvirtd.pid)); stop.sh will leave it"
  fi
else
  rm -f "$state/libvirtd.pid" "$state/tini-libvirtd.pid"
  # libvirtd starts every network marked autostart, e.g. the 'default' NAT network (a bridge, dnsmasq, firewall
  # rules) if it is so marked. It skips that when <stateDir>/autostarted exists (the file it leaves itself so that a
  # restart does not autostart again), so leave it first: no network is ever started for the tests.
  mkdir -p /run/libvirt/network
  touch /run/libvirt/network/autostarted
  # Pitfall: PID 1 of these sandboxes reaps orphans only after ~1.5-2 s. QEMU daemonizes, so its zombie waits for
  # PID 1 and libvirt waits for the zombie: every destroy or guest poweroff took ~1.6 s instead of ~0.25 s. tini -s
  # (a child subreaper) adopts and reaps QEMU at once. setsid: keeps the daemons out of the caller's session, so that
  # a Ctrl-C or hangup of the test run does not reach them.
  LIBVIRT_LOG_OUTPUTS="3:file:$state/libvirtd.log" \
    setsid tini -s -- /usr/sbin/libvirtd </dev/null >>"$state/libvirtd.stdout" 2>&1 &
  wait_for /run/libvirtd.pid libvirtd 10 ||
    die "libvirtd did not start; see $state/libvirtd.stdout and $state/libvirtd.log"
  echo "$(cat /run/libvirtd.pid)" >"$state/libvirtd.pid"
  tini="$(awk '/^PPid:/ {print $2}' "/proc/$(cat /run/libvirtd.pid)/status")"
  [[ "$(cat "/proc/$tini/comm" 2>/dev/null)" == tini ]] || die "libvirtd (pid $(cat /run/libvirtd.pid)) is not a child of tini"
  echo "$tini" >"$state/tini-libvirtd.pid"
  say "started libvirtd (pid $(cat "$state/libvirtd.pid")) under tini (pid $tini)"
fi

# Ready when the QEMU driver answers; the first start probes QEMU's capabilities (~2 s on a cold cache).
deadline=$((SECONDS + 20))
until virsh -c "$uri" version >/dev/null 2>&1; do
  alive /run/libvirtd.pid libvirtd || die "libvirtd exited; see $state/libvirtd.log and $state/libvirtd.stdout"
  ((SECONDS < deadline)) || die "$uri did not answer within 20 s; see $state/libvirtd.log"
  sleep 0.1
done
if virsh -c "$uri" net-list --name 2>/dev/null | grep -qx default; then
  say "warning: libvirt's 'default' network is active (not started by this script)"
fi
say "ready: $uri, $(virsh -c "$uri" version 2>/dev/null | awk -F': ' '/Using library/ {print $2}' | head -n 1)"
