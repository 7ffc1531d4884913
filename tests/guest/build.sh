#!/usr/bin/env bash
# Builds the tiny test guest that the VM lifecycle tests boot through libvirt/QEMU (TCG):
#   OUT_DIR/vmlinux-pvh        the Debian kernel as an uncompressed ELF; QEMU boots it through its PVH entry point,
#                              which skips SeaBIOS and the in-guest xz decompression (~2 s to /init instead of ~5 s)
#   OUT_DIR/vmlinuz            the same kernel as the usual bzImage
#   OUT_DIR/initramfs.cpio.gz  busybox-static + 9 modules (virtio, virtio_blk, balloon, ACPI button, evdev) + tests/guest/init
#
#   tests/guest/build.sh [OUT_DIR]        (default OUT_DIR: <repo>/target/tinyguest)
#
# The kernel is the package Debian's linux-image-amd64 depends on, downloaded with `apt-get download` into
# OUT_DIR/cache and unpacked there with dpkg-deb (only the files used): never installed, so /boot and the host's
# initramfs hooks are left alone.
# Idempotent: an output is rebuilt only when it is missing or older than what it is made from (the kernel, busybox,
# tests/guest/init, this script). Progress goes to stderr; stdout gets exactly the three paths, in the order above.
# Needs (tests/install-deps.sh): busybox-static, cpio, python3, apt-get. Root is needed only for apt-get update (when
# the package lists are missing) and for the two device nodes in the initramfs (the kernel copes without them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
init_src="$here/init"
busybox=/bin/busybox
# Loaded by /init in this order (dependencies first). Debian builds all of them as modules.
modules=(
  drivers/virtio/virtio_ring drivers/virtio/virtio
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci
  drivers/block/virtio_blk drivers/virtio/virtio_balloon
  drivers/input/evdev drivers/acpi/button
)

say() { echo "tinyguest: $*" >&2; }
die() { echo "tinyguest: error: $*" >&2; exit 1; }

out="${1:-$repo/target/tinyguest}"
(umask 022 && mkdir -p "$out/cache")
out="$(cd "$out" && pwd -P)"
cache="$out/cache"

# QEMU runs as the unprivileged user libvirt-qemu: it must be able to walk down to OUT_DIR and read the files in it.
# libvirt's DAC driver chowns the kernel and initrd for the guest's lifetime, but it cannot help with the directories.
d="$out"
while :; do
  mode="$(stat -c %a "$d")"
  if (((8#$mode & 1) == 0)); then
    die "directory $d is not traversable by others (mode $mode), so QEMU (user libvirt-qemu) could not read the" \
      "guest kernel under it; run 'chmod o+x $d' or pass an OUT_DIR elsewhere (e.g. under /var/tmp)"
  fi
  [[ "$d" == / ]] && break
  d="$(dirname "$d")"
done

# One build at a time per OUT_DIR (parallel test runners may all call this).
exec 9>"$out/.build.lock"
flock 9

# stale OUTPUT INPUT...: true if OUTPUT is missing or older than one of the inputs.
stale() {
  local o="$1" i
  shift
  [[ -e "$o" ]] || return 0
  for i in "$@"; do [[ "$i" -nt "$o" ]] && return 0; done
  return 1
}

# --- busybox: must be the static build (the initramfs has no libc) ---------------------------------------------
[[ -x "$busybox" ]] || die "$busybox not found: install busybox-static (tests/install-deps.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static instead of busybox (tests/install-deps.sh)"
fi

# --- kernel package ----------------------------------------------------------------------------------------------
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
apt_update() {
  say "apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
}
kpkg="$(kernel_pkg || true)"
if [[ -z "$kpkg" ]]; then
  # No package lists (a fresh machine where apt-get update never ran): reuse a kernel downloaded before, else fetch
  # the lists.
  cached="$(find "$cache" -mindepth 2 -maxdepth 2 -name 'linux-image-*.deb' -printf '%h\n' 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$cached" ]]; then
    kpkg="$(basename "$cached")"
    say "no apt package lists; using the kernel downloaded before: $kpkg"
  else
    apt_update
    kpkg="$(kernel_pkg || true)"
    [[ -n "$kpkg" ]] || die "cannot find the kernel package linux-image-amd64 depends on (apt-cache depends linux-image-amd64)"
  fi
fi
kdir="$cache/$kpkg"
if ! compgen -G "$kdir/${kpkg}_*.deb" >/dev/null; then
  rm -rf "$kdir" "$kdir.tmp"
  mkdir -p "$kdir.tmp"
  say "downloading $kpkg"
  if ! (cd "$kdir.tmp" && apt-get download "$kpkg" >download.log 2>&1); then
    # Stale package lists name a version the mirror no longer has: refresh them once and retry.
    apt_update
    kpkg2="$(kernel_pkg || true)"
    [[ "$kpkg2" == "$kpkg" ]] || die "linux-image-amd64 now depends on $kpkg2, not $kpkg; run this script again"
    (cd "$kdir.tmp" && apt-get download "$kpkg" >download.log 2>&1) || {
      cat "$kdir.tmp/download.log" >&2
      die "apt-get download $kpkg failed"
    }
  fi
  compgen -G "$kdir.tmp/${kpkg}_*.deb" >/dev/null || die "apt-get download $kpkg left no .deb in $kdir.tmp"
  rm -f "$kdir.tmp/download.log"
  mv "$kdir.tmp" "$kdir"
  # Kernels of earlier runs are of no more use.
  find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' ! -name "$kpkg" -exec rm -rf {} +
fi
debs=("$kdir/${kpkg}"_*.deb)
# Unpack (dpkg-deb, never dpkg -i) only what the guest is made of: the whole package is ~400 MB of modules.
# Done again from the kept .deb when the module list above changes.
wanted=('*/boot/vmlinuz-*' '*/boot/config-*' '*/modules/*/modules.builtin')
for m in "${modules[@]}"; do wanted+=("*/modules/*/kernel/$m.ko*"); done
kroot="$kdir/root"
if [[ ! -d "$kroot" ]] || [[ "$(cat "$kdir/root.list" 2>/dev/null)" != "$(printf '%s\n' "${wanted[@]}")" ]]; then
  say "unpacking $(basename "${debs[0]}")"
  rm -rf "$kroot" "$kroot.tmp" "$kdir/root.list"
  mkdir "$kroot.tmp"
  dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$kroot.tmp" --wildcards "${wanted[@]}"
  mv "$kroot.tmp" "$kroot"
  printf '%s\n' "${wanted[@]}" >"$kdir/root.list"
fi
builtin="$(find "$kroot" -path '*/modules/*/modules.builtin' | head -n 1)"
[[ -n "$builtin" ]] || die "no modules.builtin in $(basename "${debs[0]}")"
kmods="$(dirname "$builtin")" # <root>/lib/modules/<version>
kver="$(basename "$kmods")"
[[ -f "$kroot/boot/vmlinuz-$kver" ]] || die "no boot/vmlinuz-$kver in $(basename "${debs[0]}")"

# Which kernel the outputs are made of; rewritten (so: newer than the outputs) only when it changes.
echo "$kpkg $kver" >"$out/.kernel.tmp"
if cmp -s "$out/.kernel.tmp" "$out/kernel.id"; then rm "$out/.kernel.tmp"; else mv "$out/.kernel.tmp" "$out/kernel.id"; fi

# --- vmlinuz + vmlinux-pvh -------------------------------------------------------------------------------------
if stale "$out/vmlinuz" "$kroot/boot/vmlinuz-$kver" "$out/kernel.id"; then
  say "vmlinuz ($kver)"
  install -m 0644 "$kroot/boot/vmlinuz-$kver" "$out/.vmlinuz.tmp"
  mv "$out/.vmlinuz.tmp" "$out/vmlinuz"
fi
if stale "$out/vmlinux-pvh" "$out/vmlinuz" "$self"; then
  grep -q '^CONFIG_PVH=y' "$kroot/boot/config-$kver" ||
    die "kernel $kver is built without CONFIG_PVH: QEMU could not boot its vmlinux directly (use vmlinuz)"
  say "vmlinux-pvh (uncompressing the bzImage payload)"
  python3 - "$out/vmlinuz" "$out/.vmlinux-pvh.tmp" <<'PY'
import lzma, struct, sys
bz = open(sys.argv[1], 'rb').read()
if bz[0x202:0x206] != b'HdrS':
    sys.exit(f'{sys.argv[1]}: not a bzImage')
# The boot protocol header says where the compressed kernel is: payload_offset/length (0x248/0x24c), counted from
# the start of the protected-mode code, which follows the (setup_sects + 1) real-mode sectors.
setup_sects = bz[0x1f1] or 4
offset, length = struct.unpack_from('<II', bz, 0x248)
payload = bz[(setup_sects + 1) * 512 + offset:][:length]
if not payload.startswith(b'\xfd7zXZ\x00'):
    sys.exit(f'{sys.argv[1]}: the payload is not xz (starts {payload[:6].hex()}); only CONFIG_KERNEL_XZ is handled')
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
if not elf.startswith(b'\x7fELF'):
    sys.exit(f'{sys.argv[1]}: the payload did not uncompress to an ELF file')
with open(sys.argv[2], 'wb') as f:
    f.write(elf)
PY
  chmod 0644 "$out/.vmlinux-pvh.tmp"
  mv "$out/.vmlinux-pvh.tmp" "$out/vmlinux-pvh"
fi

# --- initramfs ---------------------------------------------------------------------------------------------------
if stale "$out/initramfs.cpio.gz" "$init_src" "$busybox" "$out/kernel.id" "$self"; then
  say "initramfs.cpio.gz"
  w="$(mktemp -d "$out/.initramfs.XXXXXX")"
  trap 'rm -rf "$w"' EXIT
  mkdir -p "$w/root"/{bin,dev,etc,proc,sys,tmp,lib/modules}
  cp "$busybox" "$w/root/bin/busybox"
  ln -s busybox "$w/root/bin/sh"
  chmod 1777 "$w/root/tmp"
  install -m 0755 "$init_src" "$w/root/init"
  : >"$w/root/lib/modules/load-order"
  for m in "${modules[@]}"; do
    name="$(basename "$m")"
    if [[ -f "$kmods/kernel/$m.ko" ]]; then
      cp "$kmods/kernel/$m.ko" "$w/root/lib/modules/$name.ko"
    elif [[ -f "$kmods/kernel/$m.ko.xz" ]]; then
      xz -dc "$kmods/kernel/$m.ko.xz" >"$w/root/lib/modules/$name.ko"
    elif grep -q "^kernel/$m.ko" "$builtin"; then
      continue # built into this kernel: nothing to load
    else
      die "module $m is neither in $(basename "${debs[0]}") nor built into its kernel"
    fi
    echo "$name" >>"$w/root/lib/modules/load-order"
  done
  # The console device nodes, so that the kernel can open /dev/console before /init mounts devtmpfs.
  if [[ $EUID -eq 0 ]]; then
    mknod -m 600 "$w/root/dev/console" c 5 1
    mknod -m 660 "$w/root/dev/ttyS0" c 4 64
  fi
  (cd "$w/root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 -n >"$w/initramfs.cpio.gz"
  chmod 0644 "$w/initramfs.cpio.gz"
  mv "$w/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
  rm -rf "$w"
  trap - EXIT
fi

say "kernel $kver ($kpkg)"
echo "$out/vmlinux-pvh"
echo "$out/vmlinuz"
echo "$out/initramfs.cpio.gz"
