//! The event time from a parsed field: `rfc3339`, `unix` (seconds, fractions allowed),
//! `unixMillis`, `unixNanos`, or a strftime format read by chrono (`%d/%b/%Y:%H:%M:%S %z`). A
//! format without a time zone is read as UTC.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value};
use tailor_crds::collection::TimestampSpec;

use crate::pipeline::PipelineError;

/// A compiled timestamp setting.
#[derive(Clone, Debug)]
pub struct TimestampField {
    field: String,
    format: TimeFormat,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TimeFormat {
    Rfc3339,
    Unix,
    UnixMillis,
    UnixNanos,
    Strftime(String),
}

impl TimestampField {
    pub fn compile(spec: &TimestampSpec) -> Result<Self, PipelineError> {
        let format = match spec.format.as_str() {
            "rfc3339" | "RFC3339" | "iso8601" => TimeFormat::Rfc3339,
            "unix" => TimeFormat::Unix,
            "unixMillis" | "unix_ms" => TimeFormat::UnixMillis,
            "unixNanos" | "unix_ns" => TimeFormat::UnixNanos,
            other => {
                if other.is_empty() || StrftimeItems::new(other).any(|item| matches!(item, Item::Error)) {
                    return Err(PipelineError::InvalidTimestampFormat { format: other.to_owned() });
                }
                TimeFormat::Strftime(other.to_owned())
            }
        };
        Ok(Self { field: spec.field.clone(), format })
    }

    /// The field this reads (a dotted path reaches into nested objects).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Nanoseconds since the epoch, or `None` when the field is missing or does not match.
    pub fn extract(&self, fields: &Map<String, Value>) -> Option<i64> {
        let value = lookup(fields, &self.field)?;
        match (&self.format, value) {
            (TimeFormat::Rfc3339, Value::String(s)) => {
                DateTime::parse_from_rfc3339(s.trim()).ok().and_then(|t| t.timestamp_nanos_opt())
            }
            (TimeFormat::Unix, v) => scaled(v, 1_000_000_000),
            (TimeFormat::UnixMillis, v) => scaled(v, 1_000_000),
            (TimeFormat::UnixNanos, v) => scaled(v, 1),
            (TimeFormat::Strftime(format), Value::String(s)) => parse_strftime(s.trim(), format),
            _ => None,
        }
    }
}

/// A top-level field, else a dotted path into nested objects.
pub fn lookup<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = fields.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = fields.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn parse_strftime(s: &str, format: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_str(s, format) {
        return t.timestamp_nanos_opt();
    }
    NaiveDateTime::parse_from_str(s, format).ok().and_then(|t| t.and_utc().timestamp_nanos_opt())
}

/// A number (or a numeric string) of units of `nanos_per_unit` nanoseconds.
fn scaled(value: &Value, nanos_per_unit: i64) -> Option<i64> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.checked_mul(nanos_per_unit)
            } else {
                // Whole units and the fraction apart, so that 1714557600.25 s stays exact.
                let f = n.as_f64()?;
                let whole = f.trunc();
                if !f.is_finite() || whole.abs() * nanos_per_unit as f64 >= i64::MAX as f64 {
                    return None;
                }
                let fraction = (f.fract() * nanos_per_unit as f64).round() as i64;
                (whole as i64).checked_mul(nanos_per_unit)?.checked_add(fraction)
            }
        }
        Value::String(s) => decimal(s.trim(), nanos_per_unit),
        _ => None,
    }
}

/// Exact decimal scaling (`1714557600.123456789` seconds loses nothing to floating point).
fn decimal(s: &str, nanos_per_unit: i64) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut nanos = whole.parse::<i64>().ok()?.checked_mul(nanos_per_unit)?;
    let mut unit = nanos_per_unit;
    for digit in fraction.bytes() {
        unit /= 10;
        if unit == 0 {
            break;
        }
        nanos = nanos.checked_add(i64::from(digit - b'0') * unit)?;
    }
    Some(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn extract(format: &str, value: Value) -> Option<i64> {
        let spec = TimestampSpec { field: "t".into(), format: format.into() };
        let fields = json!({ "t": value });
        TimestampField::compile(&spec).unwrap().extract(fields.as_object().unwrap())
    }

    const T: i64 = 1_714_557_600_000_000_000; // 2024-05-01T10:00:00Z

    #[test]
    fn formats() {
        assert_eq!(extract("rfc3339", json!("2024-05-01T10:00:00Z")), Some(T));
        assert_eq!(extract("rfc3339", json!("2024-05-01T12:00:00.5+02:00")), Some(T + 500_000_000));
        assert_eq!(extract("unix", json!(1_714_557_600)), Some(T));
        assert_eq!(extract("unix", json!("1714557600.123456789")), Some(T + 123_456_789));
        assert_eq!(extract("unix", json!(1_714_557_600.25)), Some(T + 250_000_000));
        assert_eq!(extract("unixMillis", json!(1_714_557_600_123_i64)), Some(T + 123_000_000));
        assert_eq!(extract("unixMillis", json!("1714557600123")), Some(T + 123_000_000));
        assert_eq!(extract("%d/%b/%Y:%H:%M:%S %z", json!("01/May/2024:12:00:00 +0200")), Some(T));
        assert_eq!(extract("%Y-%m-%d %H:%M:%S%.f", json!("2024-05-01 10:00:00.001")), Some(T + 1_000_000));
    }

    #[test]
    fn mismatches_are_none() {
        assert_eq!(extract("rfc3339", json!("yesterday")), None);
        assert_eq!(extract("rfc3339", json!(12)), None);
        assert_eq!(extract("unix", json!("12abc")), None);
        assert_eq!(extract("unix", json!(1e300)), None);
        assert_eq!(extract("unix", json!(i64::MAX)), None);
        assert_eq!(extract("%Y-%m-%d", json!("2024-13-45")), None);
    }

    #[test]
    fn nested_field_and_bad_format() {
        let spec = TimestampSpec { field: "meta.time".into(), format: "unix".into() };
        let fields = json!({ "meta": { "time": 1_714_557_600 } });
        assert_eq!(TimestampField::compile(&spec).unwrap().extract(fields.as_object().unwrap()), Some(T));
        let spec = TimestampSpec { field: "t".into(), format: "%Q broken".into() };
        let err = TimestampField::compile(&spec).unwrap_err();
        assert!(err.to_string().contains("%Q broken"), "{err}");
    }
}
