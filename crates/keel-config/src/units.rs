//! Sizes and durations as people write them.
//!
//! Sizes are binary: `KB` is 1024 bytes and `MB` is 1024 × 1024, matching
//! what mail administrators expect from Postfix-style limits (a "25MB" limit
//! that is 1 % smaller than 25 MiB would surprise more people than it would
//! please). `KiB`/`MiB`/`GiB` are accepted as exact synonyms, and so are the
//! one-letter forms `K`/`M`/`G`; units are case-insensitive.
//!
//! Durations use `humantime` syntax: `"30s"`, `"5m"`, `"1h 30m"`, `"3d"`.

use std::time::Duration;

use crate::error::InvalidValue;

/// Parses a byte size: `"1000"`, `"512KB"`, `"25MB"`, `"1 GiB"`.
///
/// Only whole numbers are accepted; `"1.5MB"` is rejected rather than
/// rounded, so the limit in effect is always exactly what is written.
pub fn parse_size(text: &str) -> Result<u64, InvalidValue> {
    let invalid = || {
        InvalidValue(format!(
            "invalid size {text:?}: expected a number with an optional unit (KB, MB, GB), e.g. \"25MB\""
        ))
    };
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| InvalidValue(format!("size {text:?} is too large")))
}

/// Parses a duration in `humantime` syntax: `"30s"`, `"5m"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidValue> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        InvalidValue(format!(
            "invalid duration {text:?}: {e}; expected e.g. \"30s\", \"5m\" or \"1h 30m\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_and_case_insensitive() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("512KB"), Ok(512 * 1024));
        assert_eq!(parse_size("25MB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("25mb"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("25 MiB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size(" 2G "), Ok(2 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        let message = parse_size("25XB").unwrap_err().0;
        assert_eq!(
            message,
            "invalid size \"25XB\": expected a number with an optional unit (KB, MB, GB), e.g. \"25MB\""
        );
        for bad in ["", "MB", "1.5MB", "-1", "25 M B", "0x10"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_size("99999999999GB").unwrap_err().0,
            "size \"99999999999GB\" is too large"
        );
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86400)));
        let message = parse_duration("5x").unwrap_err().0;
        assert!(
            message.starts_with("invalid duration \"5x\": unknown time unit \"x\""),
            "{message}"
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
    }
}

/// A rate as people write it: `"2000/h"`, `"50/s"`, `"10/min"`, `"1000/day"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many...
    pub count: u32,
    /// ...per this long.
    pub per: Duration,
}

impl Rate {
    /// The spacing between events at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            86400 => "day",
            _ => return write!(f, "{}/{}s", self.count, self.per.as_secs()),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Parses a rate; `"none"` (no limit) gives `None`.
pub fn parse_rate(text: &str) -> Result<Option<Rate>, InvalidValue> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let invalid = || {
        InvalidValue(format!(
            "invalid rate {text:?}: expected \"<count>/<s|min|h|day>\" such as \"2000/h\", or \"none\""
        ))
    };
    let (count, unit) = t.split_once('/').ok_or_else(invalid)?;
    let count: u32 = count.trim().parse().map_err(|_| invalid())?;
    if count == 0 {
        return Err(InvalidValue(format!(
            "invalid rate {text:?}: the count must be at least 1 (use \"none\" for no limit)"
        )));
    }
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86400,
        _ => return Err(invalid()),
    };
    Ok(Some(Rate {
        count,
        per: Duration::from_secs(secs),
    }))
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn rates() {
        let r = parse_rate("2000/h").unwrap().unwrap();
        assert_eq!((r.count, r.per.as_secs()), (2000, 3600));
        assert_eq!(r.interval(), Duration::from_millis(1800));
        assert_eq!(r.to_string(), "2000/h");
        assert_eq!(parse_rate("50/s").unwrap().unwrap().to_string(), "50/s");
        assert_eq!(
            parse_rate("1000/day").unwrap().unwrap().per.as_secs(),
            86400
        );
        assert_eq!(parse_rate("none").unwrap(), None);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("10/fortnight").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
