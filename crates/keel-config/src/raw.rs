//! The config file as written: serde structs mirroring the TOML layout.
//!
//! Every key is optional and every leaf keeps its [`Spanned`] position, so
//! validation can point at the exact value it rejects. Values are kept as
//! the user wrote them (sizes and durations as text, counts as `i64`) and
//! only converted in `validate`, which can then report *all* bad values
//! instead of serde stopping at the first. Serde itself only rejects what
//! cannot be represented here at all: unknown keys (`deny_unknown_fields`)
//! and values of the wrong TOML type; `load` reports those one by one.
//!
//! The leaf wrappers below exist to give serde's type errors wording meant
//! for operators ("expected an integer") instead of Rust's ("expected i64").

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

/// `[smtp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawSmtp {
    pub(crate) listen: Option<Spanned<OneOrMany>>,
    pub(crate) hostname: Option<Spanned<String>>,
    pub(crate) max_message_size: Option<Spanned<RawSize>>,
    pub(crate) max_recipients: Option<Spanned<Int>>,
    pub(crate) relay_networks: Option<Spanned<OneOrMany>>,
    pub(crate) max_connections: Option<Spanned<Int>>,
    pub(crate) max_connections_per_ip: Option<Spanned<Int>>,
    pub(crate) timeouts: Option<RawSmtpTimeouts>,
    pub(crate) tls_cert: Option<Spanned<String>>,
    pub(crate) tls_key: Option<Spanned<String>>,
    pub(crate) tls_listen: Option<Spanned<OneOrMany>>,
    pub(crate) auth_plaintext_loopback: Option<Spanned<bool>>,
    pub(crate) max_auth_failures: Option<Spanned<Int>>,
    pub(crate) max_connection_rate_per_ip: Option<Spanned<String>>,
    pub(crate) backpressure: Option<crate::backpressure::RawBackpressure>,
    /// `[[smtp.user]]`, each with the span of its table.
    pub(crate) user: Option<Vec<Spanned<crate::smtp_auth::RawUser>>>,
}

/// `smtp.timeouts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawSmtpTimeouts {
    pub(crate) command: Option<Spanned<DurationText>>,
    pub(crate) data_block: Option<Spanned<DurationText>>,
    pub(crate) data_done: Option<Spanned<DurationText>>,
    pub(crate) greeting: Option<Spanned<DurationText>>,
    pub(crate) session: Option<Spanned<DurationText>>,
    pub(crate) message: Option<Spanned<DurationText>>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawHttp {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) api_tokens: Option<Vec<Spanned<String>>>,
    pub(crate) api_token_file: Option<Spanned<String>>,
}

/// `[spool]`: just a directory (`[log]` is `crate::log::RawLog`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawDir {
    pub(crate) dir: Option<Spanned<String>>,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawDns {
    pub(crate) nameservers: Option<Spanned<OneOrMany>>,
}

/// `[delivery]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawDelivery {
    pub(crate) port: Option<Spanned<Int>>,
    pub(crate) max_connections_per_destination: Option<Spanned<Int>>,
    pub(crate) max_messages_per_connection: Option<Spanned<Int>>,
    pub(crate) max_recipients_per_transaction: Option<Spanned<Int>>,
    pub(crate) connect_timeout: Option<Spanned<DurationText>>,
    pub(crate) timeouts: Option<RawDeliveryTimeouts>,
    pub(crate) idle_timeout: Option<Spanned<DurationText>>,
    pub(crate) starttls: Option<Spanned<String>>,
}

/// `delivery.timeouts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawDeliveryTimeouts {
    pub(crate) greeting: Option<Spanned<DurationText>>,
    pub(crate) ehlo: Option<Spanned<DurationText>>,
    pub(crate) mail: Option<Spanned<DurationText>>,
    pub(crate) rcpt: Option<Spanned<DurationText>>,
    pub(crate) data: Option<Spanned<DurationText>>,
    pub(crate) data_block: Option<Spanned<DurationText>>,
    pub(crate) data_done: Option<Spanned<DurationText>>,
}

/// One `[[route]]`. Both keys are required, but optional here so that a
/// missing one is reported by validation along with everything else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRoute {
    pub(crate) domain: Option<Spanned<String>>,
    pub(crate) smarthost: Option<Spanned<String>>,
}

/// `[retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawRetry {
    pub(crate) intervals: Option<Spanned<Vec<Spanned<DurationText>>>>,
    pub(crate) max_age: Option<Spanned<DurationText>>,
}

/// The whole file, assembled section by section by `load` (each section is
/// deserialized on its own so one bad section doesn't hide errors in the
/// others).
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub(crate) smtp: RawSmtp,
    pub(crate) http: RawHttp,
    pub(crate) spool: RawDir,
    pub(crate) log: crate::log::RawLog,
    pub(crate) dns: RawDns,
    pub(crate) delivery: RawDelivery,
    /// Each route with its index in the `route` array and the span of its
    /// `[[route]]` header (for "missing key" errors).
    pub(crate) routes: Vec<RawRouteEntry>,
    pub(crate) retry: RawRetry,
    pub(crate) shaping: crate::shaping::RawShaping,
    pub(crate) egress: crate::shaping::RawEgress,
    /// Each `[[dkim]]` with its index and header span.
    pub(crate) dkim: Vec<crate::dkim::RawDkimEntry>,
    /// The config file's directory, which relative DKIM key paths are resolved against;
    /// `None` for text given to `Config::parse`.
    pub(crate) config_dir: Option<std::path::PathBuf>,
}

/// A `[[route]]` table with where it is.
#[derive(Debug)]
pub(crate) struct RawRouteEntry {
    pub(crate) index: usize,
    pub(crate) header: std::ops::Range<usize>,
    pub(crate) route: RawRoute,
}

/// An integer, range-checked later by validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int(pub(crate) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("integer {v} is too large")))
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// A size as written: a number of bytes or a string with a unit.
#[derive(Debug, Clone)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"25MB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom(format!("size {v} is too large")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration string, parsed later by validation.
#[derive(Debug, Clone)]
pub(crate) struct DurationText(pub(crate) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A string or an array of strings: `listen = "a"` is the same as
/// `listen = ["a"]`, which saves the common single-value case a pair of
/// brackets.
#[derive(Debug, Clone)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;
        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

/// Flattens a [`OneOrMany`] into `(text, span, key suffix)` triples: the
/// single form is reported at the key itself, list items as `key[i]`.
pub(crate) fn items(value: &Spanned<OneOrMany>) -> Vec<(&str, std::ops::Range<usize>, String)> {
    match value.get_ref() {
        OneOrMany::One(text) => vec![(text.as_str(), value.span(), String::new())],
        OneOrMany::Many(list) => list
            .iter()
            .enumerate()
            .map(|(i, item)| (item.get_ref().as_str(), item.span(), format!("[{i}]")))
            .collect(),
    }
}
