//! The on-disk format: segment file names, the segment header and record framing.
//!
//! # Segment files
//!
//! The spool directory holds `segment-<seq>.log` files, `<seq>` being a zero-padded 20-digit
//! decimal sequence number (so names sort like numbers). A new segment always gets a higher
//! sequence number than every segment before it, and scan order is sequence order: when two
//! records disagree, the one in the higher segment (or later in the same segment) wins.
//!
//! Every segment starts with an 8-byte header: the magic `KEELSPL` followed by one format version
//! byte, currently ASCII `1` (so `head -c 8` prints `KEELSPL1`). A reader refuses versions it does
//! not know instead of guessing: skipping a segment it cannot read would let the spool delete it
//! later as "dead", losing whatever it held.
//!
//! # Records
//!
//! After the header come records, back to back, with no padding:
//!
//! ```text
//! +-----------+--------------+---------+--------------------+
//! | len: u32  | crc: u32     | kind:u8 | payload            |
//! | LE        | LE, crc32c   |         | (len - 1 bytes)    |
//! |           | of kind+payl.|         |                    |
//! +-----------+--------------+---------+--------------------+
//!  `len` counts kind + payload (it is never 0 and at most `MAX_RECORD_LEN`)
//! ```
//!
//! | kind | name    | payload                                                             |
//! |------|---------|---------------------------------------------------------------------|
//! | 1    | Message | id: u128 LE, envelope_len: u32 LE, envelope, body (rest of record)  |
//! | 2    | Update  | id: u128 LE, envelope (rest of record): replaces the envelope       |
//! | 3    | Remove  | id: u128 LE: the message is finished                                |
//!
//! The body is the last field of a `Message` record, so a reader that knows the record's length
//! and the body length finds the body without parsing the envelope.
//!
//! A record that is cut short, whose length is 0 or too large, whose checksum does not match, or
//! whose payload does not parse is invalid; what recovery does about it depends on where it is
//! (see `recovery`). New record kinds or field layouts require a new header version byte.

use crate::MessageId;

/// The magic that starts every segment file, before the version byte.
pub(crate) const MAGIC: &[u8; 7] = b"KEELSPL";
/// The format version this code writes and reads.
pub(crate) const FORMAT_VERSION: u8 = b'1';
/// Length of the segment header (magic + version byte).
pub(crate) const SEGMENT_HEADER_LEN: u64 = 8;
/// The header written at the start of every segment this code creates.
pub(crate) const SEGMENT_HEADER: [u8; 8] = *b"KEELSPL1";

/// Bytes in front of every record's kind byte: `len` and `crc`.
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Upper bound on a record's `len` field (kind + payload). Large enough for any sane mail
/// message; small enough that a garbage length is recognised as garbage.
pub(crate) const MAX_RECORD_LEN: u32 = 1 << 30;

const KIND_MESSAGE: u8 = 1;
const KIND_UPDATE: u8 = 2;
const KIND_REMOVE: u8 = 3;

const ID_LEN: usize = 16;
/// kind + id + envelope length.
const MESSAGE_FIXED_LEN: usize = 1 + ID_LEN + 4;

/// One decoded record, borrowing from the buffer it was decoded from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Message {
        id: MessageId,
        envelope: &'a [u8],
        body: &'a [u8],
    },
    Update {
        id: MessageId,
        envelope: &'a [u8],
    },
    Remove {
        id: MessageId,
    },
}

/// Why bytes could not be decoded as a record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("record cut short (fewer bytes than its header announces)")]
    Truncated,
    #[error("implausible record length {0}")]
    BadLength(u32),
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("malformed record payload: {0}")]
    Malformed(&'static str),
}

/// What the first bytes of a segment file say about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// A segment in the format this code understands.
    Valid,
    /// Shorter than a header, and what is there is a prefix of our header: the segment was
    /// being created when the process died. It holds nothing.
    Unfinished,
    /// A keel segment of another format version.
    UnsupportedVersion(u8),
    /// Not a keel segment at all.
    Foreign,
}

pub(crate) fn check_header(bytes: &[u8]) -> HeaderCheck {
    if bytes.len() < SEGMENT_HEADER.len() {
        return if SEGMENT_HEADER.starts_with(bytes) {
            HeaderCheck::Unfinished
        } else {
            HeaderCheck::Foreign
        };
    }
    if !bytes.starts_with(MAGIC) {
        return HeaderCheck::Foreign;
    }
    match bytes[MAGIC.len()] {
        FORMAT_VERSION => HeaderCheck::Valid,
        other => HeaderCheck::UnsupportedVersion(other),
    }
}

/// The file name of segment `seq`.
pub(crate) fn segment_file_name(seq: u64) -> String {
    format!("segment-{seq:020}.log")
}

/// The sequence number of a segment file name, or `None` if the name is not a segment's.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Total on-disk size of a `Message` record, or `None` if it exceeds the record limit.
pub(crate) fn message_record_size(envelope_len: usize, body_len: usize) -> Option<usize> {
    let len = MESSAGE_FIXED_LEN
        .checked_add(envelope_len)?
        .checked_add(body_len)?;
    if len > MAX_RECORD_LEN as usize {
        return None;
    }
    Some(FRAME_HEADER_LEN + len)
}

/// Encodes a `Message` record. `None` if it would exceed `MAX_RECORD_LEN`.
pub(crate) fn encode_message(id: MessageId, envelope: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let size = message_record_size(envelope.len(), body.len())?;
    // Cannot fail: message_record_size bounded the envelope below MAX_RECORD_LEN.
    let envelope_len = u32::try_from(envelope.len()).ok()?;
    let mut out = Vec::with_capacity(size);
    frame(&mut out, KIND_MESSAGE, |out| {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&envelope_len.to_le_bytes());
        out.extend_from_slice(envelope);
        out.extend_from_slice(body);
    });
    Some(out)
}

/// Encodes an `Update` record. `None` if it would exceed `MAX_RECORD_LEN`.
pub(crate) fn encode_update(id: MessageId, envelope: &[u8]) -> Option<Vec<u8>> {
    let len = 1 + ID_LEN + envelope.len();
    if len > MAX_RECORD_LEN as usize {
        return None;
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + len);
    frame(&mut out, KIND_UPDATE, |out| {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(envelope);
    });
    Some(out)
}

/// Encodes a `Remove` record.
pub(crate) fn encode_remove(id: MessageId) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + 1 + ID_LEN);
    frame(&mut out, KIND_REMOVE, |out| {
        out.extend_from_slice(&id.to_le_bytes())
    });
    out
}

/// Appends one framed record to `out`: reserves the frame header, lets `payload` write the rest,
/// then fills in length and checksum.
fn frame(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    out.push(kind);
    payload(out);
    let body = &out[start + FRAME_HEADER_LEN..];
    // Callers check the size against MAX_RECORD_LEN (< u32::MAX) before encoding.
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The total size the record at the start of `buf` claims, if that claim is plausible (a
/// non-zero length within the limit, fitting in `buf`). Says nothing about the contents.
pub(crate) fn framed_len(buf: &[u8]) -> Option<usize> {
    let header = buf.first_chunk::<FRAME_HEADER_LEN>()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let size = FRAME_HEADER_LEN + len as usize;
    (len != 0 && len <= MAX_RECORD_LEN && size <= buf.len()).then_some(size)
}

/// Decodes the record at the start of `buf`. On success returns the record and its total size
/// (frame header included), so the caller can step to the next one.
pub(crate) fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(DecodeError::Truncated);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(DecodeError::BadLength(len));
    }
    let Some(body) = rest.get(..len as usize) else {
        return Err(DecodeError::Truncated);
    };
    let computed = crc32c::crc32c(body);
    if computed != stored {
        return Err(DecodeError::BadChecksum { stored, computed });
    }
    let (&kind, payload) = body
        .split_first()
        .ok_or(DecodeError::Malformed("empty record"))?;
    let (id, payload) = split_id(payload)?;
    let record = match kind {
        KIND_MESSAGE => {
            let (envelope_len, rest) =
                payload
                    .split_first_chunk::<4>()
                    .ok_or(DecodeError::Malformed(
                        "message record shorter than its fixed fields",
                    ))?;
            let envelope_len = u32::from_le_bytes(*envelope_len) as usize;
            if envelope_len > rest.len() {
                return Err(DecodeError::Malformed("envelope length exceeds the record"));
            }
            let (envelope, body) = rest.split_at(envelope_len);
            Record::Message { id, envelope, body }
        }
        KIND_UPDATE => Record::Update {
            id,
            envelope: payload,
        },
        KIND_REMOVE if payload.is_empty() => Record::Remove { id },
        KIND_REMOVE => return Err(DecodeError::Malformed("remove record has trailing bytes")),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok((record, FRAME_HEADER_LEN + len as usize))
}

fn split_id(payload: &[u8]) -> Result<(MessageId, &[u8]), DecodeError> {
    let (id, rest) = payload
        .split_first_chunk::<ID_LEN>()
        .ok_or(DecodeError::Malformed("record shorter than a message id"))?;
    Ok((MessageId::from_le_bytes(*id), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let id = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        let msg = encode_message(id, b"env", b"the body").expect("fits");
        assert_eq!(msg.len(), message_record_size(3, 8).expect("fits"));
        assert_eq!(
            decode(&msg),
            Ok((
                Record::Message {
                    id,
                    envelope: b"env",
                    body: b"the body"
                },
                msg.len()
            ))
        );

        let upd = encode_update(id, b"new env").expect("fits");
        assert_eq!(
            decode(&upd),
            Ok((
                Record::Update {
                    id,
                    envelope: b"new env"
                },
                upd.len()
            ))
        );

        let rm = encode_remove(id);
        assert_eq!(decode(&rm), Ok((Record::Remove { id }, rm.len())));
    }

    #[test]
    fn empty_envelope_and_body_are_fine() {
        let msg = encode_message(7, b"", b"").expect("fits");
        assert_eq!(
            decode(&msg),
            Ok((
                Record::Message {
                    id: 7,
                    envelope: b"",
                    body: b""
                },
                msg.len()
            ))
        );
    }

    #[test]
    fn decodes_back_to_back_records() {
        let mut buf = encode_message(1, b"a", b"b").expect("fits");
        buf.extend(encode_remove(1));
        let (first, size) = decode(&buf).expect("first");
        assert!(matches!(first, Record::Message { id: 1, .. }));
        assert_eq!(
            decode(&buf[size..]),
            Ok((Record::Remove { id: 1 }, buf.len() - size))
        );
    }

    #[test]
    fn every_prefix_is_truncated_or_bad() {
        let msg = encode_message(1, b"envelope", b"body bytes").expect("fits");
        for cut in 0..msg.len() {
            assert!(
                decode(&msg[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let msg = encode_message(1, b"envelope", b"body bytes").expect("fits");
        for byte in 0..msg.len() {
            for bit in 0..8 {
                let mut bad = msg.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeroes_are_not_a_record() {
        assert_eq!(decode(&[0; 64]), Err(DecodeError::BadLength(0)));
    }

    #[test]
    fn oversized_messages_are_refused() {
        assert!(message_record_size(MAX_RECORD_LEN as usize, 0).is_none());
        assert!(message_record_size(usize::MAX, 1).is_none());
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(42), "segment-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("segment-42.log"), None);
        assert_eq!(
            parse_segment_file_name("segment-0000000000000000004x.log"),
            None
        );
        assert_eq!(parse_segment_file_name("LOCK"), None);
    }

    #[test]
    fn headers() {
        assert_eq!(check_header(&SEGMENT_HEADER), HeaderCheck::Valid);
        assert_eq!(check_header(b""), HeaderCheck::Unfinished);
        assert_eq!(check_header(b"KEEL"), HeaderCheck::Unfinished);
        assert_eq!(
            check_header(b"KEELSPL2"),
            HeaderCheck::UnsupportedVersion(b'2')
        );
        assert_eq!(check_header(b"NOTASPOOLFILE"), HeaderCheck::Foreign);
        assert_eq!(check_header(b"\0\0"), HeaderCheck::Foreign);
    }
}
