#!/usr/bin/env python3
"""A small authoritative DNS server for Keel's MX tests (dnslib), on 127.0.0.1 UDP+TCP.

--zone FILE is JSON: {"name.": [["MX", 10, "mx1.example.test."], ["A", "127.0.0.1"],
["AAAA", "::1"], ["SERVFAIL"]], ...}. A name listed with no records answers NOERROR/empty;
an unlisted name answers NXDOMAIN; ["SERVFAIL"] answers SERVFAIL; ["TIMEOUT"] never answers.
The zone file is read again whenever it changes, so a test can turn a failure into an answer.
Runs until SIGTERM.
"""
import argparse
import json
import os
import signal
import threading
import time

from dnslib import AAAA, A, MX, QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSServer


class ZoneResolver(BaseResolver):
    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.zone = {}
        self.lock = threading.Lock()
        self.reload()

    def reload(self):
        with self.lock:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self.mtime:
                return
            with open(self.path) as f:
                zone = json.load(f)
            self.zone = {k.lower(): v for k, v in zone.items()}
            self.mtime = mtime

    def resolve(self, request, handler):
        try:
            self.reload()
        except (OSError, ValueError):
            pass  # mid-rewrite: keep the zone we have
        reply = request.reply()
        qname = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        records = self.zone.get(qname)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rec in records:
            kind = rec[0]
            if kind == "SERVFAIL":
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            if kind == "TIMEOUT":
                time.sleep(30)
                return None
            if kind != qtype:
                continue
            if kind == "MX":
                reply.add_answer(RR(qname, QTYPE.MX, ttl=60, rdata=MX(rec[2], rec[1])))
            elif kind == "A":
                reply.add_answer(RR(qname, QTYPE.A, ttl=60, rdata=A(rec[1])))
            elif kind == "AAAA":
                reply.add_answer(RR(qname, QTYPE.AAAA, ttl=60, rdata=AAAA(rec[1])))
        return reply


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--zone", required=True)
    args = p.parse_args()
    resolver = ZoneResolver(args.zone)
    servers = [DNSServer(resolver, port=args.port, address="127.0.0.1"),
               DNSServer(resolver, port=args.port, address="127.0.0.1", tcp=True)]
    for s in servers:
        s.start_thread()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    for s in servers:
        s.stop()


if __name__ == "__main__":
    main()
