#!/usr/bin/env python3
"""Drive a disk import with a task, as a XenAPI client does: the real Python XenAPI SDK
(PyPI "XenAPI", pinned in requirements.txt) for the API calls, stdlib http.client for
PUT /import_raw_vdi and GET /export_raw_vdi (docs/import-export.md).

Usage: py_import.py URL USER PASSWORD      e.g. py_import.py http://127.0.0.1:8080 root secret

Prints one line per check ("ok   ..." / "FAIL ..."), then a closing line
"RESULT passed=N failed=M" that run.sh reads. Exits 1 if any check failed.
A failed check that later checks depend on (login, the default SR, the VDI, the
first import) stops the run. The VDI and the tasks it makes are destroyed, also
after a failure.

Checks: a raw import without a task (and the raw export of it); an import with a
task, sent slowly, whose progress moves while the task stays pending, and which
ends in success with the VDI's ref as its result; a cancelled import, a
truncated upload and (both with tasks) that leave the VDI unchanged; a chunked
upload; bad input answered with the XenAPI error and the right HTTP status.
"""

import http.client
import random
import socket
import ssl
import sys
import time
import traceback
import urllib.parse
import xmlrpc.client

import XenAPI

MiB = 1 << 20
SIZE = 64 * MiB  # the VDI's virtual size; every content below is this long
PIECE = 4 * MiB  # a slow upload sends the content in SIZE / PIECE pieces...
PAUSE_S = 0.35  # ...with this pause after each (the server records progress at most every 200 ms)
CALL_TIMEOUT_S = 30  # xmlrpc.client has no timeout of its own: a hung server would hang us
HTTP_TIMEOUT_S = 30  # every socket of ours has a timeout: no check can hang
FINISH_TIMEOUT_S = 20  # how long a task may take to leave pending/cancelling once its upload ended


class CheckFailed(Exception):
    pass


class Abort(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: expected {want!r}, got {got!r}")


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn, fatal=False):
        try:
            info = fn()
        except CheckFailed as e:
            self._fail(name, str(e), fatal)
            return None
        except Exception as e:  # the client blew up: that is a failure too
            detail = f"{type(e).__name__}: {e}"
            if not isinstance(e, (XenAPI.Failure, OSError, xmlrpc.client.Error, http.client.HTTPException)):
                detail += "\n" + "".join(traceback.format_exc().splitlines(True)[-6:])
            self._fail(name, detail, fatal)
            return None
        self.passed += 1
        print(f"ok   {name}" + (f"  [{info}]" if isinstance(info, str) and info else ""), flush=True)
        return info

    def _fail(self, name, detail, fatal):
        self.failed += 1
        print(f"FAIL {name}: {detail}", flush=True)
        if fatal:
            raise Abort(name)


# ---- contents ----------------------------------------------------------------

def content(seed):
    """SIZE deterministic bytes: pseudo-random data with all-zero regions whose places depend
    on the seed: whole MiBs (every 5th, from seed % 5), an unaligned run of 200000 bytes, a
    64 KiB-aligned run of 64 KiB, and the last 2 MiB."""
    rng = random.Random(seed)
    buf = bytearray(rng.randbytes(SIZE))
    for i in range(seed % 5, SIZE // MiB, 5):
        buf[i * MiB:(i + 1) * MiB] = bytes(MiB)
    start = 7 * MiB + 12345 + seed * 4099
    buf[start:start + 200000] = bytes(200000)
    start = 40 * MiB + (seed % 8) * 65536
    buf[start:start + 65536] = bytes(65536)
    buf[SIZE - 2 * MiB:] = bytes(2 * MiB)
    return bytes(buf)


def first_difference(got, want):
    if len(got) != len(want):
        return f"length {len(got)}, expected {len(want)}"
    for off in range(0, len(want), MiB):
        if got[off:off + MiB] != want[off:off + MiB]:
            for i in range(off, min(off + MiB, len(want))):
                if got[i] != want[i]:
                    return f"first difference at byte {i} (got {got[i]:#04x}, expected {want[i]:#04x})"
    return "identical"


# ---- HTTP ----------------------------------------------------------------------

class Http:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)

    def conn(self):
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S,
                                               context=ssl._create_unverified_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)


def path(handler, session_id, vdi, task=None, fmt="raw"):
    q = {"session_id": session_id, "vdi": vdi, "format": fmt}
    if task is not None:
        q["task_id"] = task
    return f"/{handler}?{urllib.parse.urlencode(q)}"


def put(h, p, body):
    """PUT body (bytes, with its Content-Length); returns (status, body text)."""
    c = h.conn()
    try:
        c.request("PUT", p, body=body, headers={"Content-Type": "application/octet-stream"})
        resp = c.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        c.close()


def export_raw(h, session_id, vdi):
    c = h.conn()
    try:
        c.request("GET", path("export_raw_vdi", session_id, vdi))
        resp = c.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise CheckFailed(f"export: HTTP {resp.status} {data[:200]!r}")
        expect_eq(resp.getheader("Content-Length"), str(SIZE), "export Content-Length")
        return data
    finally:
        c.close()


def expect_export(h, session_id, vdi, want, what):
    got = export_raw(h, session_id, vdi)
    if got != want:
        raise CheckFailed(f"export differs from {what}: {first_difference(got, want)}")


def start_put(h, p, length):
    """A PUT whose headers are sent (Content-Length: length) and whose body the caller sends."""
    c = h.conn()
    c.putrequest("PUT", p, skip_accept_encoding=True)
    c.putheader("Content-Type", "application/octet-stream")
    c.putheader("Content-Length", str(length))
    c.endheaders()
    return c


# ---- tasks ---------------------------------------------------------------------

def task_state(x, task):
    return x.task.get_status(task), float(x.task.get_progress(task))


def wait_finished(x, task, timeout=FINISH_TIMEOUT_S):
    """Polls until the task is neither pending nor cancelling; returns its record."""
    deadline = time.monotonic() + timeout
    while True:
        rec = x.task.get_record(task)
        if rec["status"] not in ("pending", "cancelling"):
            return rec
        if time.monotonic() > deadline:
            raise CheckFailed(f"task still {rec['status']} {timeout}s after its upload ended "
                              f"(progress {rec['progress']})")
        time.sleep(0.1)


# ---- the checks ----------------------------------------------------------------

def main(url, user, password):
    socket.setdefaulttimeout(CALL_TIMEOUT_S)
    r = Runner()
    st = {"tasks": [], "vdis": []}  # state shared between checks; what cleanup destroys
    try:
        run_checks(r, st, url, user, password)
    except Abort as a:
        print(f"FAIL aborting: later checks depend on '{a}'", flush=True)
    finally:
        cleanup(st)

    print(f"py_import: {r.passed} checks ok, {r.failed} checks failed", flush=True)
    print(f"RESULT passed={r.passed} failed={r.failed}", flush=True)
    return 1 if r.failed else 0


def new_task(st, x, label):
    t = x.task.create(label, "py_import.py")
    st["tasks"].append(t)
    return t


def drop_task(st, x, t):
    """Destroys task t now (cleanup destroys it later if this fails)."""
    try:
        x.task.destroy(t)
        st["tasks"].remove(t)
    except Exception as e:  # noqa: BLE001
        print(f"warn task.destroy {t}: {e}", flush=True)


def run_checks(r, st, url, user, password):
    h = Http(url)
    # What the VDI holds: a new VDI reads as zeros; an import answered 200 replaced it.
    st["expected"], st["expected_name"] = bytes(SIZE), "zeros (a new VDI)"

    def login():
        s = XenAPI.Session(url)
        s.xenapi.login_with_password(user, password, "2.21", "xapi-rs-py-import")
        st["session"] = s
        return s._session
    r.check("login_with_password", login, fatal=True)
    s = st["session"]
    x = s.xenapi
    sid = s._session

    def default_sr():
        pool = x.pool.get_all()[0]
        sr = x.pool.get_default_SR(pool)
        expect(sr.startswith("OpaqueRef:") and sr != "OpaqueRef:NULL",
               f"pool.get_default_SR: {sr!r} (the daemon makes 'Local storage' on first start)")
        rec = x.SR.get_record(sr)
        st["sr"] = sr
        return f"{sr} {rec['name_label']!r} type {rec['type']}"
    r.check("pool.get_default_SR: an SR", default_sr, fatal=True)

    def create_vdi():
        vdi = x.VDI.create({
            "name_label": "py_import test disk", "name_description": "made by tests/clients/py_import.py",
            "SR": st["sr"], "virtual_size": str(SIZE), "type": "user", "sharable": False,
            "read_only": False, "other_config": {}, "xenstore_data": {}, "sm_config": {}, "tags": [],
        })
        st["vdis"].append(vdi)
        st["vdi"] = vdi
        expect_eq(x.VDI.get_virtual_size(vdi), str(SIZE), "virtual_size")
        return vdi
    r.check("VDI.create(64 MiB on the default SR)", create_vdi, fatal=True)
    vdi = st["vdi"]

    # ---- 1. a plain raw import, no task --------------------------------------------------
    def plain_import():
        a = content(1)
        t0 = time.monotonic()
        status, body = put(h, path("import_raw_vdi", sid, vdi), a)
        took = time.monotonic() - t0
        expect_eq((status, body), (200, ""), "import HTTP status and body")
        st["expected"], st["expected_name"] = a, "A"
        expect_export(h, sid, vdi, a, "A")
        return f"64 MiB in {took:.2f}s"
    r.check("1. PUT /import_raw_vdi format=raw, no task (content A); export raw = A", plain_import)

    # ---- 2. with a task: progress moves, the result arrives ------------------------------
    def progress_and_result():
        b = content(2)
        task = new_task(st, x, "import")
        c = start_put(h, path("import_raw_vdi", sid, vdi, task), SIZE)
        seen = []
        try:
            # Between pieces: once the last one is sent the import may well be finished.
            for off in range(0, SIZE, PIECE):
                c.send(b[off:off + PIECE])
                if off + PIECE == SIZE:
                    break
                time.sleep(PAUSE_S)
                status, progress = task_state(x, task)
                seen.append(progress)
                expect_eq(status, "pending", f"task status after {(off + PIECE) // MiB} MiB")
                expect(0.0 <= progress <= 1.0, f"progress {progress} out of [0, 1]")
            resp = c.getresponse()
            rbody = resp.read().decode("utf-8", "replace")
        finally:
            c.close()
        expect_eq((resp.status, rbody), (200, ""), "import HTTP status and body")
        st["expected"], st["expected_name"] = b, "B"
        decreases = [(a, b2) for a, b2 in zip(seen, seen[1:]) if b2 < a]
        expect(not decreases, f"progress went down: {decreases} (all: {seen})")
        increases = sum(1 for a, b2 in zip([0.0] + seen, seen) if b2 > a)
        expect(increases >= 2, f"progress increased only {increases} times between pieces: {seen}")
        rec = x.task.get_record(task)
        expect_eq(rec["status"], "success", "task status after the 200")
        expect_eq(float(rec["progress"]), 1.0, "task progress after the 200")
        result = x.task.get_result(task)
        expect(vdi in result, f"task.get_result {result!r} should contain the VDI's ref {vdi}")
        expect_eq(result, f"<value>{vdi}</value>", "task.get_result (an XML-RPC value of the ref)")
        expect_eq(rec["error_info"], [], "error_info")
        drop_task(st, x, task)
        expect_export(h, sid, vdi, b, "B")
        return f"progress between pieces: {', '.join(f'{p:.2f}' for p in seen)}; result {result}"
    r.check("2. import with task_id, sent slowly (16 x 4 MiB): pending, progress rises in [0,1]; "
            "then success, progress 1, result = VDI ref; export = B", progress_and_result)

    def expect_unchanged():
        expect_export(h, sid, vdi, st["expected"], f"{st['expected_name']} (the VDI must be unchanged)")

    # ---- 3. a cancelled import leaves the VDI unchanged ----------------------------------
    def cancelled():
        cc = content(3)
        task = new_task(st, x, "import")
        c = start_put(h, path("import_raw_vdi", sid, vdi, task), SIZE)
        sent, cancelled_at, stopped, answer = 0, None, None, None
        try:
            for off in range(0, SIZE, PIECE):
                if off == 3 * PIECE:
                    expect_eq(x.task.get_status(task), "pending", "task status before cancel")
                    x.task.cancel(task)
                    cancelled_at = sent
                    expect(x.task.get_status(task) in ("cancelling", "cancelled"),
                           f"status right after task.cancel: {x.task.get_status(task)!r}")
                try:
                    c.send(cc[off:off + PIECE])
                except (BrokenPipeError, ConnectionResetError) as e:
                    stopped = f"{type(e).__name__} after {sent // MiB} MiB"
                    break
                sent += PIECE
                time.sleep(PAUSE_S / 2)
            try:
                resp = c.getresponse()
                answer = f"HTTP {resp.status} {resp.read().decode('utf-8', 'replace').strip()!r}"
                expect(resp.status != 200, f"the cancelled import was answered {answer}")
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as e:
                answer = f"no answer ({type(e).__name__})"
        finally:
            c.close()
        rec = wait_finished(x, task)
        expect_eq(rec["status"], "cancelled", f"task status (error_info {rec['error_info']})")
        drop_task(st, x, task)
        expect_unchanged()
        return (f"cancelled after {cancelled_at // MiB} MiB; sending stopped: {stopped or 'no, all sent'}; "
                f"{answer}; error_info {rec['error_info']}")
    r.check("3. task.cancel during a slow import: task cancelled; export = B (unchanged)", cancelled)

    # ---- 4. a truncated upload fails the task, the VDI unchanged -------------------------
    def truncated():
        cc = content(4)
        task = new_task(st, x, "import")
        c = start_put(h, path("import_raw_vdi", sid, vdi, task), SIZE)
        try:
            for off in range(0, 10 * MiB, MiB):
                c.send(cc[off:off + MiB])
        finally:
            c.close()
        rec = wait_finished(x, task)
        expect_eq(rec["status"], "failure", "task status")
        err = rec["error_info"]
        expect(isinstance(err, list) and err, f"error_info should be a non-empty list, got {err!r}")
        expect_eq(err[0], "VDI_IO_ERROR", f"error_info[0] (error_info {err})")
        drop_task(st, x, task)
        expect_unchanged()
        return f"error_info {err}"
    r.check("4. Content-Length 64 MiB, 10 MiB sent, socket closed: task failure (VDI_IO_ERROR); export = B",
            truncated)

    # ---- 5. a chunked upload -------------------------------------------------------------
    def chunked():
        d = content(5)
        task = new_task(st, x, "import")
        step = MiB + 7  # chunks that do not fall on the server's 1 MiB pieces

        def chunks():
            for off in range(0, SIZE, step):
                yield d[off:off + step]

        c = h.conn()
        try:
            c.request("PUT", path("import_raw_vdi", sid, vdi, task), body=chunks(),
                      headers={"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
                      encode_chunked=True)
            resp = c.getresponse()
            rbody = resp.read().decode("utf-8", "replace")
        finally:
            c.close()
        expect_eq((resp.status, rbody), (200, ""), "import HTTP status and body")
        st["expected"], st["expected_name"] = d, "D"
        rec = x.task.get_record(task)
        expect_eq(rec["status"], "success", f"task status (error_info {rec['error_info']})")
        expect_eq(float(rec["progress"]), 1.0, "task progress")
        expect_eq(x.task.get_result(task), f"<value>{vdi}</value>", "task.get_result")
        drop_task(st, x, task)
        expect_export(h, sid, vdi, d, "D")
    r.check("5. chunked upload (Transfer-Encoding: chunked) with a task: success; export = D", chunked)

    # ---- 6. bad input answered with the XenAPI error -------------------------------------
    # Empty bodies: an answer sent before the body is read would otherwise race the upload.
    def bad_format():
        status, body = put(h, path("import_raw_vdi", sid, vdi, fmt="qcow9"), b"")
        expect_eq(status, 400, f"HTTP status (body {body!r})")
        expect(body.startswith("IMPORT_ERROR"), f"body should start with IMPORT_ERROR: {body!r}")
        return body.strip()
    r.check("6a. format=qcow9 -> 400 IMPORT_ERROR", bad_format)

    def bad_vdi():
        status, body = put(h, path("import_raw_vdi", sid, "OpaqueRef:no-such-vdi"), b"")
        expect_eq(status, 404, f"HTTP status (body {body!r})")
        expect(body.startswith("HANDLE_INVALID"), f"body should start with HANDLE_INVALID: {body!r}")
        return body.strip()
    r.check("6b. an unknown vdi -> 404 HANDLE_INVALID", bad_vdi)

    def bad_session():
        status, body = put(h, path("import_raw_vdi", "OpaqueRef:bogus-session", vdi), b"")
        expect_eq(status, 401, f"HTTP status (body {body!r})")
        return body.strip()
    r.check("6c. a bad session -> 401", bad_session)

    r.check("6d. the refused requests left the VDI as it was", expect_unchanged)


def cleanup(st):
    """Destroys the tasks and the VDIs this run made, then logs out."""
    s = st.get("session")
    if s is None:
        return
    x = s.xenapi
    for t in list(st["tasks"]):
        try:
            x.task.destroy(t)
        except Exception as e:  # noqa: BLE001
            print(f"warn cleanup task.destroy {t}: {e}", flush=True)
    for v in st["vdis"]:
        for attempt in range(50):  # an import that is still ending holds the VDI a moment
            try:
                x.VDI.destroy(v)
                break
            except Exception as e:  # noqa: BLE001
                if attempt == 49:
                    print(f"warn cleanup VDI.destroy {v}: {e}", flush=True)
                time.sleep(0.2)
    try:
        s.xenapi.session.logout()
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
