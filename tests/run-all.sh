#!/usr/bin/env bash
# The whole test suite: every Rust test of the workspace (host-agent's real_ tests only say that they did not run);
# real QEMU guests (tests/guests/run.sh: host-agent's disk hot-plug, then guests booted through the daemon with the
# Python SDK; libvirtd started here if it is not running, and stopped again if it was started here); then the real
# clients (Python XenAPI SDK, Xen Orchestra's xen-api) against a freshly started daemon on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p xapi-server -p xe
cargo test --locked --workspace

# Real guests: libvirtd (no systemd needed), the tiny guest, the lifecycle suite.
libvirt_state="$PWD/target/libvirt-state"
tests/libvirt/start.sh "$libvirt_state"
stop_libvirt() { tests/libvirt/stop.sh "$libvirt_state" || true; }
trap stop_libvirt EXIT
guests_status=0
tests/guests/run.sh || guests_status=$?

# The real clients against a real daemon, in a data dir of its own, on free loopback ports: plain HTTP, and HTTPS
# with the certificate the daemon generates on its first start.
data_dir="$(mktemp -d)"
password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
tls_port="$(free_port)"
XAPI_ROOT_PASSWORD="$password" RUST_LOG=warn ./target/debug/xapi-server \
  --data-dir "$data_dir" --http "127.0.0.1:$port" --https "127.0.0.1:$tls_port" >"$data_dir/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$data_dir"
  stop_libvirt
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null; then
    break
  fi
  kill -0 "$daemon" 2>/dev/null || { cat "$data_dir/daemon.log"; echo "xapi-server exited"; exit 1; }
  sleep 0.1
done
status=0
tests/clients/run.sh "http://127.0.0.1:$port" root "$password" \
  "https://127.0.0.1:$tls_port" "$data_dir/xapi-ssl.pem" || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- daemon log"
  tail -n 50 "$data_dir/daemon.log"
fi
if [[ $guests_status -ne 0 ]]; then
  echo "the real-guest suite (tests/guests/run.sh) failed"
  status=1
fi
exit $status
