#!/usr/bin/env python3
"""Parses a message with Python's `email` package (policy.default) and prints what it found.

usage: mime_check.py MESSAGE_FILE

Prints one JSON object: every defect Python's parser recorded (in any part), the decoded
Subject/From/To/Reply-To, the header names in order, the MIME tree (content types, file names,
decoded text of text parts, size of binary parts) and the longest raw line (overall and
in the body). Keel's tests assert
on it; this script only reports. Exit 2 if the file cannot be read.
"""
import email
import email.policy
import json
import sys


def part_info(part):
    info = {"type": part.get_content_type()}
    if part.is_multipart():
        info["parts"] = [part_info(p) for p in part.iter_parts()]
        return info
    info["filename"] = part.get_filename()
    info["disposition"] = part.get_content_disposition()
    info["cte"] = part.get("Content-Transfer-Encoding")
    if part.get_content_maintype() == "text" and part.get_filename() is None:
        info["text"] = part.get_content()
    else:
        info["size"] = len(part.get_payload(decode=True) or b"")
    return info


def main():
    try:
        with open(sys.argv[1], "rb") as f:
            raw = f.read()
    except (IndexError, OSError) as e:
        print(f"mime_check.py: {e}", file=sys.stderr)
        return 2
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    defects = [f"{type(d).__name__}: {d}" for p in msg.walk() for d in p.defects]
    for name, value in msg.items():
        defects += [f"{name}: {type(d).__name__}" for d in getattr(value, "defects", ())]
    out = {
        "defects": defects,
        "subject": str(msg["subject"]) if msg["subject"] is not None else None,
        "from": str(msg["from"]) if msg["from"] is not None else None,
        "to": str(msg["to"]) if msg["to"] is not None else None,
        "reply_to": str(msg["reply-to"]) if msg["reply-to"] is not None else None,
        "headers": [k for k, _ in msg.items()],
        "tree": part_info(msg),
        "max_line": max((len(line) for line in raw.split(b"\r\n")), default=0),
        "max_body_line": max(
            (len(line) for line in raw.partition(b"\r\n\r\n")[2].split(b"\r\n")), default=0
        ),
        "bare_lf": b"\n" in raw.replace(b"\r\n", b""),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
