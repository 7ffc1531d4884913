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

# The VM tests: libvirt (the daemons and virsh; libvirt-dev for the `virt` crate) driving QEMU, and what
# tests/guest/build.sh makes the test guest of (busybox-static, cpio, xz).
vm=()
# Debian 12's own qemu-utils along with qemu-system-x86, always: some images carry qemu-utils 10 from
# bookworm-backports, which Breaks the bookworm qemu-system-common 7.2 and so has to be downgraded (qemu-img 7.2
# handles qcow2 and vpc just as well).
command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null || vm+=(qemu-system-x86 qemu-utils/bookworm)
{ [[ -x /usr/sbin/libvirtd && -x /usr/sbin/virtlogd ]] && getent passwd libvirt-qemu >/dev/null; } ||
  vm+=(libvirt-daemon-system)
command -v virsh >/dev/null && command -v virt-xml-validate >/dev/null || vm+=(libvirt-clients)
pkg-config --exists libvirt 2>/dev/null || vm+=(libvirt-dev)
# busybox-static, not busybox: the guest's initramfs has no libc (and ldd fails on a static binary).
{ [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; } || vm+=(busybox-static)
command -v cpio >/dev/null || vm+=(cpio)
command -v xz >/dev/null || vm+=(xz-utils)
command -v tini >/dev/null || vm+=(tini)
command -v xmllint >/dev/null || vm+=(libxml2-utils) # what virt-xml-validate runs

if ((${#need[@]} + ${#vm[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
fi
if ((${#need[@]})); then
  echo "install-deps: apt-get install ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ((${#vm[@]})); then
  # --no-install-recommends keeps out dnsmasq, lvm2, swtpm and the like; libvirt-daemon-system still pulls in systemd
  # and iptables, which do nothing where systemd is not PID 1 (tests/libvirt/start.sh starts the daemons).
  echo "install-deps: apt-get install ${vm[*]}"
  apt-get install -y -qq --allow-downgrades --no-install-recommends "${vm[@]}"
fi
command -v cargo >/dev/null || { echo "install-deps: cargo not found; install Rust first (rustup)" >&2; exit 1; }
echo "install-deps: $(cargo --version), $(python3 --version), node $(node --version)"
echo "install-deps: $(qemu-system-x86_64 --version | head -n 1), libvirt $(virsh --version)"
