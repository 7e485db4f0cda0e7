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
