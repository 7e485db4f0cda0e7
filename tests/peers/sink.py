#!/usr/bin/env python3
"""A scriptable receiving MTA for Keel's integration tests, on aiosmtpd.

Every accepted message is appended as one JSON line to --out (flushed at once) with its
envelope, Message-ID and size, so tests can count deliveries exactly and find duplicates.

Behaviour knobs:
  --tempfail-first N     answer the first N DATA transactions with 451 4.3.0 (then accept)
  --reject-rcpt SUBSTR   answer RCPT TO containing SUBSTR with 550 5.1.1
  --tempfail-rcpt SUBSTR answer RCPT TO containing SUBSTR with 450 4.2.1
  --delay SECONDS        wait this long before answering each DATA (keeps connections busy)
  --stats FILE           keep {"connections": now, "max_connections": peak} up to date in FILE
  --throttle-after N     after N accepted messages, answer MAIL with --throttle-reply for
                         --throttle-for seconds, then accept again (and so on)
  --max-concurrent N     answer connections beyond N with "421 4.7.0 Too many connections" 
Runs until SIGTERM/SIGINT. Listens on 127.0.0.1 only.
"""
import argparse
import asyncio
import json
import signal
import sys
import email.parser
import os
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, args):
        self.args = args
        self.out = open(args.out, "a", buffering=1)
        self.transactions = 0
        self.accepted = 0
        self.throttled_until = 0.0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        now = time.time()
        if self.args.throttle_after and now < self.throttled_until:
            return self.args.throttle_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.args.reject_rcpt and self.args.reject_rcpt in address:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if self.args.tempfail_rcpt and self.args.tempfail_rcpt in address:
            return "450 4.2.1 <%s>: Mailbox busy, try later" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.args.delay:
            await asyncio.sleep(self.args.delay)
        self.transactions += 1
        if self.transactions <= self.args.tempfail_first:
            return "451 4.3.0 Temporary failure, please retry"
        data = envelope.original_content or b""
        headers = email.parser.BytesHeaderParser().parsebytes(data)
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "message_id": headers.get("Message-ID") or headers.get("Message-Id"),
            "subject": headers.get("Subject"),
            "size": len(data),
            "received_count": len(headers.get_all("Received") or []),
            "peer": session.peer[0] if session.peer else None,
            "tls": session.ssl is not None,
            "time": time.time(),
        }
        if self.args.keep_body:
            rec["body"] = data.decode("utf-8", "replace")
        self.out.write(json.dumps(rec) + "\n")
        self.accepted += 1
        if self.args.throttle_after and self.accepted % self.args.throttle_after == 0:
            self.throttled_until = time.time() + self.args.throttle_for
        return "250 2.0.0 OK queued"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tempfail-first", type=int, default=0)
    p.add_argument("--reject-rcpt", default="")
    p.add_argument("--tempfail-rcpt", default="")
    p.add_argument("--keep-body", action="store_true")
    p.add_argument("--delay", type=float, default=0)
    p.add_argument("--stats", default="")
    p.add_argument("--throttle-after", type=int, default=0)
    p.add_argument("--throttle-for", type=float, default=2.0)
    p.add_argument("--throttle-reply", default="421 4.7.28 Rate limited, try again later")
    p.add_argument("--max-concurrent", type=int, default=0)
    p.add_argument("--tls-cert", default="", help="PEM certificate: offer STARTTLS")
    p.add_argument("--tls-key", default="")
    args = p.parse_args()

    handler = Handler(args)

    tls_context = None
    if args.tls_cert:
        import ssl
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)

    conns = {"now": 0, "max": 0}

    def write_stats():
        if not args.stats:
            return
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"connections": conns["now"], "max_connections": conns["max"]}, f)
        os.replace(tmp, args.stats)

    class CountingSMTP(SMTP):
        def connection_made(self, transport):
            if args.max_concurrent and conns["now"] >= args.max_concurrent:
                self._refused = True
                transport.write(b"421 4.7.0 sink.test Too many connections, try again later\r\n")
                transport.close()
                return
            self._refused = False
            self._counted = True
            conns["now"] += 1
            conns["max"] = max(conns["max"], conns["now"])
            write_stats()
            super().connection_made(transport)

        def _uncount(self):
            # A client that said QUIT is done with us: the TCP close that follows may be seen
            # after its successor's connect, which is not two sessions at once.
            if getattr(self, "_counted", False):
                self._counted = False
                conns["now"] -= 1
                write_stats()

        async def smtp_QUIT(self, arg):
            self._uncount()
            await super().smtp_QUIT(arg)

        def connection_lost(self, exc):
            if getattr(self, "_refused", False):
                return
            self._uncount()
            super().connection_lost(exc)

    class Ctl(Controller):
        def factory(self):
            return CountingSMTP(self.handler, decode_data=False, enable_SMTPUTF8=True,
                        hostname="sink.test", data_size_limit=64 * 1024 * 1024,
                        tls_context=tls_context)

    ctl = Ctl(handler, hostname="127.0.0.1", port=args.port, ready_timeout=10)
    ctl.start()
    print("ready", flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    loop.run_until_complete(stop.wait())
    ctl.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
