#!/usr/bin/env bash
# An administrator's script, as one would write it for `ssh root@host xe …`: install a VM from a template with
# `xe`, boot it for real (libvirt/QEMU), shut it down, give it a data disk that the guest writes to, snapshot the
# disk, clone the VM, uninstall both (with their disks). `xe` is given no connection
# options: as root it finds the daemon on its unix socket ($XE_SOCKET) and needs no password.
#
#   tests/guests/xe_admin.sh        (as root, libvirtd running, guest built, target/debug/{xapi-server,xe} built)
#
# Prints "PASS …"/"FAIL …" lines and "RESULT passed=N failed=M"; exits non-zero if anything failed.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
guest="$repo/target/tinyguest"
mkdir -p target/guest-tests
dir="$(mktemp -d "$repo/target/guest-tests/xe-XXXXXX")"
export XE_SOCKET="$dir/xapi"
export PATH="$repo/target/debug:$PATH"

passed=0 failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { # check NAME COMMAND...: the command must succeed
  local name="$1"
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

XAPI_ROOT_PASSWORD="$(head -c 12 /dev/urandom | base64)" RUST_LOG=warn target/debug/xapi-server \
  --data-dir "$dir" --http none --socket "$XE_SOCKET" --libvirt-uri qemu:///system --accel tcg \
  >"$dir/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  for vm in $(xe vm-list name-label=xe-admin --minimal 2>/dev/null | tr , ' ') \
    $(xe vm-list name-label=xe-admin-clone --minimal 2>/dev/null | tr , ' '); do
    xe vm-uninstall uuid="$vm" force=true >/dev/null 2>&1
  done
  kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 200); do [[ -S "$XE_SOCKET" ]] && break; sleep 0.05; done

# wait_for SECONDS COMMAND...: until the command succeeds
wait_for() {
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < until)) || return 1
    sleep 0.1
  done
}
power_is() { [[ "$(xe vm-param-get uuid="$1" param-name=power-state)" == "$2" ]]; }
logged() { grep -q "$2" "$dir/run/consoles/$1.log" 2>/dev/null; }

# The script an administrator writes.
VM=$(xe vm-install template="Generic Linux (direct kernel boot)" new-name-label=xe-admin --minimal)
check "xe vm-install prints the new VM's uuid" test "${#VM}" -eq 36
check "xe vm-param-set of the kernel, initrd and arguments" \
  xe vm-param-set uuid="$VM" PV-kernel="$guest/vmlinux-pvh" PV-ramdisk="$guest/initramfs.cpio.gz" \
  PV-args="console=ttyS0 quiet panic=-1 mode=stay"
free_before=$(xe host-compute-free-memory)
check "xe host-compute-free-memory prints a number" test "$free_before" -gt 0
check "xe vm-start uuid=\$VM" xe vm-start uuid="$VM"
check "the VM is running" power_is "$VM" running
check "the guest boots (its serial console says so)" wait_for 60 logged "$VM" "TINYGUEST-MARKER: staying up"
free_running=$(xe host-compute-free-memory)
check "the running VM holds memory" test "$free_running" -lt "$free_before"
check "xe vm-shutdown vm=xe-admin (clean, ACPI)" xe vm-shutdown vm=xe-admin
check "the VM is halted" power_is "$VM" halted
check "the guest saw the power button" logged "$VM" "ACPI power button"
check "xe vm-start vm=xe-admin again" xe vm-start vm=xe-admin
check "xe vm-shutdown --force (hard)" xe vm-shutdown uuid="$VM" --force
check "halted again" power_is "$VM" halted
# Storage: a data disk on Local storage, written by the guest, snapshotted.
SR=$(xe sr-list name-label="Local storage" --minimal)
check "xe sr-list name-label=\"Local storage\" --minimal prints its uuid" test "${#SR}" -eq 36
VDI=$(xe vdi-create sr-uuid="$SR" name-label=xe-admin-data virtual-size=64MiB)
check "xe vdi-create prints the new VDI's uuid" test "${#VDI}" -eq 36
check "its virtual-size is 64 MiB" test "$(xe vdi-param-get uuid="$VDI" param-name=virtual-size)" -eq 67108864
VBD=$(xe vbd-create vm-uuid="$VM" vdi-uuid="$VDI" device=0 type=Disk mode=RW)
check "xe vbd-create prints the new VBD's uuid" test "${#VBD}" -eq 36
xe vm-param-set uuid="$VM" PV-args="console=ttyS0 quiet panic=-1 mode=poweroff diskwrite=1 disktag=xe"
check "the VM boots with its disk, writes to it and powers itself off" xe vm-start uuid="$VM"
check "halted after writing" wait_for 60 power_is "$VM" halted
check "the guest read back what it wrote to its disk" \
  logged "$VM" "TINYGUEST-DISK-RW: vda readback=\[written-by-tinyguest-vda-xe\]"
SNAP=$(xe vdi-snapshot uuid="$VDI")
check "xe vdi-snapshot prints the snapshot's uuid" test "${#SNAP}" -eq 36
check "the snapshot is a snapshot of the disk" test "$(xe vdi-param-get uuid="$SNAP" param-name=is-a-snapshot)" = true
check "xe vdi-destroy of the snapshot" xe vdi-destroy uuid="$SNAP"
xe vm-param-set uuid="$VM" PV-args="console=ttyS0 quiet panic=-1 mode=stay"
CLONE=$(xe vm-clone vm=xe-admin new-name-label=xe-admin-clone)
check "xe vm-clone prints the clone's uuid" test "${#CLONE}" -eq 36
check "xe vm-start of the clone" xe vm-start uuid="$CLONE"
check "xe vm-uninstall force=true of a running clone" xe vm-uninstall uuid="$CLONE" force=true
check "xe vm-uninstall force=true" xe vm-uninstall uuid="$VM" force=true
check "nothing left" test -z "$(xe vm-list name-label=xe-admin --minimal)$(xe vm-list name-label=xe-admin-clone --minimal)"
check "vm-uninstall took the VMs' disks along" test -z "$(xe vdi-list name-label=xe-admin-data --minimal)"
check "all the memory is back" test "$(xe host-compute-free-memory)" -eq "$free_before"
err=$(xe vm-start uuid="$VM" 2>&1)
check "a command on the uninstalled VM says so, in xe's words" grep -q "The uuid you supplied was invalid" <<<"$err"

echo "xe admin script: $passed passed, $failed failed"
echo "RESULT passed=$passed failed=$failed"
[[ $failed -eq 0 ]]
