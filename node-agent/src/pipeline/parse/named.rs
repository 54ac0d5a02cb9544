//! A regex with named captures: one string field per capture that took part in the match.

use regex::bytes::{CaptureLocations, Regex};
use serde_json::{Map, Value};

/// A compiled named-capture parser; capture locations are reused between lines.
#[derive(Clone, Debug)]
pub struct NamedRegex {
    regex: Regex,
    /// (capture index, field name) of every named capture.
    names: Vec<(usize, String)>,
    locations: CaptureLocations,
}

impl NamedRegex {
    pub fn new(regex: Regex) -> Self {
        let names =
            regex.capture_names().enumerate().filter_map(|(i, n)| n.map(|n| (i, n.to_owned()))).collect();
        let locations = regex.capture_locations();
        Self { regex, names, locations }
    }

    /// Whether the regex has any named capture (a pattern without one would parse nothing).
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// The fields of the first match, or `None` when the line does not match.
    pub fn parse(&mut self, line: &[u8]) -> Option<Map<String, Value>> {
        self.regex.captures_read(&mut self.locations, line)?;
        let mut fields = Map::new();
        for (index, name) in &self.names {
            if let Some((s, e)) = self.locations.get(*index) {
                fields.insert(name.clone(), Value::String(String::from_utf8_lossy(&line[s..e]).into_owned()));
            }
        }
        Some(fields)
    }

    /// Byte range of a named capture in the last successful match.
    pub fn span(&self, index: usize) -> Option<(usize, usize)> {
        self.locations.get(index)
    }

    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    /// Matches without building fields (for parsers that convert captures themselves).
    pub fn matches(&mut self, line: &[u8]) -> bool {
        self.regex.captures_read(&mut self.locations, line).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_captures_become_fields_and_optional_ones_may_be_absent() {
        let mut p =
            NamedRegex::new(Regex::new(r"^(?P<level>\w+) (?P<msg>.*?)(?: user=(?P<user>\w+))?$").unwrap());
        let f = p.parse(b"INFO started user=bob").unwrap();
        assert_eq!(
            (f["level"].as_str(), f["msg"].as_str(), f["user"].as_str()),
            (Some("INFO"), Some("started"), Some("bob"))
        );
        let f = p.parse(b"WARN slow").unwrap();
        assert!(!f.contains_key("user"));
        assert!(p.parse(b"").is_none());
        // `.` only matches valid UTF-8 unless the pattern turns Unicode off; either way no panic,
        // and bytes that are not UTF-8 are replaced in the field.
        assert!(p.parse(b"ERR \xff\xfe").is_none());
        let mut p = NamedRegex::new(Regex::new(r"^(?P<level>\w+) (?P<msg>(?s-u:.*))$").unwrap());
        let f = p.parse(b"ERR \xff\xfe").unwrap();
        assert_eq!(f["msg"], "\u{fffd}\u{fffd}");
    }
}
