#!/usr/bin/env python3
"""Independent DKIM verifier for Keel's tests: dkimpy, with DNS answered from arguments.

usage: verify.py MESSAGE_FILE NAME=TXT [NAME=TXT ...]

Verifies EVERY DKIM-Signature field of the message (dkim.verify alone checks only the first)
and exits 0 only if there is at least one and all of them verify. The public keys come from
the NAME=TXT arguments (NAME like s1._domainkey.acme.example, TXT like "v=DKIM1; k=rsa; p=...");
a lookup of any other name fails, so a wrong s= or d= cannot pass. Nothing touches the network.
Exit 1: a signature failed; exit 2: usage or environment problem. Details go to stderr.
"""
import logging
import sys

try:
    import dkim
except ImportError:
    print("verify.py: dkimpy missing; run scripts/install-test-deps.sh", file=sys.stderr)
    sys.exit(2)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    records = {}
    for arg in sys.argv[2:]:
        name, sep, txt = arg.partition("=")
        if not sep:
            print(f"verify.py: bad record argument {arg!r}", file=sys.stderr)
            return 2
        records[name.lower().rstrip(".")] = txt.encode()

    lookups = []

    def dnsfunc(name, timeout=5):
        key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        lookups.append(key)
        return records.get(key)

    with open(sys.argv[1], "rb") as f:
        message = f.read()

    logger = logging.getLogger("dkimpy")
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.DEBUG)

    d = dkim.DKIM(message, logger=logger)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    if count == 0:
        print("verify.py: no DKIM-Signature field", file=sys.stderr)
        return 1
    ok = True
    for idx in range(count):
        try:
            good = d.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            print(f"verify.py: signature {idx}: {e}", file=sys.stderr)
            good = False
        if not good:
            ok = False
            print(f"verify.py: signature {idx} FAILED (looked up {lookups})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
