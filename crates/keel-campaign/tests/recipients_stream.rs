//! The streaming recipient reader: JSON array and NDJSON, split at every byte, rejections with
//! their index, broken streams, and memory that does not grow with the list.

use keel_campaign::{Format, Item, ReaderLimits, RecipientReader, RejectionReason, StreamError};

/// Feeds `input` in chunks of `chunk` bytes, draining after each, then ends the input.
fn read_all(format: Format, input: &[u8], chunk: usize) -> Result<Vec<Item>, StreamError> {
    read_with(format, input, chunk, ReaderLimits::default())
}

fn read_with(
    format: Format,
    input: &[u8],
    chunk: usize,
    limits: ReaderLimits,
) -> Result<Vec<Item>, StreamError> {
    let mut reader = RecipientReader::new(format, limits);
    let mut items = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        reader.push(piece);
        while let Some(item) = reader.next_item()? {
            items.push(item);
        }
    }
    reader.end();
    while let Some(item) = reader.next_item()? {
        items.push(item);
    }
    Ok(items)
}

/// A compact description of items for comparisons: "3:a@x.example" or "4!duplicate".
fn summary(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            Item::Accepted(r) => format!("{}:{}", r.index, r.email),
            Item::Rejected(r) => format!("{}!{}", r.index, r.code()),
        })
        .collect()
}

const ARRAY: &str = r#"  [
  {"email": "ann@x.example", "vars": {"first_name": "Ann", "tags": ["a", "]", "}"], "note": "quote \" and \\ and , inside"}},
  {"email": "not-an-address"},
  {"email": "ANN@X.example", "vars": {}},
  5,
  {"mail": "typo@x.example"},
  "a string",
  {"email": "bob@y.example", "vars": {"n": 1.5, "ok": true, "none": null, "nested": {"deep": [1, [2, {"x": "}"}]]}}}
]  "#;

const ARRAY_EXPECTED: [&str; 7] = [
    "0:ann@x.example",
    "1!invalid_address",
    "2!duplicate",
    "3!malformed",
    "4!malformed",
    "5!malformed",
    "6:bob@y.example",
];

#[test]
fn json_array_at_every_split_and_byte_by_byte() {
    let whole = read_all(Format::JsonArray, ARRAY.as_bytes(), ARRAY.len()).unwrap();
    assert_eq!(summary(&whole), ARRAY_EXPECTED);
    for chunk in 1..=ARRAY.len() {
        let items = read_all(Format::JsonArray, ARRAY.as_bytes(), chunk).unwrap();
        assert_eq!(items, whole, "chunk size {chunk}");
    }
    // Vars survive intact.
    let Item::Accepted(ann) = &whole[0] else {
        panic!()
    };
    assert_eq!(ann.vars["note"], "quote \" and \\ and , inside");
    assert_eq!(ann.vars["tags"][2], "}");
    let Item::Rejected(dup) = &whole[2] else {
        panic!()
    };
    assert_eq!(dup.field(), "recipients[2].email");
    assert_eq!(dup.reason, RejectionReason::Duplicate);
    let Item::Rejected(bad) = &whole[1] else {
        panic!()
    };
    assert_eq!(
        bad.to_string(),
        "recipients[1].email: invalid address \"not-an-address\": address must be fully qualified (local@domain)"
    );
}

#[test]
fn ndjson_with_crlf_blank_lines_and_no_final_newline() {
    let input = "{\"email\": \"ann@x.example\", \"vars\": {\"first_name\": \"Ann\"}}\r\n\
                 \r\n\
                 \n\
                 {\"email\": \"bad address\"}\n\
                 [1, 2]\n\
                 {\"email\": \"ann@x.example\"}\n\
                 {\"email\": \"cy@z.example\"}";
    let whole = read_all(Format::Ndjson, input.as_bytes(), input.len()).unwrap();
    assert_eq!(
        summary(&whole),
        [
            "0:ann@x.example",
            "1!invalid_address",
            "2!malformed",
            "3!duplicate",
            "4:cy@z.example"
        ]
    );
    for chunk in 1..=input.len() {
        assert_eq!(
            read_all(Format::Ndjson, input.as_bytes(), chunk).unwrap(),
            whole,
            "chunk size {chunk}"
        );
    }
}

#[test]
fn empty_lists() {
    assert!(
        read_all(Format::JsonArray, b" [ ] \n", 1)
            .unwrap()
            .is_empty()
    );
    assert!(read_all(Format::Ndjson, b"", 1).unwrap().is_empty());
    assert!(
        read_all(Format::Ndjson, b"\n\r\n  \n", 1)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn broken_streams_are_errors_with_the_index() {
    let cases: &[(Format, &str, &str)] = &[
        (
            Format::JsonArray,
            "{\"email\": \"a@x.example\"}",
            "recipients[0]",
        ),
        (
            Format::JsonArray,
            "[{\"email\": \"a@x.example\"}, ]",
            "recipients[1]",
        ),
        (
            Format::JsonArray,
            "[{\"email\": \"a@x.example\"} {\"email\": \"b@x.example\"}]",
            "recipients[1]",
        ),
        (
            Format::JsonArray,
            "[{\"email\": \"a@x.example\"}",
            "recipients",
        ),
        (Format::JsonArray, "[{\"email\": \"a@x.exa", "recipients"),
        (Format::JsonArray, "[] x", "recipients[0]"),
        (Format::JsonArray, "", "recipients"),
        (Format::JsonArray, "[{\"email\": tru}]", "recipients[0]"),
        (
            Format::Ndjson,
            "{\"email\": \"a@x.example\"}\n{\"email\": \n",
            "recipients[1]",
        ),
        (
            Format::Ndjson,
            "{\"email\": \"a@x.example\"} trailing\n",
            "recipients[0]",
        ),
    ];
    for (format, input, field) in cases {
        for chunk in [1, 3, input.len().max(1)] {
            let err = read_all(*format, input.as_bytes(), chunk)
                .expect_err(&format!("{input:?} must fail"));
            assert_eq!(&err.field(), field, "{input:?}: {err}");
        }
    }
}

#[test]
fn an_oversized_record_fails_before_it_ends() {
    let limits = ReaderLimits {
        max_record_bytes: 1024,
        ..ReaderLimits::default()
    };
    // The record never ends: the reader must give up once it passed the limit.
    for format in [Format::JsonArray, Format::Ndjson] {
        let prefix = if format == Format::JsonArray { "[" } else { "" };
        let mut reader = RecipientReader::new(format, limits);
        reader.push(
            format!("{prefix}{{\"email\": \"a@x.example\", \"vars\": {{\"v\": \"").as_bytes(),
        );
        let mut result = Ok(None);
        for _ in 0..100 {
            reader.push(&[b'x'; 64]);
            result = reader.next_item();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(StreamError::RecordTooLarge {
                index: 0,
                limit: 1024
            })
        );
        assert!(reader.buffer_capacity() < 4096);
    }
}

#[test]
fn the_recipient_cap_is_enforced() {
    let limits = ReaderLimits {
        max_recipients: 2,
        ..ReaderLimits::default()
    };
    let input =
        b"{\"email\":\"a@x.example\"}\n{\"email\":\"b@x.example\"}\n{\"email\":\"c@x.example\"}\n";
    assert_eq!(
        read_with(Format::Ndjson, input, 7, limits),
        Err(StreamError::TooManyRecipients { limit: 2 })
    );
}

/// Streams `n` generated recipients through the reader in 8 KiB chunks, never materialising
/// the list: the generator makes each chunk just before it is pushed.
fn stream_generated(format: Format, n: u64) -> (u64, usize, usize) {
    const CHUNK: usize = 8 * 1024;
    let mut reader = RecipientReader::new(format, ReaderLimits::default());
    let record = |i: u64| {
        format!(
            "{{\"email\": \"user{i}@domain{}.example\", \"vars\": {{\"first_name\": \"Name{i}\", \"code\": \"C{i:08}\", \"n\": {i}}}}}",
            i % 97
        )
    };
    let mut pending = String::new();
    if format == Format::JsonArray {
        pending.push('[');
    }
    let (mut accepted, mut next, mut cap_early, mut cap_max) = (0u64, 0u64, 0usize, 0usize);
    let drain = |reader: &mut RecipientReader, accepted: &mut u64| {
        while let Some(item) = reader.next_item().expect("valid stream") {
            match item {
                Item::Accepted(r) => {
                    assert_eq!(r.index, *accepted);
                    *accepted += 1;
                }
                Item::Rejected(r) => panic!("unexpected rejection {r}"),
            }
        }
    };
    while next < n || !pending.is_empty() {
        while pending.len() < CHUNK && next < n {
            pending.push_str(&record(next));
            next += 1;
            pending.push_str(match (format, next == n) {
                (Format::Ndjson, _) => "\n",
                (Format::JsonArray, false) => ",\n",
                (Format::JsonArray, true) => "]\n",
            });
        }
        let take = pending.len().min(CHUNK);
        reader.push(&pending.as_bytes()[..take]);
        pending.drain(..take);
        drain(&mut reader, &mut accepted);
        cap_max = cap_max.max(reader.buffer_capacity());
        if next <= 1000 {
            cap_early = cap_max;
        }
    }
    reader.end();
    drain(&mut reader, &mut accepted);
    (accepted, cap_early, cap_max)
}

#[test]
fn a_100k_recipient_stream_is_read_with_bounded_memory() {
    for format in [Format::Ndjson, Format::JsonArray] {
        let (accepted, cap_early, cap_max) = stream_generated(format, 100_000);
        assert_eq!(accepted, 100_000, "{format:?}");
        // The buffer holds one chunk plus at most one partial record, and stops growing after
        // the first chunks: the 100,000th recipient costs the reader no more than the 1,000th.
        assert!(
            cap_max <= 2 * 8 * 1024 + 1024,
            "{format:?}: buffer grew to {cap_max} bytes"
        );
        assert_eq!(
            cap_max, cap_early,
            "{format:?}: buffer kept growing with the list"
        );
    }
}
