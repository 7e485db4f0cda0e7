#!/usr/bin/env python3
"""A scripted misbehaving receiving MTA for Keel's fault tests (asyncio, 127.0.0.1 only).

The first --bad N connections misbehave as --mode says; later connections are a plain, correct
SMTP server that appends every accepted message to --out as one JSON line (envelope,
Message-ID, whether TLS was used), so a test can check that the message got through once a
good destination was available.

Modes:
  drop-mid-data   greet, accept MAIL/RCPT/DATA, read part of the body, then close the socket
  no-greeting     accept TCP and never send a byte (until the client hangs up)
  garbage         greet with bytes that are not an SMTP reply
  long-line       answer MAIL with a single 10 KB reply line
  greeting-421    greet with "421 4.3.2 ..." and close
  starttls-broken advertise STARTTLS on every connection; accept the command with 220, then
                  send bytes that are not TLS and close (the good part of the session only
                  works in plain text)
  starttls-stall  as starttls-broken, but after the 220 say nothing (the handshake stalls)
  slow-reader     a correct server on every connection that reads message data slowly (64 KiB
                  per --pause seconds, small socket receive buffer): a live but slow link
Every connection is counted in --stats (JSON {"connections": n}) when given.
Runs until SIGTERM/SIGINT.
"""
import argparse
import asyncio
import email.parser
import json
import os
import signal
import socket
import struct
import sys
import time

LINE_LIMIT = 64 * 1024
IDLE = 60.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", required=True,
                   choices=["drop-mid-data", "no-greeting", "garbage", "long-line",
                            "greeting-421", "starttls-broken", "starttls-stall", "slow-reader"])
    p.add_argument("--bad", type=int, default=1, help="misbehave on the first N connections")
    p.add_argument("--out", required=True)
    p.add_argument("--stats", default="")
    p.add_argument("--pause", type=float, default=0.04)
    args = p.parse_args()
    out = open(args.out, "a", buffering=1)
    state = {"connections": 0}

    def write_stats():
        if not args.stats:
            return
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, args.stats)

    async def readline(reader):
        return await asyncio.wait_for(reader.readline(), IDLE)

    async def handle(reader, writer):
        state["connections"] += 1
        write_stats()
        bad = state["connections"] <= args.bad or args.mode.startswith("starttls-")
        mode = args.mode if bad else "good"
        if args.mode == "slow-reader":
            mode = "slow-reader"
        try:
            await session(reader, writer, mode)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def session(reader, writer, mode):
        if mode == "no-greeting":
            # Hold the connection open, silent, until the client gives up (bounded).
            await asyncio.wait_for(reader.read(), IDLE)
            return
        if mode == "greeting-421":
            writer.write(b"421 4.3.2 badmx.test Service not available, try again later\r\n")
            await writer.drain()
            return
        if mode == "garbage":
            writer.write(b"\x00\xffHTTP/1.0 200 OK\r\nthis is not smtp\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(), IDLE)
            return
        writer.write(b"220 badmx.test ESMTP\r\n")
        await writer.drain()
        mail_from, rcpts = None, []
        while True:
            line = await readline(reader)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                caps = ["badmx.test", "PIPELINING", "8BITMIME"]
                if mode.startswith("starttls-"):
                    caps.append("STARTTLS")
                reply = "".join("250-%s\r\n" % c for c in caps[:-1]) + "250 %s\r\n" % caps[-1]
                writer.write(reply.encode())
            elif verb == "STARTTLS" and mode.startswith("starttls-"):
                writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                await writer.drain()
                if mode == "starttls-stall":
                    await asyncio.wait_for(reader.read(), IDLE)
                    return
                # Not a TLS ServerHello: the client's handshake fails.
                writer.write(b"this is not a TLS record\r\n")
                await writer.drain()
                return
            elif verb == "MAIL":
                if mode == "long-line":
                    writer.write(b"451 4.3.0 " + b"x" * 10240 + b"\r\n")
                    await writer.drain()
                    continue
                mail_from, rcpts = cmd.split(":", 1)[1].strip(), []
                writer.write(b"250 2.1.0 OK\r\n")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip().strip("<>"))
                writer.write(b"250 2.1.5 OK\r\n")
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    writer.write(b"503 5.5.1 Bad sequence\r\n")
                    await writer.drain()
                    continue
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                if mode == "drop-mid-data":
                    await readline(reader)
                    await readline(reader)
                    # Reset rather than FIN, as a crashing receiver would.
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    return
                body = bytearray()
                paced = 0
                while True:
                    chunk = await readline(reader)
                    if not chunk:
                        return
                    if mode == "slow-reader":
                        paced += len(chunk)
                        if paced >= 64 * 1024:
                            paced = 0
                            await asyncio.sleep(args.pause)
                    if chunk == b".\r\n":
                        break
                    if chunk.startswith(b"."):
                        chunk = chunk[1:]
                    body += chunk
                headers = email.parser.BytesHeaderParser().parsebytes(bytes(body))
                rec = {
                    "mail_from": mail_from,
                    "rcpt_tos": rcpts,
                    "message_id": headers.get("Message-ID"),
                    "subject": headers.get("Subject"),
                    "size": len(body),
                    "tls": False,
                    "time": time.time(),
                }
                out.write(json.dumps(rec) + "\n")
                mail_from, rcpts = None, []
                writer.write(b"250 2.0.0 OK queued\r\n")
            elif verb == "RSET":
                mail_from, rcpts = None, []
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == "NOOP":
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"500 5.5.1 Unknown command\r\n")
            await writer.drain()

    async def run():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if args.mode == "slow-reader":
            # Inherited by accepted sockets; also turns off receive-buffer autotuning.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(128)
        server = await asyncio.start_server(handle, sock=sock, limit=LINE_LIMIT)
        write_stats()
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
