//! `[log]`: where the JSON-lines event log lives, and when it is rotated and deleted.
//!
//! The daemon writes `<dir>/events.jsonl`. It renames that file to a timestamped segment when
//! it reaches `rotate_size` or when the clock passes a multiple of `rotate_interval`, then
//! compresses the segment in the background and deletes segments past `retention` or beyond
//! `max_files`. The keys live here rather than in `validate` because they are checked
//! together: a retention limit without any rotation would never delete anything, which is a
//! mistake worth reporting at the key rather than discovering when the disk fills.
//!
//! `rotate_size`, `rotate_interval` and `retention` also accept `"none"` (turn that limit
//! off), so an operator who ships logs with another tool can say so explicitly.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::defaults as d;
use crate::error::InvalidValue;
use crate::raw::{DurationText, Int, RawSize};
use crate::units;
use crate::validate::Validator;

/// Rotating more often than this would make a file per burst of mail and keep the
/// compressor busy for nothing.
const MIN_ROTATE_INTERVAL: Duration = Duration::from_secs(1);

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawLog {
    pub(crate) dir: Option<Spanned<String>>,
    pub(crate) rotate_size: Option<Spanned<RawSize>>,
    pub(crate) rotate_interval: Option<Spanned<DurationText>>,
    pub(crate) retention: Option<Spanned<DurationText>>,
    pub(crate) max_files: Option<Spanned<Int>>,
}

/// `[log]`: where JSON-lines event logs are written and how long they are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Log directory, as written: a relative path is relative to the
    /// daemon's working directory, not to the config file.
    pub dir: PathBuf,
    /// Rotate the live file once it holds at least this many bytes; `None`: never by size.
    pub rotate_size: Option<u64>,
    /// Rotate whenever the wall clock passes a multiple of this since the Unix epoch (so
    /// `1d` rotates at midnight UTC and `1h` on the hour); `None`: never by time. At least
    /// one second.
    pub rotate_interval: Option<Duration>,
    /// Delete rotated segments whose rotation time is older than this; `None`: keep them.
    pub retention: Option<Duration>,
    /// Keep at most this many rotated segments (the live file not counted), deleting the
    /// oldest first; `None`: no count limit.
    pub max_files: Option<usize>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(d::LOG_DIR),
            rotate_size: Some(d::LOG_ROTATE_SIZE),
            rotate_interval: Some(d::LOG_ROTATE_INTERVAL),
            retention: Some(d::LOG_RETENTION),
            max_files: None,
        }
    }
}

impl LogConfig {
    /// True if the live file is ever rotated.
    pub fn rotates(&self) -> bool {
        self.rotate_size.is_some() || self.rotate_interval.is_some()
    }
}

/// `"none"` (any case) turns a limit off.
fn is_none(text: &str) -> bool {
    text.trim().eq_ignore_ascii_case("none")
}

/// A positive size, or `"none"`.
fn size_or_none(value: &RawSize) -> Result<Option<u64>, InvalidValue> {
    let bytes = match value {
        RawSize::Text(text) if is_none(text) => return Ok(None),
        RawSize::Text(text) => units::parse_size(text)?,
        RawSize::Bytes(n) => u64::try_from(*n)
            .map_err(|_| InvalidValue(format!("size must not be negative, got {n}")))?,
    };
    if bytes == 0 {
        return Err(InvalidValue(
            "must be greater than zero (or \"none\" to rotate by time only)".into(),
        ));
    }
    Ok(Some(bytes))
}

/// A positive duration of at least `min`, or `"none"`.
fn duration_or_none(text: &str, min: Duration) -> Result<Option<Duration>, InvalidValue> {
    if is_none(text) {
        return Ok(None);
    }
    let duration = units::parse_duration(text)?;
    if duration < min.max(Duration::from_nanos(1)) {
        return Err(InvalidValue(if min.is_zero() {
            "must be greater than zero (or \"none\")".into()
        } else {
            format!(
                "must be at least {} (or \"none\")",
                humantime::format_duration(min)
            )
        }));
    }
    Ok(Some(duration))
}

impl Validator<'_, '_> {
    /// `[log]`: every key checked, limits that could never act reported.
    pub(crate) fn log(&mut self, raw: &RawLog) -> LogConfig {
        let defaults = LogConfig::default();
        let dir = match &raw.dir {
            None => defaults.dir,
            Some(dir) if dir.get_ref().trim().is_empty() => {
                self.error(dir.span(), "log.dir", "must not be empty");
                defaults.dir
            }
            Some(dir) => PathBuf::from(dir.get_ref()),
        };
        let rotate_size = match &raw.rotate_size {
            None => defaults.rotate_size,
            Some(value) => size_or_none(value.get_ref()).unwrap_or_else(|e| {
                self.error(value.span(), "log.rotate_size", e.0);
                defaults.rotate_size
            }),
        };
        let mut duration = |value: &Option<Spanned<DurationText>>, key, min, default| match value {
            None => default,
            Some(text) => duration_or_none(&text.get_ref().0, min).unwrap_or_else(|e| {
                self.error(text.span(), key, e.0);
                default
            }),
        };
        let rotate_interval = duration(
            &raw.rotate_interval,
            "log.rotate_interval",
            MIN_ROTATE_INTERVAL,
            defaults.rotate_interval,
        );
        let retention = duration(
            &raw.retention,
            "log.retention",
            Duration::ZERO,
            defaults.retention,
        );
        let max_files = raw
            .max_files
            .as_ref()
            .map(|n| self.count(Some(n), "log.max_files", 1));
        let config = LogConfig {
            dir,
            rotate_size,
            rotate_interval,
            retention,
            max_files,
        };
        if !config.rotates() {
            // Only limits the operator set (and did not set to "none") are worth a word.
            let set_retention = raw.retention.as_ref().filter(|_| retention.is_some());
            let limits = [
                ("log.retention", set_retention.map(Spanned::span)),
                ("log.max_files", raw.max_files.as_ref().map(Spanned::span)),
            ];
            for (key, span) in limits.into_iter().filter_map(|(k, s)| Some((k, s?))) {
                self.error(
                    span,
                    key,
                    "has no effect: with `rotate_size` and `rotate_interval` both \"none\" the \
                     event log is never rotated, so no segment is ever deleted",
                );
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Config;

    fn errors(text: &str) -> String {
        match Config::parse(text, "k.toml") {
            Ok(c) => panic!("expected errors, got {:#?}", c.log),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_rotate_daily_and_at_256mb_keeping_30_days() {
        let c = Config::parse("", "k.toml").unwrap();
        assert_eq!(c.log.rotate_size, Some(256 << 20));
        assert_eq!(c.log.rotate_interval, Some(Duration::from_secs(86_400)));
        assert_eq!(c.log.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(c.log.max_files, None);
        assert!(c.log.rotates());
    }

    #[test]
    fn parses_every_key_and_none() {
        let c = Config::parse(
            "[log]\ndir = \"/var/log/keel\"\nrotate_size = \"64KB\"\nrotate_interval = \"1h\"\n\
             retention = \"7d\"\nmax_files = 12\n",
            "k.toml",
        )
        .unwrap();
        assert_eq!(c.log.dir, std::path::PathBuf::from("/var/log/keel"));
        assert_eq!(c.log.rotate_size, Some(64 * 1024));
        assert_eq!(c.log.rotate_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.log.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.log.max_files, Some(12));

        let c = Config::parse(
            "[log]\nrotate_size = 1000\nrotate_interval = \"none\"\nretention = \"NONE\"\n",
            "k.toml",
        )
        .unwrap();
        assert_eq!(c.log.rotate_size, Some(1000));
        assert_eq!(c.log.rotate_interval, None);
        assert_eq!(c.log.retention, None);

        let c = Config::parse(
            "[log]\nrotate_size = \"none\"\nrotate_interval = \"none\"\nretention = \"none\"\n",
            "k.toml",
        )
        .unwrap();
        assert!(!c.log.rotates());
    }

    #[test]
    fn reports_bad_values_at_their_line_and_key() {
        let text = "[log]\nrotate_size = \"12XB\"\nrotate_interval = \"500ms\"\nretention = \"0s\"\n\
                    max_files = 0\ndir = \"\"\n";
        let e = errors(text);
        for needle in [
            "k.toml:2:15: log.rotate_size: invalid size \"12XB\"",
            "k.toml:3:19: log.rotate_interval: must be at least 1s (or \"none\")",
            "k.toml:4:13: log.retention: must be greater than zero (or \"none\")",
            "k.toml:5:13: log.max_files: must be at least 1, got 0",
            "k.toml:6:7: log.dir: must not be empty",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        let e = errors("[log]\nrotate_size = 0\n");
        assert!(
            e.contains("k.toml:2:15: log.rotate_size: must be greater than zero"),
            "{e}"
        );
        let e = errors("[log]\nrotate_interval = \"daily\"\n");
        assert!(
            e.contains("k.toml:2:19: log.rotate_interval: invalid duration"),
            "{e}"
        );
        let e = errors("[log]\nrotate = \"1d\"\n");
        assert!(
            e.contains("k.toml:2:1: log.rotate: unknown key `rotate`"),
            "{e}"
        );
    }

    #[test]
    fn retention_without_rotation_is_reported() {
        let e =
            errors("[log]\nrotate_size = \"none\"\nrotate_interval = \"none\"\nmax_files = 3\n");
        assert!(
            e.contains("k.toml:4:13: log.max_files: has no effect"),
            "{e}"
        );
        // The default retention is not the operator's doing: no error for it.
        assert!(
            Config::parse(
                "[log]\nrotate_size = \"none\"\nrotate_interval = \"none\"\n",
                "k.toml"
            )
            .is_ok()
        );
    }
}
