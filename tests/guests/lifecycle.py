#!/usr/bin/env python3
"""Real guests through the real Python XenAPI SDK: the VM lifecycle of xapi-server on libvirt/QEMU (TCG).

Usage: lifecycle.py --daemon PATH_TO_xapi-server --guest-dir target/tinyguest [--keep]

Starts its own xapi-server (a fresh data dir under <repo>/target/guest-tests/, a free loopback port,
--libvirt-uri qemu:///system --accel tcg and a --host-memory-reserve that leaves room for about four 128 MiB
guests), so that it can kill and restart it. The reservation is MemTotal (MiB, from /proc/meminfo) - 4 x 171 - 64;
if the daemon's host_metrics.memory_total (libvirt's figure) differs from /proc/meminfo's, the daemon is started
again with the reservation computed from its own figure. The consolidation check predicts how many guests fit
from the API alone (host.compute_free_memory, VM.compute_memory_overhead).

The guests are the tiny guest of tests/guest/build.sh (a kernel booted directly, an initramfs whose /init is
tests/guest/init); they talk to us through their serial console log, <data-dir>/run/consoles/<vm-uuid>.log, in
lines that start with TINYGUEST-.

Prints "PASS <check> (<seconds> s) [info]" or "FAIL <check>: <why>" per check and ends with
"RESULT passed=N failed=M"; exits 1 if anything failed. A failed check stops the rest of its scenario (a line
"# scenario ...: skipped ..." says so); the other scenarios still run. At the end every VM this script created is
hard-shut-down and destroyed, the daemon is stopped (by PID) and the data dir is removed (kept with --keep).
Needs libvirtd running (tests/libvirt/start.sh) and root (qemu:///system, virsh).
"""

import argparse
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import xmlrpc.client
from pathlib import Path

import XenAPI

REPO = Path(__file__).resolve().parents[2]
LIBVIRT_URI = "qemu:///system"
TEMPLATE = "Generic Linux (direct kernel boot)"
OTHER_TEMPLATE = "Other install media"
NULL_REF = "OpaqueRef:NULL"

MARK_UP = "TINYGUEST-MARKER: staying up"
MARK_ACPI = "TINYGUEST-MARKER: ACPI power button -> poweroff"
MARK_OFF = "TINYGUEST-MARKER: powering off"
BOOT_ID = re.compile(r"TINYGUEST-MARKER: boot-id=([0-9a-f-]+)")

GUEST_MIB = 128          # the template's memory
VM_OVERHEAD_MIB = 43     # the daemon's overhead for it today: used ONLY to size --host-memory-reserve
ROOM_FOR = 4             # guests that should fit
MARKER_TIMEOUT = 60.0    # a boot takes ~2.5 s under TCG
CALL_TIMEOUT = 120.0     # any XML-RPC call (clean_shutdown waits up to --clean-shutdown-timeout)
CLEAN_SHUTDOWN_TIMEOUT = 30
EVENT_LATENCY_MAX = 1.5  # "Halted within 1 s of the guest powering off", plus a margin
# The guest prints its 'staying up (acpid running)' marker right after it puts acpid in the background, before acpid
# has opened the power button's input device: an ACPI press that comes at once is lost (about 1 in 4 clean
# shutdowns time out). ACPI operations wait this long after the marker.
ACPI_SETTLE = 0.2

ARGS = "console=ttyS0 quiet panic=-1"


# ---------------------------------------------------------------------------------------------------------------
# checks


class CheckFailed(Exception):
    pass


class ScenarioAbort(Exception):
    pass


class Interrupted(BaseException):
    """SIGTERM (run.sh's timeout): not caught by the checks, so that the run goes straight to the cleanup."""


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: expected {want!r}, got {got!r}")


def expect_failure(fn, *args):
    """fn(*args) must raise XenAPI.Failure; returns its details."""
    try:
        result = fn(*args)
    except XenAPI.Failure as f:
        return f.details
    raise CheckFailed(f"expected a XenAPI.Failure, got success: {result!r}")


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.t0 = time.monotonic()

    def check(self, name, fn):
        """Runs one check; a failure ends the scenario it belongs to (ScenarioAbort)."""
        t = time.monotonic()
        try:
            info = fn()
        except CheckFailed as e:
            self._fail(name, str(e))
            raise ScenarioAbort(name)
        except ScenarioAbort:
            raise
        except Exception as e:
            detail = f"{type(e).__name__}: {e}"
            if not isinstance(e, (XenAPI.Failure, OSError, xmlrpc.client.Error, subprocess.SubprocessError)):
                detail += "\n" + "".join(traceback.format_exc().splitlines(True)[-6:])
            self._fail(name, detail)
            raise ScenarioAbort(name)
        self.passed += 1
        dt = time.monotonic() - t
        print(f"PASS {name} ({dt:.1f} s)" + (f" [{info}]" if info else ""), flush=True)
        return info

    def _fail(self, name, detail):
        self.failed += 1
        print(f"FAIL {name}: {detail}", flush=True)

    def scenario(self, title, fn):
        print(f"# --- {title}", flush=True)
        try:
            fn()
        except ScenarioAbort as a:
            print(f"# scenario '{title}': its remaining checks are skipped after '{a}' failed", flush=True)
        except Exception as e:  # a bug outside a check: count it
            self._fail(f"scenario '{title}'", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")


def info(msg):
    print(f"# {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# the daemon


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    # If this script is killed outright, its daemon goes with it (no orphan daemon holding the data dir).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Daemon:
    def __init__(self, binary, data_dir, password, reserve_mib):
        self.binary = str(Path(binary).resolve())
        self.data_dir = data_dir
        self.password = password
        self.reserve_mib = reserve_mib
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "daemon.log"
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            log.write(f"==== xapi-server start at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            env = dict(os.environ, XAPI_ROOT_PASSWORD=self.password)
            env.setdefault("RUST_LOG", "info")
            self.proc = subprocess.Popen(
                [self.binary, "--data-dir", str(self.data_dir), "--http", f"127.0.0.1:{self.port}",
                 "--libvirt-uri", LIBVIRT_URI, "--accel", "tcg",
                 "--host-memory-reserve", str(self.reserve_mib),
                 "--clean-shutdown-timeout", str(CLEAN_SHUTDOWN_TIMEOUT)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                # Its own session: a signal to our process group (timeout(1), Ctrl-C) does not stop it under the
                # cleanup's feet; it dies with this script all the same (PDEATHSIG).
                start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise CheckFailed(f"xapi-server exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise CheckFailed(f"xapi-server does not listen on {self.url} after 30 s; log:\n{self.log_tail()}")
            time.sleep(0.05)
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL, by PID; waits for it."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def stop(self):
        """SIGTERM (SIGKILL after 15 s), by PID."""
        if not self.alive():
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def log_tail(self, n=40):
        """The last n lines of the daemon's log, without colours and logins."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no daemon log)"
        lines = [l for l in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
                 if "classes::session: log" not in l]
        return "\n".join(lines[-n:])

    def login(self):
        s = XenAPI.Session(self.url)
        s.xenapi.login_with_password("root", self.password, "2.21", "xapi-rs-guest-tests")
        return s


# ---------------------------------------------------------------------------------------------------------------
# guests and their serial consoles


class ConsoleLog:
    """A VM's serial console log. libvirt rewrites the file for every new domain (append='off'), so "new" output is
    what follows the content seen at mark() if the file still starts with it, else the whole file."""

    def __init__(self, path):
        self.path = Path(path)
        self.seen = ""

    def read(self):
        try:
            return self.path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        self.seen = self.read()

    def new(self):
        text = self.read()
        if self.seen and text.startswith(self.seen):
            return text[len(self.seen):]
        return text

    def wait(self, needle, timeout=MARKER_TIMEOUT, pred=None):
        """Waits until `needle` is in the new output (and pred(new output) holds); returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            text = self.new()
            if needle in text and (pred is None or pred(text)):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                tail = "\n".join(text.splitlines()[-8:])
                raise CheckFailed(f"no {needle!r} in {self.path} within {timeout:.0f} s; last lines:\n{tail}")
            time.sleep(0.02)


def virsh(*args, timeout=30):
    return subprocess.run(["virsh", "-c", LIBVIRT_URI, *args], capture_output=True, text=True, timeout=timeout)


def running_domains():
    out = virsh("list", "--name")
    if out.returncode != 0:
        raise CheckFailed(f"virsh list failed: {out.stderr.strip()}")
    return [l.strip() for l in out.stdout.splitlines() if l.strip()]


class Ctx:
    def __init__(self, args, daemon, guest_dir):
        self.args = args
        self.daemon = daemon
        self.guest_dir = guest_dir
        self.session = None
        self.host = None
        self.template = None
        self.vms = {}  # ref -> uuid: every VM this script created
        self.vm1 = None  # the VM most scenarios use (scenario 1 creates it)

    @property
    def x(self):
        return self.session.xenapi

    def relogin(self):
        try:
            if self.session is not None:
                self.session.xenapi.session.logout()
        except Exception:
            pass
        self.session = self.daemon.login()

    def console(self, vm):
        return ConsoleLog(self.daemon.data_dir / "run" / "consoles" / f"{self.vms[vm]}.log")

    def new_vm(self, name, mode="stay"):
        x = self.x
        vm = x.VM.clone(self.template, name)
        self.vms[vm] = x.VM.get_uuid(vm)
        x.VM.provision(vm)
        x.VM.set_PV_kernel(vm, str(self.guest_dir / "vmlinux-pvh"))
        x.VM.set_PV_ramdisk(vm, str(self.guest_dir / "initramfs.cpio.gz"))
        x.VM.set_PV_args(vm, f"{ARGS} mode={mode}")
        return vm

    def power(self, vm):
        return self.x.VM.get_power_state(vm)

    def halt_all(self):
        """Hard-shuts-down every VM of ours that is not halted (between scenarios, and at the end)."""
        for vm in list(self.vms):
            try:
                if self.power(vm) != "Halted":
                    self.x.VM.hard_shutdown(vm)
            except Exception as e:
                info(f"could not hard_shutdown {vm}: {e}")


def expect_halted(x, vm):
    rec = x.VM.get_record(vm)
    expect_eq(rec["power_state"], "Halted", "power_state")
    expect_eq(rec["resident_on"], NULL_REF, "resident_on")
    expect_eq(int(rec["domid"]), -1, "domid")
    return rec


def clean_shutdown_seen(c, vm, log):
    """VM.clean_shutdown of a running guest: Halted, and the guest saw the ACPI power button."""
    log.mark()
    t = time.monotonic()
    c.x.VM.clean_shutdown(vm)
    dt = time.monotonic() - t
    expect_halted(c.x, vm)
    log.wait(MARK_ACPI, timeout=1)
    return f"VM.clean_shutdown took {dt:.2f} s"


def expect_running(c, vm, state="Running"):
    rec = c.x.VM.get_record(vm)
    expect_eq(rec["power_state"], state, "power_state")
    expect_eq(rec["resident_on"], c.host, "resident_on")
    expect(int(rec["domid"]) >= 1, f"domid should be >= 1, got {rec['domid']}")
    return rec


def hard_halt(c, vm):
    c.x.VM.hard_shutdown(vm)
    expect_halted(c.x, vm)


def start_and_wait_up(c, vm, log=None):
    """VM.start, then the guest's 'staying up' marker; returns (seconds for VM.start, seconds to the marker)."""
    log = log or c.console(vm)
    log.mark()
    t = time.monotonic()
    c.x.VM.start(vm, False, False)
    t_start = time.monotonic() - t
    expect_running(c, vm)
    t_up = log.wait(MARK_UP)
    time.sleep(ACPI_SETTLE)
    return t_start, t_start + t_up


# ---------------------------------------------------------------------------------------------------------------
# scenarios


def s1_templates_and_basic_lifecycle(r, c):
    st = {}

    def templates():
        found = []
        for name in (TEMPLATE, OTHER_TEMPLATE):
            refs = c.x.VM.get_by_name_label(name)
            expect(len(refs) == 1, f"expected one VM named {name!r}, found {refs}")
            expect(c.x.VM.get_is_a_template(refs[0]) is True, f"{name!r} is not a template")
            found.append(refs[0])
        c.template = found[0]
        return f"{TEMPLATE} = {found[0]}"
    r.check("templates 'Generic Linux (direct kernel boot)' and 'Other install media' exist and are templates",
            templates)

    def clone_provision():
        vm = c.new_vm("guest-test-1")
        expect(c.x.VM.get_is_a_template(vm) is False, "is_a_template is still true after VM.provision")
        expect_eq(c.power(vm), "Halted", "power_state of the new VM")
        expect_eq(c.x.VM.get_PV_args(vm), f"{ARGS} mode=stay", "PV_args")
        st["vm"] = c.vm1 = vm
        return f"{vm} uuid {c.vms[vm]}"
    r.check("VM.clone(template) + VM.provision -> a halted VM (is_a_template false); PV_kernel/ramdisk/args set",
            clone_provision)
    vm = st["vm"]
    log = c.console(vm)

    def start():
        log.mark()
        t = time.monotonic()
        c.x.VM.start(vm, False, False)
        st["t_start"] = time.monotonic()
        dt = st["t_start"] - t
        rec = expect_running(c, vm)
        start_time = c.x.VM_metrics.get_start_time(rec["metrics"])
        expect(not str(start_time).startswith("1970"), f"VM_metrics.start_time not set: {start_time}")
        consoles = rec["consoles"]
        expect(len(consoles) >= 1, "the running VM has no console")
        protos = [c.x.console.get_protocol(k) for k in consoles]
        expect("rfb" in protos, f"no rfb console (protocols {protos})")
        return f"VM.start took {dt:.2f} s, domid {rec['domid']}, start_time {start_time}"
    r.check("VM.start -> Running, resident_on the host, domid >= 1, start_time set, an rfb console", start)

    def booted():
        waited = log.wait(MARK_UP)
        time.sleep(ACPI_SETTLE)
        return f"marker {time.monotonic() - st['t_start']:.2f} s after VM.start returned (waited {waited:.2f} s)"
    r.check("the guest boots: 'TINYGUEST-MARKER: staying up' in its console log", booted)

    r.check("VM.clean_shutdown -> Halted, ACPI marker in the log, resident_on NULL, domid -1",
            lambda: clean_shutdown_seen(c, vm, log))


def s2_hard_shutdown(r, c):
    vm = c.vm1

    def hard():
        t_start, t_up = start_and_wait_up(c, vm)
        t = time.monotonic()
        c.x.VM.hard_shutdown(vm)
        dt = time.monotonic() - t
        expect_halted(c.x, vm)
        expect(f"xapi-{c.vms[vm]}" not in running_domains(), "libvirt still runs the domain")
        return f"up {t_up:.2f} s after start; VM.hard_shutdown took {dt:.2f} s"
    r.check("VM.hard_shutdown of a running VM -> Halted (and no domain left in libvirt)", hard)


def s3_clean_reboot(r, c):
    vm = c.vm1
    log = c.console(vm)
    st = {}

    def up():
        start_and_wait_up(c, vm, log)
        m = BOOT_ID.search(log.new())
        expect(m, "no boot-id marker in the log")
        st["boot_id"], st["domid"] = m.group(1), int(c.x.VM.get_domid(vm))
        return f"domid {st['domid']}, boot-id {st['boot_id']}"
    r.check("clean_reboot: a running guest to reboot", up)

    def reboot():
        log.mark()
        t = time.monotonic()
        c.x.VM.clean_reboot(vm)
        dt = time.monotonic() - t
        rec = expect_running(c, vm)
        domid = int(rec["domid"])
        expect(domid != st["domid"], f"domid did not change across the reboot ({domid})")

        def new_boot(text):
            ids = BOOT_ID.findall(text)
            return bool(ids) and ids[-1] != st["boot_id"] and text.rfind(MARK_UP) > text.rfind("boot-id=")
        t_up = log.wait(MARK_UP, pred=new_boot)
        return f"VM.clean_reboot took {dt:.2f} s, domid {st['domid']} -> {domid}, booted again {t_up:.2f} s later"
    r.check("VM.clean_reboot: stays Running, new domid, the guest boots again (new boot-id, 'staying up')", reboot)


def s4_suspend_resume(r, c):
    vm = c.vm1
    log = c.console(vm)

    def ensure_up():
        if c.power(vm) != "Running":
            start_and_wait_up(c, vm, log)
        else:
            ConsoleLog(log.path).wait(MARK_UP)  # the current boot's output
            time.sleep(ACPI_SETTLE)
    r.check("suspend: a running guest to suspend", ensure_up)

    def suspend():
        t = time.monotonic()
        c.x.VM.suspend(vm)
        dt = time.monotonic() - t
        rec = c.x.VM.get_record(vm)
        expect_eq(rec["power_state"], "Suspended", "power_state")
        expect_eq(rec["resident_on"], NULL_REF, "resident_on")
        expect_eq(int(rec["domid"]), -1, "domid")
        expect(f"xapi-{c.vms[vm]}" not in running_domains(), "libvirt still runs the domain")
        return f"VM.suspend took {dt:.2f} s"
    r.check("VM.suspend -> Suspended, resident_on NULL, no domain in libvirt", suspend)

    def resume():
        t = time.monotonic()
        c.x.VM.resume(vm, False, False)
        dt = time.monotonic() - t
        rec = expect_running(c, vm)
        return f"VM.resume took {dt:.2f} s, domid {rec['domid']}"
    r.check("VM.resume -> Running, resident_on the host", resume)

    r.check("the resumed guest is alive: VM.clean_shutdown -> Halted with its ACPI marker",
            lambda: clean_shutdown_seen(c, vm, log))


def s5_pause(r, c):
    vm = c.vm1
    log = c.console(vm)
    r.check("pause: a running guest to pause", lambda: start_and_wait_up(c, vm, log) and None)

    def pause():
        c.x.VM.pause(vm)
        expect_running(c, vm, "Paused")
        state = virsh("domstate", f"xapi-{c.vms[vm]}").stdout.strip()
        expect_eq(state, "paused", "virsh domstate")
    r.check("VM.pause -> Paused (resident_on the host; libvirt says paused)", pause)

    def unpause():
        c.x.VM.unpause(vm)
        expect_running(c, vm)
        state = virsh("domstate", f"xapi-{c.vms[vm]}").stdout.strip()
        expect_eq(state, "running", "virsh domstate")
    r.check("VM.unpause -> Running", unpause)

    r.check("the unpaused guest is alive: VM.clean_shutdown -> Halted with its ACPI marker",
            lambda: clean_shutdown_seen(c, vm, log))


def s11_console(r, c):
    vm = c.vm1
    st = {}

    def up():
        start_and_wait_up(c, vm)
        consoles = c.x.VM.get_consoles(vm)
        rfb = [k for k in consoles if c.x.console.get_protocol(k) == "rfb"]
        expect(rfb, f"no rfb console among {consoles}")
        st["uuid"] = c.x.console.get_uuid(rfb[0])
        loc = c.x.console.get_location(rfb[0])
        expect(f"/console?uuid={st['uuid']}" in loc, f"console location {loc!r}")
        return loc
    r.check("console: a running VM with an rfb console", up)

    def connect(query):
        with socket.create_connection(("127.0.0.1", c.daemon.port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(f"CONNECT /console?{query} HTTP/1.0\r\n\r\n".encode())
            buf = b""
            deadline = time.monotonic() + 10
            while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if status.split()[1:2] == ["200"]:
                while len(rest) < 12 and time.monotonic() < deadline:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    rest += chunk
            return status, rest

    def code(status):
        parts = status.split()
        return parts[1] if len(parts) > 1 and parts[0].startswith("HTTP/1.") else None

    def with_session():
        status, rest = connect(f"uuid={st['uuid']}&session_id={c.session.handle}")
        st["status"] = status
        expect_eq(code(status), "200", f"status code (status line {status!r})")
        expect(rest.startswith(b"RFB 003.00"), f"expected the RFB greeting, got {rest[:40]!r}")
        return f"{status!r}, then {rest[:12]!r}"
    r.check("CONNECT /console?uuid=..&session_id=.. HTTP/1.0 -> 200, then the VNC server's 'RFB 003.00' greeting",
            with_session)

    def without_session():
        status, _ = connect(f"uuid={st['uuid']}")
        expect_eq(code(status), "401", f"status code (status line {status!r})")
        status2, _ = connect(f"uuid={st['uuid']}&session_id=OpaqueRef:00000000-0000-0000-0000-000000000000")
        expect_eq(code(status2), "401", f"with a made-up session_id: status code (status line {status2!r})")
        return f"{status!r}; made-up session: {status2!r}"
    r.check("CONNECT /console without a (valid) session_id -> 401", without_session)

    def version():
        # xapi answers "HTTP/1.1 200 OK" whatever the request's version; Xen Orchestra sends HTTP/1.0.
        expect(st["status"].startswith("HTTP/1.1 200"),
               f"the answer to an HTTP/1.0 CONNECT is {st['status']!r}, not 'HTTP/1.1 200 OK' as xapi's")
        return st["status"]
    try:
        r.check("the console's answer to an HTTP/1.0 CONNECT starts 'HTTP/1.1 200' (as xapi's)", version)
    except ScenarioAbort:
        pass  # a wording detail: the VM is shut down below all the same

    r.check("console: VM.hard_shutdown", lambda: hard_halt(c, vm))


def s9_errors(r, c):
    vm = c.vm1

    def on_template():
        d = expect_failure(c.x.VM.start, c.template, False, False)
        expect_eq(d[:2], ["VM_IS_TEMPLATE", c.template], "error")
        return repr(d)
    r.check("VM.start on a template -> VM_IS_TEMPLATE [template]", on_template)

    r.check("errors: a running VM", lambda: start_and_wait_up(c, vm) and None)

    def start_running():
        d = expect_failure(c.x.VM.start, vm, False, False)
        expect_eq(d, ["VM_BAD_POWER_STATE", vm, "halted", "running"], "error")
        return repr(d)
    r.check("VM.start on a running VM -> VM_BAD_POWER_STATE [vm, 'halted', 'running']", start_running)

    def unpause_running():
        d = expect_failure(c.x.VM.unpause, vm)
        expect_eq(d, ["VM_BAD_POWER_STATE", vm, "paused", "running"], "error")
        expect_eq(c.power(vm), "Running", "power_state afterwards")
        return repr(d)
    r.check("VM.unpause on a running VM -> VM_BAD_POWER_STATE [vm, 'paused', 'running']", unpause_running)

    r.check("errors: VM.hard_shutdown", lambda: hard_halt(c, vm))

    def async_start():
        t = time.monotonic()
        task = c.x.Async.VM.start(vm, False, False)
        expect(task.startswith("OpaqueRef:") and task != NULL_REF, f"Async.VM.start returned {task!r}")
        deadline = time.monotonic() + 60
        while (status := c.x.task.get_status(task)) == "pending":
            expect(time.monotonic() < deadline, "the task is still pending after 60 s")
            time.sleep(0.05)
        dt = time.monotonic() - t
        err = c.x.task.get_error_info(task)
        expect_eq(status, "success", f"task status (error_info {err})")
        expect_eq(c.x.task.get_progress(task), 1.0, "task progress")
        c.x.task.destroy(task)
        expect_running(c, vm)
        c.x.VM.hard_shutdown(vm)
        return f"task succeeded after {dt:.2f} s"
    r.check("Async.VM.start returns a task that succeeds (VM Running)", async_start)


def s8_concurrency(r, c):
    vm = c.vm1

    def race():
        expect_eq(c.power(vm), "Halted", "power_state before")
        sessions = [c.daemon.login(), c.daemon.login()]
        barrier = threading.Barrier(2)
        results = [None, None]

        def worker(i):
            try:
                barrier.wait(timeout=10)
                t = time.monotonic()
                sessions[i].xenapi.VM.start(vm, False, False)
                results[i] = ("ok", time.monotonic() - t)
            except XenAPI.Failure as f:
                results[i] = ("failure", f.details)
            except Exception as e:
                results[i] = ("error", f"{type(e).__name__}: {e}")
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=CALL_TIMEOUT)
        for s in sessions:
            try:
                s.xenapi.session.logout()
            except Exception:
                pass
        expect(all(res is not None for res in results), f"a thread did not finish: {results}")
        oks = [res for res in results if res[0] == "ok"]
        fails = [res for res in results if res[0] == "failure"]
        expect(len(oks) == 1 and len(fails) == 1, f"expected exactly one success and one failure: {results}")
        code = fails[0][1][0]
        expect(code in ("OTHER_OPERATION_IN_PROGRESS", "VM_BAD_POWER_STATE"),
               f"the loser failed with {fails[0][1]}")
        expect_running(c, vm)
        names = running_domains()
        expect_eq(names.count(f"xapi-{c.vms[vm]}"), 1, "libvirt domains named after the VM")
        expect_eq(c.x.VM.get_current_operations(vm), {}, "current_operations afterwards")
        return f"winner started it in {oks[0][1]:.2f} s; loser: {fails[0][1]}"
    r.check("two sessions VM.start the same halted VM at once: one succeeds, the other gets "
            "OTHER_OPERATION_IN_PROGRESS or VM_BAD_POWER_STATE", race)
    r.check("concurrency: VM.hard_shutdown", lambda: hard_halt(c, vm))


def s6_self_poweroff(r, c):
    st = {}
    after = 3

    def make():
        vm = c.new_vm("guest-test-poweroff", mode=f"poweroff-after={after}")
        st["vm"] = vm
        st["log"] = c.console(vm)
        start_and_wait_up(c, vm, st["log"])
        return f"{vm}, mode=poweroff-after={after}"
    r.check(f"self power-off: a guest with mode=poweroff-after={after} is up", make)
    vm, log = st["vm"], st["log"]

    def by_event():
        x = c.x
        # The token of now: event.from with an empty token answers the current VM records and a token.
        token = getattr(x.event, "from")(["vm"], "", 0.0)["token"]
        seen = {}
        stop = threading.Event()

        def watch_log():
            while not stop.is_set():
                if MARK_OFF in log.new():
                    seen["marker"] = time.monotonic()
                    return
                time.sleep(0.005)
        watcher = threading.Thread(target=watch_log, daemon=True)
        watcher.start()
        deadline = time.monotonic() + after + 30
        t_halted = None
        states = []
        try:
            while t_halted is None:
                expect(time.monotonic() < deadline, f"no Halted event within {after + 30} s (saw {states})")
                res = getattr(x.event, "from")(["vm"], token, 30.0)
                now = time.monotonic()
                token = res["token"]
                for ev in res["events"]:
                    if ev.get("ref") == vm and ev.get("operation") == "mod":
                        ps = ev.get("snapshot", {}).get("power_state")
                        states.append(ps)
                        if ps == "Halted":
                            t_halted = now
        finally:
            watcher.join(timeout=2)
            stop.set()
        expect("marker" in seen, f"the event came but no {MARK_OFF!r} in the log")
        latency = t_halted - seen["marker"]
        info(f"self power-off: Halted by event.from {latency * 1000:.0f} ms after the 'powering off' marker")
        expect(latency <= EVENT_LATENCY_MAX,
               f"Halted came {latency:.2f} s after the 'powering off' marker (at most {EVENT_LATENCY_MAX} s)")
        expect(latency > -0.1, f"Halted came {-latency:.2f} s BEFORE the 'powering off' marker")
        expect_halted(x, vm)
        expect(f"xapi-{c.vms[vm]}" not in running_domains(), "libvirt still runs the domain")
        return f"latency {latency * 1000:.0f} ms (power states seen by event: {states})"
    r.check(f"a guest that powers itself off is Halted by event.from(['vm'], token, 30.0) within "
            f"{EVENT_LATENCY_MAX} s of its 'powering off' marker", by_event)


def s7_restart(r, c):
    vm = c.vm1
    dom = f"xapi-{c.vms[vm]}"
    st = {}

    def up():
        start_and_wait_up(c, vm)
        st["domid"] = int(c.x.VM.get_domid(vm))
        return f"domid {st['domid']}"
    r.check("restart: a running guest", up)

    def kill_restart():
        old = c.daemon.proc.pid
        c.daemon.kill()
        t = time.monotonic()
        new = c.daemon.start()
        c.relogin()
        dt = time.monotonic() - t
        rec = expect_running(c, vm)
        expect_eq(int(rec["domid"]), st["domid"], "domid after the restart")
        names = running_domains()
        expect_eq(names.count(dom), 1, f"libvirt domains named {dom}")
        others = [f"xapi-{u}" for r_, u in c.vms.items() if r_ != vm and f"xapi-{u}" in names]
        expect(not others, f"other VMs of ours run: {others}")
        expect(vm in c.x.host.get_resident_VMs(c.host), "the VM is not in host.resident_VMs")
        return f"SIGKILL pid {old}, new pid {new} answering after {dt:.2f} s; domid {rec['domid']}; {dom} runs once"
    r.check("SIGKILL the daemon, start it again on the same data dir: the VM is still Running with the same domid,"
            " started once", kill_restart)

    def alive_after():
        c.console(vm).wait(MARK_UP)  # the guest still runs (this boot's output)
        allowed = c.x.VM.get_allowed_operations(vm)
        expect("clean_shutdown" in allowed, f"clean_shutdown not in allowed_operations {allowed}")
        expect_eq(c.x.VM.get_current_operations(vm), {}, "current_operations")
    r.check("after the restart the VM's operations are allowed again (clean_shutdown allowed, none current)",
            alive_after)

    def destroyed_while_down():
        c.daemon.kill()
        out = virsh("destroy", dom)
        expect(out.returncode == 0, f"virsh destroy {dom}: {out.stderr.strip()}")
        c.daemon.start()
        c.relogin()
        rec = expect_halted(c.x, vm)
        expect(vm not in c.x.host.get_resident_VMs(c.host), "the VM is still in host.resident_VMs")
        expect_eq(rec["current_operations"], {}, "current_operations")
        expect("start" in rec["allowed_operations"], f"start not allowed: {rec['allowed_operations']}")
        return "Halted"
    r.check("SIGKILL the daemon, virsh destroy the domain while it is down, restart: the VM is Halted",
            destroyed_while_down)


def s10_consolidation(r, c):
    st = {"vms": []}

    def plan():
        x = c.x
        running = [v for v in c.vms if c.power(v) != "Halted"]
        expect(not running, f"VMs of ours still running: {running}")
        probe = c.new_vm("guest-test-mem-0")
        st["vms"].append(probe)
        free = int(x.host.compute_free_memory(c.host))
        need = int(x.VM.get_memory_static_max(probe)) + int(x.VM.compute_memory_overhead(probe))
        predicted = free // need
        st.update(free=free, need=need, predicted=predicted)
        expect(predicted >= 2, f"only {predicted} guest(s) of {need} bytes fit in {free} bytes free: "
                               f"the test means nothing")
        for i in range(1, min(predicted + 1, 12)):
            st["vms"].append(c.new_vm(f"guest-test-mem-{i}"))
        mib = 1 << 20
        return (f"free {free} ({free / mib:.1f} MiB), need {need} ({need / mib:.0f} MiB) per guest -> "
                f"{predicted} predicted; {len(st['vms'])} VMs created")
    r.check("consolidation: host.compute_free_memory // (memory_static_max + VM.compute_memory_overhead) >= 2", plan)

    def fill():
        x = c.x
        free, need, predicted = st["free"], st["need"], st["predicted"]
        metrics = x.host.get_metrics(c.host)
        started = 0
        refusal = None
        for vm in st["vms"]:
            try:
                x.VM.start(vm, False, False)
            except XenAPI.Failure as f:
                refusal = (vm, f.details)
                break
            started += 1
            computed = int(x.host.compute_free_memory(c.host))
            shown = int(x.host_metrics.get_memory_free(metrics))
            expect_eq(computed, free - started * need, f"host.compute_free_memory after {started} start(s)")
            expect_eq(shown, computed, f"host_metrics.memory_free after {started} start(s)")
        expect(refusal is not None, f"all {started} VMs started; expected a refusal after {predicted}")
        vm, d = refusal
        expect_eq(started, predicted, "VMs started before the refusal")
        expect_eq(d, ["HOST_NOT_ENOUGH_FREE_MEMORY", str(need), str(free - predicted * need)], "refusal")
        expect_halted(x, vm)
        expect_eq(x.VM.get_current_operations(vm), {}, "current_operations of the refused VM")
        expect_eq(int(x.host_metrics.get_memory_free(metrics)), free - predicted * need,
                  "host_metrics.memory_free after the refusal")
        return f"{started} started, then {d}"
    r.check("start them one by one: exactly the predicted number start, then HOST_NOT_ENOUGH_FREE_MEMORY "
            "[need, free left]; memory_free = compute_free_memory = free - k*need after each", fill)

    def guests_up():
        running = [v for v in st["vms"] if c.power(v) == "Running"]
        for v in running:
            ConsoleLog(c.console(v).path).wait(MARK_UP)
        return f"{len(running)} guests up"
    r.check("consolidation: every started guest boots", guests_up)

    def release():
        x = c.x
        for v in st["vms"]:
            if c.power(v) != "Halted":
                x.VM.hard_shutdown(v)
        expect_eq(int(x.host.compute_free_memory(c.host)), st["free"], "host.compute_free_memory after")
        metrics = x.host.get_metrics(c.host)
        expect_eq(int(x.host_metrics.get_memory_free(metrics)), st["free"], "host_metrics.memory_free after")
    r.check("consolidation: hard_shutdown all gives all the memory back", release)


# ---------------------------------------------------------------------------------------------------------------


def mem_total_mib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def cleanup(c, keep):
    """Every VM of ours halted and destroyed, the daemon stopped by PID, the data dir removed (unless keep)."""
    d = c.daemon
    if c.vms:
        if not d.alive():
            try:
                d.start()
            except Exception as e:
                info(f"cleanup: could not start the daemon again: {e}")
        if d.alive():
            try:
                c.relogin()
                for vm in list(c.vms):
                    try:
                        if c.power(vm) != "Halted":
                            c.x.VM.hard_shutdown(vm)
                        c.x.VM.destroy(vm)
                    except Exception as e:
                        info(f"cleanup: {vm}: {e}")
                c.x.session.logout()
            except Exception as e:
                info(f"cleanup: {e}")
        # Whatever the daemon could not take down.
        try:
            names = running_domains()
            for uuid in c.vms.values():
                if f"xapi-{uuid}" in names:
                    info(f"cleanup: virsh destroy xapi-{uuid}")
                    virsh("destroy", f"xapi-{uuid}")
        except Exception as e:
            info(f"cleanup: {e}")
    d.stop()
    if keep:
        info(f"kept {d.data_dir} (daemon log: {d.log_path})")
    else:
        shutil.rmtree(d.data_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemon", required=True, help="the xapi-server binary")
    ap.add_argument("--guest-dir", required=True, help="tests/guest/build.sh's output (vmlinux-pvh, initramfs)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (store, daemon.log, console logs)")
    args = ap.parse_args()

    # run.sh's timeout sends SIGTERM: clean up on the way out.
    def on_term(*_):
        raise Interrupted()
    signal.signal(signal.SIGTERM, on_term)
    socket.setdefaulttimeout(CALL_TIMEOUT)
    guest_dir = Path(args.guest_dir).resolve()
    for f in ("vmlinux-pvh", "initramfs.cpio.gz"):
        if not (guest_dir / f).is_file():
            print(f"FAIL setup: no {guest_dir / f} (run tests/guest/build.sh)")
            print("RESULT passed=0 failed=1")
            return 1

    total = mem_total_mib()
    reserve = total - ROOM_FOR * (GUEST_MIB + VM_OVERHEAD_MIB) - 64
    root = REPO / "target" / "guest-tests"
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / secrets.token_hex(6)
    data_dir.mkdir(mode=0o700)
    daemon = Daemon(args.daemon, data_dir, secrets.token_urlsafe(18), reserve)
    info(f"data dir {data_dir}; host memory {total} MiB, --host-memory-reserve {reserve} MiB; {daemon.url}")

    r = Runner()
    c = Ctx(args, daemon, guest_dir)
    try:
        def start_daemon():
            pid = daemon.start()
            c.relogin()
            c.host = c.x.host.get_all()[0]
            # The reservation is meant to leave room for ROOM_FOR guests of the memory the daemon counts with. Its
            # host_metrics.memory_total comes from libvirt (virNodeGetInfo) once connected, which on some machines
            # (e.g. memory hot-plugged outside NUMA node 0) is less than /proc/meminfo's MemTotal: then size the
            # reservation from the daemon's figure and start it again.
            api_total = int(c.x.host_metrics.get_memory_total(c.x.host.get_metrics(c.host))) >> 20
            if api_total != total:
                info(f"host_metrics.memory_total is {api_total} MiB but /proc/meminfo says {total} MiB: "
                     f"restarting the daemon with a reservation computed from {api_total} MiB")
                daemon.reserve_mib = api_total - ROOM_FOR * (GUEST_MIB + VM_OVERHEAD_MIB) - 64
                daemon.stop()
                pid = daemon.start()
                c.relogin()
            return (f"pid {pid}, {daemon.url}, host {c.host}, memory_total {api_total} MiB, "
                    f"--host-memory-reserve {daemon.reserve_mib} MiB")
        ok = True
        try:
            r.check("xapi-server starts (--libvirt-uri qemu:///system --accel tcg) and root logs in", start_daemon)
        except ScenarioAbort:
            ok = False
        if ok:
            r.scenario("1 templates, clone, provision, start, clean_shutdown",
                       lambda: s1_templates_and_basic_lifecycle(r, c))
            if c.vm1 is None:
                info("no VM to go on with: the other scenarios are skipped")
            else:
                scenarios = [
                    ("2 hard_shutdown", s2_hard_shutdown),
                    ("3 clean_reboot", s3_clean_reboot),
                    ("4 suspend / resume", s4_suspend_resume),
                    ("5 pause / unpause", s5_pause),
                    ("11 console", s11_console),
                    ("9 errors and Async", s9_errors),
                    ("8 concurrent starts", s8_concurrency),
                    ("6 a guest that powers itself off", s6_self_poweroff),
                    ("7 daemon restart", s7_restart),
                    ("10 consolidation", s10_consolidation),
                ]
                for title, fn in scenarios:
                    if not daemon.alive():
                        try:
                            daemon.start()
                            c.relogin()
                        except Exception as e:
                            r._fail(f"restart the daemon before scenario {title}", str(e))
                            break
                    r.scenario(title, lambda fn=fn: fn(r, c))
                    c.halt_all()
    except (Interrupted, KeyboardInterrupt) as e:
        r._fail("interrupted", "SIGTERM" if isinstance(e, Interrupted) else "Ctrl-C")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        if r.failed:
            info("daemon log (last 40 lines):")
            for line in daemon.log_tail().splitlines():
                print(f"#   {line}")
        cleanup(c, args.keep)
        elapsed = time.monotonic() - r.t0
        print(f"guests: {r.passed} checks passed, {r.failed} failed, {elapsed:.0f} s", flush=True)
        print(f"RESULT passed={r.passed} failed={r.failed}", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
