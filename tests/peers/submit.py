#!/usr/bin/env python3
"""One scripted SMTP submission with Python's smtplib, for Keel's TLS and AUTH tests.

Connects to 127.0.0.1 (plain, or implicit TLS with --implicit-tls), optionally upgrades with
STARTTLS, optionally authenticates (AUTH PLAIN or LOGIN), optionally sends one message, and
prints what happened as one JSON object on stdout:

  {"features_before": {...}, "features": {...}, "tls": "TLSv1.3" | null,
   "starttls": [code, text], "auth": [code, text], "mail": [code, text],
   "rcpt": [[code, text], ...], "data": [code, text], "closed": bool, "error": "..."}

Keys for steps that were not taken are absent. Certificates are verified against --cafile
(the test's own self-signed certificate) for the name 127.0.0.1. Talks to 127.0.0.1 only.
"""
import argparse
import json
import smtplib
import ssl
import sys


def reply(code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [code, text]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--cafile", default="")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--mech", default="PLAIN", choices=["PLAIN", "LOGIN"])
    p.add_argument("--sender", default="")
    p.add_argument("--to", action="append", default=[])
    p.add_argument("--message-id", default="<submit@keel.test>")
    args = p.parse_args()

    ctx = ssl.create_default_context(cafile=args.cafile or None)
    out = {}
    conn = None
    try:
        if args.implicit_tls:
            conn = smtplib.SMTP_SSL("127.0.0.1", args.port, timeout=20, context=ctx)
        else:
            conn = smtplib.SMTP("127.0.0.1", args.port, timeout=20)
        conn.ehlo("submit.test")
        out["features_before"] = dict(conn.esmtp_features)
        if args.starttls:
            code, text = conn.starttls(context=ctx)
            out["starttls"] = reply(code, text)
            conn.ehlo("submit.test")
        out["features"] = dict(conn.esmtp_features)
        out["tls"] = conn.sock.version() if isinstance(conn.sock, ssl.SSLSocket) else None
        if args.user:
            conn.user, conn.password = args.user, args.password
            try:
                if args.mech == "PLAIN":
                    code, text = conn.auth("PLAIN", conn.auth_plain)
                else:
                    # No initial response: the username and the password each answer a 334.
                    code, text = conn.auth("LOGIN", conn.auth_login, initial_response_ok=False)
                out["auth"] = reply(code, text)
            except smtplib.SMTPAuthenticationError as e:
                out["auth"] = reply(e.smtp_code, e.smtp_error)
        auth_ok = "auth" not in out or out["auth"][0] == 235
        if args.sender and auth_ok:
            out["mail"] = reply(*conn.mail(args.sender))
            out["rcpt"] = [reply(*conn.rcpt(r)) for r in args.to]
            if any(r[0] < 300 for r in out["rcpt"]):
                msg = ("From: %s\r\nTo: %s\r\nSubject: submitted\r\nMessage-ID: %s\r\n\r\n"
                       "sent over %s\r\n" % (args.sender, ", ".join(args.to), args.message_id,
                                             out["tls"] or "plain text"))
                out["data"] = reply(*conn.data(msg.encode()))
    except (OSError, smtplib.SMTPException) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    # Is the server still talking to us (a 421 closes the connection)?
    try:
        conn.noop()
        out["closed"] = False
        conn.quit()
    except (AttributeError, OSError, smtplib.SMTPException):
        out["closed"] = True
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
