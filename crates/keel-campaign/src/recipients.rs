//! Recipient lists, read as a stream: a JSON array (`[{"email": ..., "vars": {...}}, ...]`) or
//! NDJSON (one recipient object per line), never held whole in memory.
//!
//! [`RecipientReader`] is sans-I/O: the caller [`push`](RecipientReader::push)es bytes as they
//! arrive (an HTTP body chunk, a file read) and pulls recipients with
//! [`next_item`](RecipientReader::next_item) until it answers `None` (wants more input). The
//! reader keeps only the bytes of the recipient it is in the middle of, plus what was pushed and
//! not yet pulled: memory is bounded by the caller's chunk size plus
//! [`ReaderLimits::max_record_bytes`], however long the list. A record longer than that is a [`StreamError`] as soon as it passes
//! the limit, not when it ends.
//!
//! Two kinds of trouble, kept apart on purpose:
//! - **a recipient that cannot be used** — not an object of the right shape, an invalid address,
//!   a duplicate — is an [`Item::Rejected`] with its index and reason; the list goes on;
//! - **a broken stream** — JSON syntax error, a record over the limit, an array that never
//!   closes — is a [`StreamError`]: after it nothing can be trusted about where records start,
//!   so the request fails.
//!
//! Duplicates (same address, compared case-insensitively) are found with a set of 64-bit keyed
//! hashes (SipHash with a random key per reader), 8 bytes per recipient rather than the
//! address: a million recipients cost about 16 MB of set, and a false "duplicate" needs a
//! 64-bit collision (about 3·10⁻⁸ for a million addresses), which an attacker cannot aim for
//! without the key.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use crate::address::check_address;
use crate::request::RecipientInput;

/// One recipient that passed the screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    /// Position in the request's list, from 0 (rejected ones count too), so rejections and
    /// later events can name it.
    pub index: u64,
    /// Normalised address.
    pub email: String,
    pub vars: serde_json::Map<String, serde_json::Value>,
}

/// A recipient that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub index: u64,
    /// The address as given, when there was one.
    pub email: Option<String>,
    pub reason: RejectionReason,
}

/// Why a recipient was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectionReason {
    /// The address would not be accepted as a `RCPT TO`.
    InvalidAddress(String),
    /// The same address appeared earlier in this request.
    Duplicate,
    /// Valid JSON, but not a recipient object (`{"email": ..., "vars": {...}}`).
    Malformed(String),
}

impl Rejection {
    /// The field path of the problem, e.g. `recipients[3].email`.
    pub fn field(&self) -> String {
        match self.reason {
            RejectionReason::InvalidAddress(_) | RejectionReason::Duplicate => {
                format!("recipients[{}].email", self.index)
            }
            RejectionReason::Malformed(_) => format!("recipients[{}]", self.index),
        }
    }

    /// A short machine-readable reason for API answers: `invalid_address`, `duplicate`,
    /// `malformed`.
    pub fn code(&self) -> &'static str {
        match self.reason {
            RejectionReason::InvalidAddress(_) => "invalid_address",
            RejectionReason::Duplicate => "duplicate",
            RejectionReason::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field())?;
        match &self.reason {
            RejectionReason::InvalidAddress(why) => f.write_str(why),
            RejectionReason::Duplicate => write!(
                f,
                "{} appears earlier in this request",
                self.email.as_deref().unwrap_or("the address")
            ),
            RejectionReason::Malformed(why) => f.write_str(why),
        }
    }
}

/// The per-recipient checks shared by inline and streamed lists: address validity and
/// duplicates.
#[derive(Debug)]
pub struct Screen {
    seen: HashSet<u64>,
    hasher: RandomState,
}

impl Default for Screen {
    fn default() -> Self {
        Screen::new()
    }
}

impl Screen {
    pub fn new() -> Screen {
        Screen {
            seen: HashSet::new(),
            hasher: RandomState::new(),
        }
    }

    /// Checks recipient number `index`.
    pub fn check(&mut self, index: u64, input: RecipientInput) -> Result<Recipient, Rejection> {
        let email =
            check_address(&format!("recipients[{index}].email"), &input.email).map_err(|e| {
                Rejection {
                    index,
                    email: Some(input.email.clone()),
                    reason: RejectionReason::InvalidAddress(e.message),
                }
            })?;
        if !self.seen.insert(self.hasher.hash_one(email.to_lowercase())) {
            return Err(Rejection {
                index,
                email: Some(email),
                reason: RejectionReason::Duplicate,
            });
        }
        Ok(Recipient {
            index,
            email,
            vars: input.vars,
        })
    }

    /// Distinct addresses accepted so far.
    pub fn accepted(&self) -> usize {
        self.seen.len()
    }
}

/// How the list is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON array of recipient objects (whitespace anywhere JSON allows it).
    JsonArray,
    /// One recipient object per line (`\n` or `\r\n`); blank lines are skipped.
    Ndjson,
}

/// Bounds of one reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Longest single recipient record (its JSON text), vars included.
    pub max_record_bytes: usize,
    /// Most recipients in one list (rejected ones included).
    pub max_recipients: u64,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits {
            max_record_bytes: 64 * 1024,
            max_recipients: 10_000_000,
        }
    }
}

/// What the reader yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Accepted(Recipient),
    Rejected(Rejection),
}

/// The stream itself is broken; `index` is the recipient being read when it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("recipients[{index}]: invalid JSON: {message}")]
    Syntax { index: u64, message: String },
    #[error("recipients[{index}]: the record is longer than {limit} bytes")]
    RecordTooLarge { index: u64, limit: usize },
    #[error("recipients: more than {limit} recipients")]
    TooManyRecipients { limit: u64 },
    #[error("recipients: the input ended {0}")]
    Truncated(&'static str),
}

impl StreamError {
    /// The field path for an API answer.
    pub fn field(&self) -> String {
        match self {
            StreamError::Syntax { index, .. } | StreamError::RecordTooLarge { index, .. } => {
                format!("recipients[{index}]")
            }
            _ => "recipients".to_string(),
        }
    }
}

/// Where the JSON-array framer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// After `[` or `,`: a value or (only right after `[`) the closing `]`.
    BeforeValue { first: bool },
    /// Inside a value that started at `start` (relative to `buf`).
    InValue(ValueScan),
    /// After a value: `,` or `]`.
    AfterValue,
    /// After the closing `]`: only whitespace may follow.
    Done,
}

/// Scanning one JSON value to find where it ends, without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueScan {
    start: usize,
    /// Open `{`/`[` not yet closed.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// A scalar (number, true, null...) ends at the first delimiter instead of a bracket.
    scalar: bool,
}

/// The streaming reader; see the module docs.
#[derive(Debug)]
pub struct RecipientReader {
    format: Format,
    limits: ReaderLimits,
    /// Pushed, not yet consumed bytes; `buf[..consumed]` is dead and dropped on the next push.
    buf: Vec<u8>,
    consumed: usize,
    /// Where scanning resumes (≥ `consumed`), so bytes are looked at once.
    scan: usize,
    state: ArrayState,
    ended: bool,
    next_index: u64,
    screen: Screen,
}

impl RecipientReader {
    pub fn new(format: Format, limits: ReaderLimits) -> RecipientReader {
        RecipientReader {
            format,
            limits,
            buf: Vec::new(),
            consumed: 0,
            scan: 0,
            state: ArrayState::Start,
            ended: false,
            next_index: 0,
            screen: Screen::new(),
        }
    }

    /// Adds input. Drain with [`next_item`](Self::next_item) before pushing more, or the buffer
    /// grows with what was pushed.
    pub fn push(&mut self, chunk: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(chunk);
    }

    /// Marks the end of input; [`next_item`](Self::next_item) then reports a truncated list.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The next recipient, `Ok(None)` when more input is needed (or, after [`end`](Self::end),
    /// when the list is complete).
    pub fn next_item(&mut self) -> Result<Option<Item>, StreamError> {
        let record = match self.format {
            Format::Ndjson => self.next_line()?,
            Format::JsonArray => self.next_value()?,
        };
        let Some((start, end)) = record else {
            return Ok(None);
        };
        let index = self.next_index;
        if index >= self.limits.max_recipients {
            return Err(StreamError::TooManyRecipients {
                limit: self.limits.max_recipients,
            });
        }
        self.next_index += 1;
        let item = self.decode(index, start, end)?;
        Ok(Some(item))
    }

    /// Recipients read so far (accepted and rejected).
    pub fn count(&self) -> u64 {
        self.next_index
    }

    /// Capacity of the internal buffer, in bytes: what the reader holds on to however long
    /// the list (for tests and metrics).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Drops consumed bytes so the buffer holds only the unread tail.
    fn compact(&mut self) {
        if self.consumed == 0 {
            return;
        }
        self.buf.drain(..self.consumed);
        self.scan -= self.consumed;
        if let ArrayState::InValue(v) = &mut self.state {
            v.start -= self.consumed;
        }
        self.consumed = 0;
    }

    /// Parses `buf[start..end]` into an item (the framer has already marked it consumed).
    fn decode(&mut self, index: u64, start: usize, end: usize) -> Result<Item, StreamError> {
        let parsed = serde_json::from_slice::<RecipientInput>(&self.buf[start..end]);
        match parsed {
            Ok(input) => Ok(match self.screen.check(index, input) {
                Ok(r) => Item::Accepted(r),
                Err(rejection) => Item::Rejected(rejection),
            }),
            Err(e) if e.is_data() => Ok(Item::Rejected(Rejection {
                index,
                email: None,
                reason: RejectionReason::Malformed(format!(
                    "not a recipient object {{\"email\": ..., \"vars\": {{...}}}}: {e}"
                )),
            })),
            Err(e) => Err(StreamError::Syntax {
                index,
                message: e.to_string(),
            }),
        }
    }

    fn too_large(&self) -> StreamError {
        StreamError::RecordTooLarge {
            index: self.next_index,
            limit: self.limits.max_record_bytes,
        }
    }

    /// NDJSON: the next non-blank line as (start, end) without its line end.
    fn next_line(&mut self) -> Result<Option<(usize, usize)>, StreamError> {
        loop {
            let rest = &self.buf[self.scan..];
            let (line_end, next) = match memchr_newline(rest) {
                Some(i) => (self.scan + i, self.scan + i + 1),
                None => {
                    let pending = self.buf.len() - self.consumed;
                    if pending > self.limits.max_record_bytes {
                        return Err(self.too_large());
                    }
                    self.scan = self.buf.len();
                    if !self.ended || pending == 0 {
                        return Ok(None);
                    }
                    // The last line has no newline: it still counts.
                    (self.buf.len(), self.buf.len())
                }
            };
            let start = self.consumed;
            let mut end = line_end;
            if end > start && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            if end - start > self.limits.max_record_bytes {
                return Err(self.too_large());
            }
            self.scan = next;
            if self.buf[start..end].iter().all(u8::is_ascii_whitespace) {
                self.consumed = next;
                continue;
            }
            self.consumed = next;
            return Ok(Some((start, end)));
        }
    }

    /// JSON array: the next element as (start, end).
    fn next_value(&mut self) -> Result<Option<(usize, usize)>, StreamError> {
        while self.scan < self.buf.len() {
            let b = self.buf[self.scan];
            match &mut self.state {
                ArrayState::Start => {
                    if !b.is_ascii_whitespace() {
                        if b != b'[' {
                            return Err(self.syntax("a recipient list must start with `[`"));
                        }
                        self.state = ArrayState::BeforeValue { first: true };
                    }
                    self.scan += 1;
                    self.consumed = self.scan;
                }
                ArrayState::BeforeValue { first } => {
                    if b.is_ascii_whitespace() {
                        self.scan += 1;
                        self.consumed = self.scan;
                    } else if b == b']' && *first {
                        self.state = ArrayState::Done;
                        self.scan += 1;
                        self.consumed = self.scan;
                    } else if b == b']' || b == b',' {
                        return Err(self.syntax("expected a recipient after `,`"));
                    } else {
                        self.state = ArrayState::InValue(ValueScan {
                            start: self.scan,
                            depth: 0,
                            in_string: false,
                            escaped: false,
                            scalar: !matches!(b, b'{' | b'[' | b'"'),
                        });
                    }
                }
                ArrayState::InValue(v) => {
                    let start = v.start;
                    let done_at = scan_value(v, &self.buf, &mut self.scan);
                    match done_at {
                        Some(end) => {
                            self.state = ArrayState::AfterValue;
                            self.consumed = end;
                            return Ok(Some((start, end)));
                        }
                        None => {
                            if self.buf.len() - start > self.limits.max_record_bytes {
                                return Err(self.too_large());
                            }
                        }
                    }
                }
                ArrayState::AfterValue => {
                    self.scan += 1;
                    self.consumed = self.scan;
                    match b {
                        b',' => self.state = ArrayState::BeforeValue { first: false },
                        b']' => self.state = ArrayState::Done,
                        b if b.is_ascii_whitespace() => {}
                        _ => return Err(self.syntax("expected `,` or `]` after a recipient")),
                    }
                }
                ArrayState::Done => {
                    if !b.is_ascii_whitespace() {
                        return Err(self.syntax("data after the end of the recipient list"));
                    }
                    self.scan += 1;
                    self.consumed = self.scan;
                }
            }
        }
        if self.ended {
            match self.state {
                ArrayState::Done => {}
                ArrayState::Start => return Err(StreamError::Truncated("before the list began")),
                _ => return Err(StreamError::Truncated("without the closing `]`")),
            }
        }
        Ok(None)
    }

    fn syntax(&self, message: &str) -> StreamError {
        StreamError::Syntax {
            index: self.next_index,
            message: message.to_string(),
        }
    }
}

/// Advances `scan` through one JSON value; `Some(end)` (exclusive) once the value is complete.
/// Objects, arrays and strings end at their closing byte; a scalar ends before the first
/// delimiter (`,`, `]`, whitespace), which stays unread for the array framer.
fn scan_value(v: &mut ValueScan, buf: &[u8], scan: &mut usize) -> Option<usize> {
    while *scan < buf.len() {
        let b = buf[*scan];
        if v.scalar {
            if b == b',' || b == b']' || b.is_ascii_whitespace() {
                return Some(*scan);
            }
            *scan += 1;
            continue;
        }
        *scan += 1;
        if v.in_string {
            if v.escaped {
                v.escaped = false;
            } else if b == b'\\' {
                v.escaped = true;
            } else if b == b'"' {
                v.in_string = false;
                if v.depth == 0 {
                    return Some(*scan);
                }
            }
            continue;
        }
        match b {
            b'"' => v.in_string = true,
            b'{' | b'[' => v.depth += 1,
            b'}' | b']' => {
                v.depth = v.depth.saturating_sub(1);
                if v.depth == 0 {
                    return Some(*scan);
                }
            }
            _ => {}
        }
    }
    None
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}
