//! Parsing of the duration and size strings used in specs (`30s`, `7d`, `10Gi`).

use std::time::Duration;

/// A duration or size string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct UnitError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Parses `<n>s|m|h|d`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError { what: "duration", value: s.to_string(), expected: "<number>s|m|h|d" };
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| err())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(err)?,
        "h" => n.checked_mul(3600).ok_or_else(err)?,
        "d" => n.checked_mul(86400).ok_or_else(err)?,
        _ => return Err(err()),
    };
    Ok(Duration::from_secs(secs))
}

/// Parses a byte size: a number with an optional `K|M|G|T` (powers of 1000) or
/// `Ki|Mi|Gi|Ti` (powers of 1024) suffix.
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError { what: "size", value: s.to_string(), expected: "<number>[K|M|G|T|Ki|Mi|Gi|Ti]" };
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| err())?;
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// `1536` → `1.5Ki`, for printer columns.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n}") } else { format!("{v:.1}{}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("10Gi").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("5M").unwrap(), 5_000_000);
        assert_eq!(parse_bytes("42").unwrap(), 42);
        assert!(parse_bytes("1Xi").is_err());
        assert!(parse_bytes("").is_err());
        assert_eq!(human_bytes(1536), "1.5Ki");
        assert_eq!(human_bytes(12), "12");
    }
}
