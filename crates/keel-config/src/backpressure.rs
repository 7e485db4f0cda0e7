//! `[smtp.backpressure]`: the thresholds at which SMTP ingress sheds load.
//!
//! Three resources are watched (spool disk free space, the daemon's memory, queued messages),
//! each with three thresholds, one per stage: *slow* (replies are delayed), *defer* (`452` at
//! MAIL/RCPT) and *refuse* (`421` at connect). Each threshold may be `"none"` to leave that stage
//! out for that resource. The thresholds of one resource must be ordered (free space falling,
//! memory and queue rising), or a stage could never be reached; a misordered set is reported at
//! the key that breaks the order.
//!
//! ```toml
//! [smtp.backpressure]
//! disk_free_slow = "2GB"
//! disk_free_defer = "1GB"
//! disk_free_refuse = "500MB"
//! memory_slow = "4GB"
//! memory_defer = "6GB"
//! memory_refuse = "8GB"
//! queued_slow = 500000
//! queued_defer = 1000000
//! queued_refuse = 2000000
//! tarpit = "1s"          # delay of each MAIL reply in the slow stage
//! ```

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::defaults as d;
use crate::raw::{DurationText, Int, RawSize};
use crate::units;
use crate::validate::Validator;

/// `[smtp.backpressure]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawBackpressure {
    pub(crate) disk_free_slow: Option<Spanned<RawSize>>,
    pub(crate) disk_free_defer: Option<Spanned<RawSize>>,
    pub(crate) disk_free_refuse: Option<Spanned<RawSize>>,
    pub(crate) memory_slow: Option<Spanned<RawSize>>,
    pub(crate) memory_defer: Option<Spanned<RawSize>>,
    pub(crate) memory_refuse: Option<Spanned<RawSize>>,
    pub(crate) queued_slow: Option<Spanned<RawCount>>,
    pub(crate) queued_defer: Option<Spanned<RawCount>>,
    pub(crate) queued_refuse: Option<Spanned<RawCount>>,
    pub(crate) tarpit: Option<Spanned<DurationText>>,
}

/// A count or `"none"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "an integer or \"none\"")]
pub(crate) enum RawCount {
    Count(Int),
    Text(String),
}

/// Three thresholds of one resource, one per stage; `None`: that stage is not triggered by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    pub slow: Option<u64>,
    pub defer: Option<u64>,
    pub refuse: Option<u64>,
}

/// `[smtp.backpressure]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackpressureConfig {
    /// Free bytes on the spool's filesystem *below* which each stage starts.
    pub disk_free: Thresholds,
    /// Resident memory of the daemon (bytes) *above* which each stage starts.
    pub memory: Thresholds,
    /// Live messages in the spool *above* which each stage starts.
    pub queued: Thresholds,
    /// How long each MAIL reply is held back in the slow stage.
    pub tarpit: Duration,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            disk_free: d::BACKPRESSURE_DISK_FREE,
            memory: d::BACKPRESSURE_MEMORY,
            queued: d::BACKPRESSURE_QUEUED,
            tarpit: d::BACKPRESSURE_TARPIT,
        }
    }
}

fn is_none(text: &str) -> bool {
    let t = text.trim();
    t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("off")
}

impl Validator<'_, '_> {
    pub(crate) fn backpressure(&mut self, raw: Option<&RawBackpressure>) -> BackpressureConfig {
        let mut cfg = BackpressureConfig::default();
        let Some(raw) = raw else { return cfg };
        let key = |name: &str| format!("smtp.backpressure.{name}");
        let mut size = |v: Option<&Spanned<RawSize>>, name: &str, default: Option<u64>| {
            let Some(v) = v else { return default };
            if let RawSize::Text(t) = v.get_ref()
                && is_none(t)
            {
                return None;
            }
            Some(self.size(Some(v), &key(name), default.unwrap_or(1)))
        };
        let disk = [
            size(
                raw.disk_free_slow.as_ref(),
                "disk_free_slow",
                cfg.disk_free.slow,
            ),
            size(
                raw.disk_free_defer.as_ref(),
                "disk_free_defer",
                cfg.disk_free.defer,
            ),
            size(
                raw.disk_free_refuse.as_ref(),
                "disk_free_refuse",
                cfg.disk_free.refuse,
            ),
        ];
        let memory = [
            size(raw.memory_slow.as_ref(), "memory_slow", cfg.memory.slow),
            size(raw.memory_defer.as_ref(), "memory_defer", cfg.memory.defer),
            size(
                raw.memory_refuse.as_ref(),
                "memory_refuse",
                cfg.memory.refuse,
            ),
        ];
        let mut count = |v: Option<&Spanned<RawCount>>, name: &str, default: Option<u64>| {
            let Some(v) = v else { return default };
            match v.get_ref() {
                RawCount::Text(t) if is_none(t) => None,
                RawCount::Count(Int(n)) if *n >= 1 => Some(*n as u64),
                RawCount::Count(Int(n)) => {
                    self.error(v.span(), &key(name), format!("must be at least 1, got {n}"));
                    default
                }
                RawCount::Text(t) => {
                    self.error(
                        v.span(),
                        &key(name),
                        format!("expected a count or \"none\", got {t:?}"),
                    );
                    default
                }
            }
        };
        let queued = [
            count(raw.queued_slow.as_ref(), "queued_slow", cfg.queued.slow),
            count(raw.queued_defer.as_ref(), "queued_defer", cfg.queued.defer),
            count(
                raw.queued_refuse.as_ref(),
                "queued_refuse",
                cfg.queued.refuse,
            ),
        ];
        // Order checks: report at the later stage's key, which is the one that cannot be reached.
        let spans_size = [
            raw.disk_free_slow.as_ref().map(|s| s.span()),
            raw.disk_free_defer.as_ref().map(|s| s.span()),
            raw.disk_free_refuse.as_ref().map(|s| s.span()),
        ];
        let names = ["slow", "defer", "refuse"];
        for i in 1..3 {
            if let (Some(prev), Some(this)) = (disk[i - 1], disk[i])
                && this > prev
            {
                let span = spans_size[i].clone().or(spans_size[i - 1].clone());
                self.error(
                    span.unwrap_or(0..0),
                    &key(&format!("disk_free_{}", names[i])),
                    format!(
                        "must not be more than disk_free_{} ({prev} bytes): free space falls through slow, defer, refuse",
                        names[i - 1]
                    ),
                );
            }
        }
        let spans_mem = [
            raw.memory_slow.as_ref().map(|s| s.span()),
            raw.memory_defer.as_ref().map(|s| s.span()),
            raw.memory_refuse.as_ref().map(|s| s.span()),
        ];
        let spans_q = [
            raw.queued_slow.as_ref().map(|s| s.span()),
            raw.queued_defer.as_ref().map(|s| s.span()),
            raw.queued_refuse.as_ref().map(|s| s.span()),
        ];
        for (values, spans, what) in [
            (&memory, &spans_mem, "memory"),
            (&queued, &spans_q, "queued"),
        ] {
            for i in 1..3 {
                if let (Some(prev), Some(this)) = (values[i - 1], values[i])
                    && this < prev
                {
                    let span = spans[i].clone().or(spans[i - 1].clone());
                    self.error(
                        span.unwrap_or(0..0),
                        &key(&format!("{what}_{}", names[i])),
                        format!(
                            "must not be less than {what}_{} ({prev}): use rises through slow, defer, refuse",
                            names[i - 1]
                        ),
                    );
                }
            }
        }
        let thresholds = |v: [Option<u64>; 3]| Thresholds {
            slow: v[0],
            defer: v[1],
            refuse: v[2],
        };
        cfg.disk_free = thresholds(disk);
        cfg.memory = thresholds(memory);
        cfg.queued = thresholds(queued);
        if let Some(t) = &raw.tarpit {
            match units::parse_duration(&t.get_ref().0) {
                Ok(dur) => cfg.tarpit = dur,
                Err(e) => self.error(t.span(), &key("tarpit"), e.0),
            }
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::time::Duration;

    #[test]
    fn defaults_and_values() {
        let cfg = Config::parse("", "k.toml").expect("empty config");
        assert_eq!(cfg.smtp.backpressure, super::BackpressureConfig::default());
        assert_eq!(cfg.smtp.timeouts.session, Duration::from_secs(1800));
        assert_eq!(
            cfg.smtp.max_connection_rate_per_ip.map(|r| r.to_string()),
            Some("300/min".to_string())
        );
        let text = "[smtp]\nmax_connection_rate_per_ip = \"none\"\n[smtp.timeouts]\nsession = \"2m\"\nmessage = \"1m\"\n\
                    [smtp.backpressure]\ndisk_free_slow = \"none\"\ndisk_free_defer = \"20MB\"\n\
                    disk_free_refuse = 1000\nqueued_slow = 10\nqueued_defer = \"none\"\ntarpit = \"250ms\"\n";
        let cfg = Config::parse(text, "k.toml").expect("valid");
        let b = &cfg.smtp.backpressure;
        assert_eq!(cfg.smtp.max_connection_rate_per_ip, None);
        assert_eq!(cfg.smtp.timeouts.session, Duration::from_secs(120));
        assert_eq!(cfg.smtp.timeouts.message, Duration::from_secs(60));
        assert_eq!(b.disk_free.slow, None);
        assert_eq!(b.disk_free.defer, Some(20 * 1024 * 1024));
        assert_eq!(b.disk_free.refuse, Some(1000));
        assert_eq!(b.queued.slow, Some(10));
        assert_eq!(b.queued.defer, None);
        assert_eq!(b.tarpit, Duration::from_millis(250));
    }

    #[test]
    fn errors_point_at_the_key() {
        let text = "[smtp]\nmax_connection_rate_per_ip = \"lots\"\n[smtp.timeouts]\nsession = \"0s\"\n\
                    [smtp.backpressure]\ndisk_free_slow = \"1GB\"\ndisk_free_defer = \"2GB\"\n\
                    memory_slow = \"4GB\"\nmemory_defer = \"1GB\"\nqueued_refuse = 0\n";
        let errors = Config::parse(text, "k.toml").unwrap_err().to_string();
        for needle in [
            "k.toml:2:30: smtp.max_connection_rate_per_ip: invalid rate \"lots\"",
            "k.toml:4:11: smtp.timeouts.session: must be greater than zero",
            "k.toml:7:19: smtp.backpressure.disk_free_defer: must not be more than disk_free_slow",
            "k.toml:9:16: smtp.backpressure.memory_defer: must not be less than memory_slow",
            "k.toml:10:17: smtp.backpressure.queued_refuse: must be at least 1",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
    }
}
