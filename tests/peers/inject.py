#!/usr/bin/env python3
"""Injects numbered messages into an SMTP server with several threads (smtplib), recording
the Message-ID of every message that got a 250 to --acked (one per line, flushed at once).

A message that got no 250 (connection refused, reset, 4xx) is retried until --deadline
seconds have passed, so the load survives the server being killed and restarted.
Prints "injected N acked M" at the end. Talks to 127.0.0.1 only.
"""
import argparse
import smtplib
import threading
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--acked", required=True)
    p.add_argument("--rcpt", default="rcpt@dest.test")
    p.add_argument("--size", type=int, default=2000)
    p.add_argument("--deadline", type=float, default=300)
    p.add_argument("--tag", default="t")
    p.add_argument("--domains", type=int, default=0,
                   help="spread recipients over this many domains (r<n>@d<n mod N>.test)")
    args = p.parse_args()

    acked = open(args.acked, "a", buffering=1)
    lock = threading.Lock()
    next_n = [0]
    end = time.time() + args.deadline
    filler = ("x" * 76 + "\r\n") * max(1, args.size // 78)

    def worker():
        conn = None
        while time.time() < end:
            with lock:
                if next_n[0] >= args.count:
                    break
                n = next_n[0]
                next_n[0] += 1
            mid = "<%s-%d@inject.test>" % (args.tag, n)
            rcpt = "r%d@d%d.test" % (n, n % args.domains) if args.domains else args.rcpt
            msg = ("From: sender@src.test\r\nTo: %s\r\nSubject: message %d\r\n"
                   "Message-ID: %s\r\n\r\n%s" % (rcpt, n, mid, filler))
            while time.time() < end:
                try:
                    if conn is None:
                        conn = smtplib.SMTP("127.0.0.1", args.port, timeout=30)
                        conn.ehlo("inject.test")
                    conn.sendmail("sender@src.test", [rcpt], msg.encode())
                    acked.write(mid + "\n")
                    break
                except (OSError, smtplib.SMTPException):
                    try:
                        if conn is not None:
                            conn.close()
                    except Exception:
                        pass
                    conn = None
                    time.sleep(0.2)
        if conn is not None:
            try:
                conn.quit()
            except Exception:
                pass

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acked.close()
    n_acked = sum(1 for _ in open(args.acked))
    print("injected %d acked %d" % (next_n[0], n_acked), flush=True)


if __name__ == "__main__":
    main()
