#!/usr/bin/env python3
"""Drive xapi-server with the real Python XenAPI SDK (PyPI "XenAPI", pinned in
requirements.txt).

Usage: py_sdk.py URL USER PASSWORD      e.g. py_sdk.py http://127.0.0.1:8080 root secret

An https:// URL is spoken to as an administrator's script usually does with a
self-signed host certificate: Session(url, ignore_ssl=True).

Prints one line per check ("ok   ..." / "FAIL ..."), then a closing line
"RESULT passed=N failed=M" that run.sh reads. Exits 1 if any check failed.
A failed check that later checks depend on (login, the pool, dom0) stops the
run. The script restores every value it changes.

The SDK speaks XML-RPC only (xmlrpc.client); with no path in URL it posts to
/RPC2. int64 values arrive as strings, booleans as bool.
"""

import socket
import ssl
import sys
import traceback
import xmlrpc.client

import XenAPI

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
TEST_KEY = "xapi-rs-client-test"
TEST_TAG = "xapi-rs-client-test-tag"
CALL_TIMEOUT_S = 30  # xmlrpc.client has no timeout of its own: a hung server would hang us


class CheckFailed(Exception):
    pass


class Abort(Exception):
    pass


def new_session(url):
    """A SDK session; over https, without checking the certificate (ignore_ssl)."""
    return XenAPI.Session(url, ignore_ssl=url.startswith("https:"))


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: expected {want!r}, got {got!r}")


def expect_failure(fn, *args):
    """Call fn(*args); it must raise XenAPI.Failure. Returns its details."""
    try:
        result = fn(*args)
    except XenAPI.Failure as f:
        expect(isinstance(f.details, list) and f.details,
               f"Failure.details should be a non-empty list, got {f.details!r}")
        return f.details
    raise CheckFailed(f"expected XenAPI.Failure, got success: {result!r}")


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
            if not isinstance(e, (XenAPI.Failure, OSError, xmlrpc.client.Error)):
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


def main(url, user, password):
    socket.setdefaulttimeout(CALL_TIMEOUT_S)
    r = Runner()
    st = {}  # state shared between checks
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    raw = xmlrpc.client.ServerProxy(url, allow_none=True, context=context)

    try:
        run_checks(r, st, url, user, password, raw)
    except Abort as a:
        print(f"FAIL aborting: later checks depend on '{a}'", flush=True)
    finally:
        cleanup(st)

    print(f"py_sdk: {r.passed} checks ok, {r.failed} checks failed", flush=True)
    print(f"RESULT passed={r.passed} failed={r.failed}", flush=True)
    return 1 if r.failed else 0


def run_checks(r, st, url, user, password, raw):
    # ---- login -----------------------------------------------------------
    def bad_login():
        s = new_session(url)
        d = expect_failure(s.xenapi.login_with_password, user, password + "-wrong",
                           "2.21", "xapi-rs-tests")
        expect_eq(d[0], "SESSION_AUTHENTICATION_FAILED", "details[0]")
        expect(s.handle is None, "no session handle after a failed login")
        return repr(d)
    r.check("login with a wrong password -> SESSION_AUTHENTICATION_FAILED", bad_login)

    def login():
        s = new_session(url)
        s.xenapi.login_with_password(user, password, "2.21", "xapi-rs-tests")
        h = s.handle
        expect(isinstance(h, str) and h.startswith("OpaqueRef:"),
               f"session handle should be an OpaqueRef string, got {h!r}")
        st["session"] = s
        return h
    r.check("login_with_password(user, pw, '2.21', 'xapi-rs-tests')", login, fatal=True)
    s = st["session"]
    x = s.xenapi

    # ---- pool / host -------------------------------------------------------
    def pool():
        recs = x.pool.get_all_records()
        expect(isinstance(recs, dict), f"pool.get_all_records should return a dict, got {type(recs).__name__}")
        expect_eq(len(recs), 1, "number of pools")
        ref, rec = next(iter(recs.items()))
        expect(ref.startswith("OpaqueRef:"), f"pool ref {ref!r}")
        for f in ("master", "other_config", "uuid", "name_label"):
            expect(f in rec, f"pool record lacks {f!r} (keys: {sorted(rec)[:20]}...)")
        expect(isinstance(rec["other_config"], dict), "pool.other_config should be a dict")
        expect(isinstance(rec["uuid"], str) and len(rec["uuid"]) == 36, f"pool uuid {rec['uuid']!r}")
        expect(rec["master"].startswith("OpaqueRef:") and rec["master"] != "OpaqueRef:NULL",
               f"pool.master {rec['master']!r}")
        st["pool"], st["pool_rec"], st["master"] = ref, rec, rec["master"]
        return f"pool {ref}, master {rec['master']}"
    r.check("pool.get_all_records: exactly one pool with master, other_config, uuid", pool, fatal=True)

    def host():
        h = x.host.get_record(st["master"])
        expect_eq(h.get("API_version_major"), "2", "API_version_major (int64 arrives as a string)")
        expect_eq(h.get("API_version_minor"), "21", "API_version_minor (int64 arrives as a string)")
        sv = h.get("software_version")
        expect(isinstance(sv, dict), f"software_version should be a dict, got {sv!r}")
        missing = [k for k in ("product_version", "product_brand", "platform_version",
                               "xapi", "build_number", "hostname") if k not in sv]
        expect(not missing, f"software_version lacks {missing} (has {sorted(sv)})")
        expect_eq(x.host.get_uuid(st["master"]), h.get("uuid"), "host.get_uuid vs host.get_record uuid")
        return f"{sv.get('product_brand')} {sv.get('product_version')} xapi {sv.get('xapi')}"
    r.check("host.get_record(pool.master): API 2.21, software_version keys", host)

    def api_version():
        v = s.API_version
        expect_eq(v, "2.21", "session.API_version")
        return v
    r.check("session.API_version (pool.get_all, pool.get_master, host.get_API_version_*)", api_version)

    # ---- VMs ---------------------------------------------------------------
    def vms():
        recs = x.VM.get_all_records()
        expect(isinstance(recs, dict), "VM.get_all_records should return a dict")
        doms0 = [ref for ref, v in recs.items() if v.get("is_control_domain") is True]
        expect_eq(len(doms0), 1, "number of VMs with is_control_domain == True (a bool)")
        ref = doms0[0]
        v = recs[ref]
        expect_eq(v.get("power_state"), "Running", "dom0 power_state")
        expect_eq(v.get("resident_on"), st["master"], "dom0 resident_on")
        for f in ("memory_static_max", "domid", "VCPUs_max"):
            val = v.get(f)
            expect(isinstance(val, str) and val.lstrip("-").isdigit(),
                   f"dom0 {f} should be an int64 sent as a string of digits, got {val!r}")
        expect(isinstance(v.get("is_a_template"), bool), "is_a_template should be a bool")
        expect(isinstance(v.get("other_config"), dict), "other_config should be a dict")
        expect(isinstance(v.get("tags"), list), "tags should be a list")
        st["dom0"], st["dom0_rec"] = ref, v
        return f"{len(recs)} VMs, dom0 {ref}"
    r.check("VM.get_all_records: exactly one running control domain on the master", vms, fatal=True)
    dom0 = st["dom0"]

    def where():
        recs = x.VM.get_all_records_where('field "is_control_domain"="true"')
        expect(isinstance(recs, dict), f"expected a dict, got {type(recs).__name__}")
        expect_eq(sorted(recs), [dom0], "refs returned")
        expect_eq(recs[dom0].get("uuid"), st["dom0_rec"]["uuid"], "uuid in returned record")
    r.check("VM.get_all_records_where('field \"is_control_domain\"=\"true\"') -> only dom0", where)

    # ---- setters / getters -------------------------------------------------
    def name_description():
        st["dom0_desc"] = x.VM.get_name_description(dom0)
        for value in ("x", "x <&> \"q\" 'a' é ✓", ""):
            x.VM.set_name_description(dom0, value)
            expect_eq(x.VM.get_name_description(dom0), value, "name_description after set")
        x.VM.set_name_description(dom0, st["dom0_desc"])
        del st["dom0_desc"]
    r.check("VM.set_name_description then get_name_description (incl. XML specials, unicode, empty)",
            name_description)

    def other_config():
        x.VM.remove_from_other_config(dom0, TEST_KEY)  # a missing key is not an error
        x.VM.add_to_other_config(dom0, TEST_KEY, "v1")
        st["dom0_key"] = True
        expect_eq(x.VM.get_other_config(dom0).get(TEST_KEY), "v1", "other_config[key] after add_to")
        d = expect_failure(x.VM.add_to_other_config, dom0, TEST_KEY, "v2")
        expect_eq(d[0], "MAP_DUPLICATE_KEY", "details[0]")
        expect_eq(d[-1], TEST_KEY, "last element of MAP_DUPLICATE_KEY details (the key)")
        expect_eq(len(d), 5, "MAP_DUPLICATE_KEY details length (code, type, param_name, uuid, key)")
        expect_eq(d[3], st["dom0_rec"]["uuid"], "details[3] (the object's uuid)")
        expect_eq(x.VM.get_other_config(dom0).get(TEST_KEY), "v1", "value unchanged after duplicate add")
        x.VM.remove_from_other_config(dom0, TEST_KEY)
        del st["dom0_key"]
        expect(TEST_KEY not in x.VM.get_other_config(dom0), "key still present after remove_from")
        return repr(d)
    r.check("VM.add_to_other_config twice -> MAP_DUPLICATE_KEY; remove_from_other_config", other_config)

    def tags():
        x.VM.add_tags(dom0, TEST_TAG)
        st["dom0_tag"] = True
        x.VM.add_tags(dom0, TEST_TAG)  # set semantics: adding again is a no-op
        expect_eq(x.VM.get_tags(dom0).count(TEST_TAG), 1, "occurrences of the tag after adding it twice")
        x.VM.remove_tags(dom0, TEST_TAG)
        del st["dom0_tag"]
        expect(TEST_TAG not in x.VM.get_tags(dom0), "tag still present after remove_tags")
    r.check("VM.add_tags / get_tags / remove_tags", tags)

    def pool_name():
        pool_ref = st["pool"]
        st["pool_label"] = x.pool.get_name_label(pool_ref)
        x.pool.set_name_label(pool_ref, "xapi-rs test pool")
        expect_eq(x.pool.get_name_label(pool_ref), "xapi-rs test pool", "pool name_label after set")
        expect_eq(x.pool.get_record(pool_ref).get("name_label"), "xapi-rs test pool",
                  "pool.get_record name_label after set")
        x.pool.set_name_label(pool_ref, st["pool_label"])
        expect_eq(x.pool.get_name_label(pool_ref), st["pool_label"], "pool name_label after restore")
        del st["pool_label"]
    r.check("pool.set_name_label round trip", pool_name)

    # ---- errors ------------------------------------------------------------
    def uuid_invalid():
        d = expect_failure(x.VM.get_by_uuid, ZERO_UUID)
        expect_eq(d, ["UUID_INVALID", "VM", ZERO_UUID], "details")
    r.check("VM.get_by_uuid(zero uuid) -> ['UUID_INVALID', 'VM', uuid]", uuid_invalid)

    def by_uuid_ok():
        expect_eq(x.VM.get_by_uuid(st["dom0_rec"]["uuid"]), dom0, "VM.get_by_uuid(dom0 uuid)")
    r.check("VM.get_by_uuid(dom0 uuid) -> dom0 ref", by_uuid_ok)

    def handle_invalid():
        d = expect_failure(x.VM.get_record, "OpaqueRef:nonsense")
        expect_eq(d, ["HANDLE_INVALID", "VM", "OpaqueRef:nonsense"], "details")
    r.check("VM.get_record('OpaqueRef:nonsense') -> ['HANDLE_INVALID', 'VM', ref]", handle_invalid)

    def method_unknown():
        d = expect_failure(x.VM.no_such_message, dom0)
        expect_eq(d[0], "MESSAGE_METHOD_UNKNOWN", "details[0]")
        expect(len(d) > 1, f"details should carry the method name: {d!r}")
        expect_eq(d[1], "VM.no_such_message", "details[1]")
        return repr(d)
    r.check("VM.no_such_message -> MESSAGE_METHOD_UNKNOWN", method_unknown)

    def param_count():
        d = expect_failure(x.VM.get_name_label)
        expect_eq(d, ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_name_label", "2", "1"], "details")
    r.check("VM.get_name_label() with the session only -> MESSAGE_PARAMETER_COUNT_MISMATCH", param_count)

    def type_error():
        d = expect_failure(x.pool.set_ha_allow_overcommit, st["pool"], "notabool")
        expect_eq(d[0], "FIELD_TYPE_ERROR", "details[0]")
        return repr(d)
    r.check("pool.set_ha_allow_overcommit(pool, 'notabool') -> FIELD_TYPE_ERROR", type_error)

    def not_implemented():
        d = expect_failure(x.pool.enable_ha, [], {})
        expect_eq(d[0], "NOT_IMPLEMENTED", "details[0]")
        return repr(d)
    r.check("pool.enable_ha([], {}) -> NOT_IMPLEMENTED", not_implemented)

    # ---- raw XML-RPC (no SDK, so no transparent re-login) --------------------
    def raw_success_shape():
        res = raw.VM.get_all(s.handle)
        expect(isinstance(res, dict), f"raw response should be a struct, got {res!r}")
        expect_eq(sorted(res), ["Status", "Value"], "raw success struct keys")
        expect_eq(res["Status"], "Success", "Status")
        expect(dom0 in res["Value"], "dom0 in VM.get_all")
    r.check("raw XML-RPC VM.get_all -> {'Status': 'Success', 'Value': [...]}", raw_success_shape)

    def sdk_bogus_session():
        s2 = new_session(url)
        s2._session = "OpaqueRef:bogus"
        try:
            res = s2.xenapi.VM.get_all()
        except xmlrpc.client.Fault as f:
            # SESSION_INVALID and no previous login: the SDK gives up with 401.
            expect_eq(f.faultCode, 401, "Fault code")
            return f"Fault {f.faultCode} {f.faultString!r}"
        raise CheckFailed(f"expected SESSION_INVALID (SDK Fault 401), got success: {res!r}")
    r.check("SDK with session 'OpaqueRef:bogus' -> SESSION_INVALID (SDK raises Fault 401)", sdk_bogus_session)

    def raw_bogus_session():
        res = raw.VM.get_all("OpaqueRef:bogus")
        expect_eq(res, {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:bogus"]},
                  "raw response")
    r.check("raw VM.get_all('OpaqueRef:bogus') -> SESSION_INVALID", raw_bogus_session)

    def list_methods():
        res = raw.system.listMethods()
        expect(isinstance(res, list), f"system.listMethods should return a bare list, got {str(res)[:200]}")
        for m in ("VM.get_all_records", "session.login_with_password", "pool.get_all_records"):
            expect(m in res, f"{m} missing from system.listMethods")
        expect(all(isinstance(m, str) for m in res), "all method names are strings")
        n_classes = len({m.split(".")[0] for m in res if m.endswith(".get_all_records")})
        return f"{len(res)} methods, {n_classes} classes with get_all_records"
    r.check("system.listMethods (raw): a bare list with VM.get_all_records, session.login_with_password",
            list_methods)

    def relogin():
        # The SDK re-logs in by itself when the server says SESSION_INVALID.
        s3 = new_session(url)
        s3.xenapi.login_with_password(user, password)  # 2-param form, as XO uses
        old = s3.handle
        st["s3"] = s3
        res = raw.session.logout(old)
        expect_eq(res.get("Status"), "Success", f"raw session.logout: {res!r}")
        expect_eq(raw.VM.get_all(old).get("ErrorDescription"), ["SESSION_INVALID", old],
                  "old session after raw logout")
        expect(dom0 in s3.xenapi.VM.get_all(), "dom0 in VM.get_all after transparent re-login")
        expect(s3.handle != old, "the SDK should hold a new session after re-login")
        s3.xenapi.session.logout()
        del st["s3"]
    r.check("2-param login; after the session is logged out the SDK re-logs in transparently", relogin)

    # ---- logout ------------------------------------------------------------
    def logout():
        old = s.handle
        cleanup(st, keep_session=True)  # restore values before we lose the session
        s.xenapi.session.logout()
        del st["session"]
        expect(s.handle is None, "SDK handle cleared after logout")
        res = raw.VM.get_all(old)
        expect_eq(res, {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", old]},
                  "raw call with the logged-out session")
    r.check("session.logout; the old session then gets SESSION_INVALID (raw)", logout)


def cleanup(st, keep_session=False):
    """Best-effort restore of anything a failed check left behind."""
    s = st.get("session")
    if s is None:
        return
    x = s.xenapi
    for key, undo in (
        ("dom0_desc", lambda: x.VM.set_name_description(st["dom0"], st["dom0_desc"])),
        ("dom0_key", lambda: x.VM.remove_from_other_config(st["dom0"], TEST_KEY)),
        ("dom0_tag", lambda: x.VM.remove_tags(st["dom0"], TEST_TAG)),
        ("pool_label", lambda: x.pool.set_name_label(st["pool"], st["pool_label"])),
    ):
        if key in st:
            try:
                undo()
                del st[key]
            except Exception as e:  # noqa: BLE001
                print(f"warn cleanup {key}: {e}", flush=True)
    for key in ("s3",) + (() if keep_session else ("session",)):
        if key in st:
            try:
                st[key].xenapi.session.logout()
            except Exception:  # noqa: BLE001
                pass
            del st[key]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
