#!/usr/bin/env python3
"""Set a VM's name_label with the real Python XenAPI SDK, then log out.

Usage: py_set_label.py URL USER PASSWORD VM_REF LABEL

Used by xo_events.mjs to make a change from another client and session than
the one watching events. Prints "set" once VM.set_name_label has returned.
Exits 0 on success, 1 (with the error on stderr) otherwise.
"""

import socket
import sys

import XenAPI

CALL_TIMEOUT_S = 20  # xmlrpc.client has no timeout of its own


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    url, user, password, ref, label = sys.argv[1:]
    socket.setdefaulttimeout(CALL_TIMEOUT_S)
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(user, password, "2.21", "xapi-rs py_set_label.py")
    try:
        session.xenapi.VM.set_name_label(ref, label)
        print("set", flush=True)
    finally:
        session.xenapi.session.logout()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # report any failure (XenAPI.Failure, socket errors) on stderr
        print(f"py_set_label.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
