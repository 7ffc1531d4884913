#!/usr/bin/env python3
"""The Python XenAPI SDK over HTTPS, checking the certificate: with the
daemon's certificate file given as the CA it connects (for the names 127.0.0.1
and localhost); without ignore_ssl and without the CA it fails with a
certificate error; the certificate served is the one in the file.

Usage: py_tls.py HTTPS_URL USER PASSWORD CA_FILE
       e.g. py_tls.py https://127.0.0.1:8443 root secret /var/lib/xapi-rs/xapi-ssl.pem

The pinned SDK (XenAPI 26.21.1) takes no SSL context of its own: only
ignore_ssl=True, or a transport, so the CA goes in through
xmlrpc.client.SafeTransport(context=ssl.create_default_context(cafile=CA)).

Prints "ok   ..." / "FAIL ..." per check, then "RESULT passed=N failed=M".
"""

import socket
import ssl
import sys
import urllib.parse
import xmlrpc.client

import XenAPI

CALL_TIMEOUT_S = 30


def main(url, user, password, ca_file):
    socket.setdefaulttimeout(CALL_TIMEOUT_S)
    u = urllib.parse.urlsplit(url)
    passed = failed = 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            info = fn()
        except Exception as e:  # any exception is the check failing
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            return
        passed += 1
        print(f"ok   {name}" + (f"  [{info}]" if info else ""), flush=True)

    def with_ca(host):
        def run():
            context = ssl.create_default_context(cafile=ca_file)
            transport = xmlrpc.client.SafeTransport(context=context)
            s = XenAPI.Session(f"https://{host}:{u.port}", transport=transport)
            s.xenapi.login_with_password(user, password, "2.21", "xapi-rs-tests")
            try:
                pools = s.xenapi.pool.get_all()
                assert len(pools) == 1, f"one pool, got {pools!r}"
            finally:
                s.xenapi.session.logout()
            return f"pool {pools[0]}"
        return run

    check("Session with the daemon's certificate as CA (name 127.0.0.1)", with_ca("127.0.0.1"))
    check("Session with the daemon's certificate as CA (name localhost)", with_ca("localhost"))

    def unverified_fails():
        s = XenAPI.Session(url)  # neither ignore_ssl nor a CA: the system's CAs, which know nothing of ours
        try:
            s.xenapi.login_with_password(user, password, "2.21", "xapi-rs-tests")
        except ssl.SSLCertVerificationError as e:
            return e.verify_message
        raise AssertionError("the login succeeded without a trusted certificate")
    check("Session without ignore_ssl or CA -> SSLCertVerificationError", unverified_fails)

    def wrong_name_fails():
        # The certificate is for this host's names and addresses; 127.0.0.2 is none of them.
        context = ssl.create_default_context(cafile=ca_file)
        context.check_hostname = True
        with socket.create_connection(("127.0.0.1", u.port)) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="127.0.0.2"):
                    pass
            except ssl.SSLCertVerificationError as e:
                return e.verify_message
        raise AssertionError("a name the certificate is not for was accepted")
    check("a name the certificate is not for -> SSLCertVerificationError", wrong_name_fails)

    def served_is_the_file():
        served = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", u.port)))
        with open(ca_file) as f:
            text = f.read()
        begin = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
        in_file = ssl.PEM_cert_to_DER_cert(text[begin:end])
        assert served == in_file, "the served certificate differs from the file's first one"
    check("the certificate served is the file's", served_is_the_file)

    def tls_peer_needs_a_password():
        s = XenAPI.Session(url, ignore_ssl=True)
        try:
            s.xenapi.login_with_password(user, password + "-wrong", "2.21", "xapi-rs-tests")
        except XenAPI.Failure as f:
            assert f.details[0] == "SESSION_AUTHENTICATION_FAILED", f.details
            return f.details[0]
        raise AssertionError("a wrong password was accepted over TLS")
    check("a TLS client is not local root: a wrong password fails", tls_peer_needs_a_password)

    print(f"RESULT passed={passed} failed={failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
