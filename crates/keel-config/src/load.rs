//! Reading and parsing: file → TOML document → [`RawConfig`] → [`Config`].
//!
//! The document is parsed once into `toml`'s spanned tree. Each top-level
//! section (and each `[[route]]`) is then deserialized on its own, and keys
//! serde rejects are reported and dropped before trying again, so one
//! unknown key or wrongly typed value never hides other errors. Value
//! checks in `validate` then report everything else.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::config::Config;
use crate::error::{ConfigError, ConfigErrors};
use crate::location::{KeyIndex, Reporter};
use crate::raw::{RawConfig, RawRoute, RawRouteEntry};
use crate::validate::validate;

/// The top-level tables, in the order the docs list them.
const SECTIONS: &str = "smtp, http, spool, log, dns, delivery, route, retry, shaping, egress, dkim";

/// Reads, parses and validates the file at `path`.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let mut config = parse_in(&text, &file, path.parent())?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses and validates config text; `file` is only used in messages.
pub(crate) fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    parse_in(text, file, None)
}

/// Parses and validates config text; relative DKIM key paths are resolved against
/// `config_dir` (the config file's directory) when given.
fn parse_in(text: &str, file: &str, config_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut reporter = Reporter::new(file, text);
    let config = match DeTable::parse(text) {
        Ok(document) => {
            let index = KeyIndex::new(document.get_ref());
            let mut raw = split_sections(document.into_inner(), &index, &mut reporter);
            raw.config_dir = config_dir.map(Path::to_path_buf);
            Some(validate(raw, &mut reporter))
        }
        Err(e) => {
            report_syntax_error(&e, text, &mut reporter);
            None
        }
    };
    let errors = reporter.finish();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(errors)),
    }
}

fn report_syntax_error(e: &toml::de::Error, text: &str, reporter: &mut Reporter<'_>) {
    let span = e.span().unwrap_or(0..0);
    // The parser says only "duplicate key"; naming it saves a search.
    let message = match text.get(span.clone()) {
        Some(key) if e.message() == "duplicate key" && !key.is_empty() => {
            format!("duplicate key `{key}`")
        }
        _ => e.message().to_owned(),
    };
    reporter.error(span, "", format!("TOML syntax error: {message}"));
}

/// Deserializes each top-level table into its raw struct.
fn split_sections(
    document: DeTable<'_>,
    index: &KeyIndex,
    reporter: &mut Reporter<'_>,
) -> RawConfig {
    let mut raw = RawConfig::default();
    for (key, value) in document {
        let name = key.get_ref().as_ref();
        match name {
            "smtp" => raw.smtp = section(value, index, reporter),
            "http" => raw.http = section(value, index, reporter),
            "spool" => raw.spool = section(value, index, reporter),
            "log" => raw.log = section(value, index, reporter),
            "dns" => raw.dns = section(value, index, reporter),
            "delivery" => raw.delivery = section(value, index, reporter),
            "retry" => raw.retry = section(value, index, reporter),
            "shaping" => raw.shaping = section(value, index, reporter),
            "egress" => raw.egress = section(value, index, reporter),
            "dkim" => raw.dkim = crate::dkim::entries(value, index, reporter),
            "route" => raw.routes = routes(value, index, reporter),
            _ => {
                let what = if value.get_ref().is_table() {
                    format!("unknown table [{name}]")
                } else {
                    format!("unknown key `{name}`")
                };
                reporter.error(
                    key.span(),
                    name,
                    format!("{what}; the top-level tables are: {SECTIONS}"),
                );
            }
        }
    }
    raw
}

/// Deserializes one section; anything serde rejects is reported and left
/// out, so the rest of the section is still checked (and defaulted).
fn section<'de, T>(value: Spanned<DeValue<'de>>, index: &KeyIndex, reporter: &mut Reporter<'_>) -> T
where
    T: Deserialize<'de> + Default,
{
    deserialize_collecting(value, index, reporter).unwrap_or_default()
}

/// Deserializes `value`, reporting every unknown key and wrongly typed value
/// rather than only the first.
///
/// Serde stops at the first error, so on each error the offending key (or
/// array element) is reported, removed from the tree, and deserialization
/// is retried. Each round removes one node, so this ends; the key names in
/// the reports come from `index`, built from the untouched document. `None`
/// if the value as a whole is unusable (say, `smtp = 5`).
pub(crate) fn deserialize_collecting<'de, T>(
    mut value: Spanned<DeValue<'de>>,
    index: &KeyIndex,
    reporter: &mut Reporter<'_>,
) -> Option<T>
where
    T: Deserialize<'de>,
{
    loop {
        let whole = value.span();
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(parsed) => return Some(parsed),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| whole.clone());
                report_serde_error(&e, span.clone(), index, reporter);
                if span == whole || !remove_at(value.get_mut(), &span) {
                    return None;
                }
            }
        }
    }
}

/// Removes the table entry whose key starts at `span` or whose value is
/// exactly `span`, or the array element that is `span`, searching the whole
/// tree. True if something was removed.
fn remove_at(value: &mut DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(table) => {
            let hit = table
                .iter()
                .find(|(k, v)| k.span().start == span.start || v.span() == *span)
                .map(|(k, _)| k.clone());
            match hit {
                Some(key) => table.remove(&key).is_some(),
                None => table.iter_mut().any(|(_, v)| remove_at(v.get_mut(), span)),
            }
        }
        DeValue::Array(array) => match array.iter().position(|e| e.span() == *span) {
            Some(at) => {
                if let DeValue::Array(old) = std::mem::replace(value, DeValue::Boolean(false)) {
                    let kept = old.into_iter().enumerate().filter(|(i, _)| *i != at);
                    *value = DeValue::Array(kept.map(|(_, e)| e).collect());
                }
                true
            }
            None => array.iter_mut().any(|e| remove_at(e.get_mut(), span)),
        },
        _ => false,
    }
}

/// `route` must be an array of tables (`[[route]]`); each is checked on its
/// own so every bad route is reported.
fn routes(
    value: Spanned<DeValue<'_>>,
    index: &KeyIndex,
    reporter: &mut Reporter<'_>,
) -> Vec<RawRouteEntry> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(array) => array
            .into_iter()
            .enumerate()
            .filter_map(|(i, element)| {
                let header = element.span();
                let route = deserialize_collecting::<RawRoute>(element, index, reporter)?;
                Some(RawRouteEntry {
                    index: i,
                    header,
                    route,
                })
            })
            .collect(),
        DeValue::Table(_) => {
            reporter.error(
                span,
                "route",
                "routes are an array of tables: write [[route]], not [route]",
            );
            Vec::new()
        }
        other => {
            let found = other.type_str();
            reporter.error(
                span,
                "route",
                format!("expected an array of tables ([[route]]), found {found}"),
            );
            Vec::new()
        }
    }
}

/// Reports a serde error at its span (or the section's, if it has none),
/// naming the key found there.
fn report_serde_error(
    e: &toml::de::Error,
    fallback: Range<usize>,
    index: &KeyIndex,
    reporter: &mut Reporter<'_>,
) {
    let span = e.span().unwrap_or(fallback);
    let key = index.key_at(&span).unwrap_or_default().to_owned();
    // serde speaks of struct fields; the file has keys.
    let message = match e.message().strip_prefix("unknown field") {
        Some(rest) => format!("unknown key{rest}"),
        None => e.message().to_owned(),
    };
    reporter.error(span, key, message);
}
