//! Access logs in the combined format that nginx and Apache write by default
//! (`$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//! "$http_referer" "$http_user_agent"`, Apache's `%h %l %u %t "%r" %>s %b "%{Referer}i"
//! "%{User-agent}i"`), also the common format without referer and user agent, and nginx's `main`
//! format with `"$http_x_forwarded_for"` at the end.
//!
//! Both presets give the same field names so that dashboards work for either server:
//! `remote_addr`, `ident` (Apache, when not `-`), `remote_user`, `time`, `method`, `path`,
//! `protocol` (or `request` when the request line is not `METHOD PATH [PROTOCOL]`), `status` and
//! `body_bytes_sent` (numbers), `referer`, `user_agent`, `x_forwarded_for`, and `extra` for
//! anything after the known fields. Values that are `-` are left out.

use regex::bytes::Regex;
use serde_json::{Map, Number, Value};

use super::named::NamedRegex;

const COMBINED: &str = r#"^(?P<remote_addr>\S+) (?P<ident>\S+) (?P<remote_user>\S+) \[(?P<time>[^\]]*)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}|-) (?P<body_bytes_sent>\d+|-)(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<user_agent>(?:[^"\\]|\\.)*)"(?: "(?P<x_forwarded_for>(?:[^"\\]|\\.)*)")?)?(?P<extra>.*)$"#;

/// Which server wrote the log; nginx's second column is always `-`, so `ident` is Apache's only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Nginx,
    Apache,
}

/// A compiled access-log parser.
#[derive(Clone, Debug)]
pub struct AccessLogParser {
    flavor: Flavor,
    regex: NamedRegex,
    /// Capture index of each field, in the order of `NAMES`.
    index: [usize; NAMES.len()],
}

const NAMES: [&str; 11] = [
    "remote_addr",
    "ident",
    "remote_user",
    "time",
    "request",
    "status",
    "body_bytes_sent",
    "referer",
    "user_agent",
    "x_forwarded_for",
    "extra",
];

impl AccessLogParser {
    pub fn new(flavor: Flavor) -> Result<Self, regex::Error> {
        let regex = Regex::new(COMBINED)?;
        let mut index = [0; NAMES.len()];
        for (slot, name) in index.iter_mut().zip(NAMES) {
            *slot = regex.capture_names().position(|n| n == Some(name)).unwrap_or(0);
        }
        Ok(Self { flavor, regex: NamedRegex::new(regex), index })
    }

    pub fn parse(&mut self, line: &[u8]) -> Option<Map<String, Value>> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !self.regex.matches(line) {
            return None;
        }
        let mut fields = Map::new();
        for (name, &index) in NAMES.iter().zip(&self.index) {
            let Some((s, e)) = self.regex.span(index) else { continue };
            let value = &line[s..e];
            if value == b"-" || (value.is_empty() && *name != "request") {
                continue;
            }
            match *name {
                "ident" if self.flavor == Flavor::Nginx => {}
                "extra" => {
                    let extra = value.trim_ascii();
                    if !extra.is_empty() {
                        fields.insert("extra".into(), text(extra));
                    }
                }
                "status" | "body_bytes_sent" => {
                    let number = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
                    fields.insert(
                        (*name).into(),
                        number.map_or_else(|| text(value), |n| Value::Number(Number::from(n))),
                    );
                }
                "request" => split_request(value, &mut fields),
                _ => {
                    fields.insert((*name).into(), text(value));
                }
            }
        }
        Some(fields)
    }
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// `GET /path HTTP/1.1` → method, path, protocol; anything else (TLS garbage sent to a plain
/// port, an empty request) is kept whole as `request`.
fn split_request(request: &[u8], fields: &mut Map<String, Value>) {
    let mut parts = request.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(path), protocol, None)
            if !method.is_empty() && !path.is_empty() && method.iter().all(u8::is_ascii_uppercase) =>
        {
            fields.insert("method".into(), text(method));
            fields.insert("path".into(), text(path));
            if let Some(protocol) = protocol {
                fields.insert("protocol".into(), text(protocol));
            }
        }
        _ => {
            fields.insert("request".into(), text(request));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_combined_and_main() {
        let mut p = AccessLogParser::new(Flavor::Nginx).unwrap();
        let f = p
            .parse(br#"203.0.113.7 - - [01/May/2024:10:00:00 +0000] "GET /api/v1/items?id=3 HTTP/1.1" 200 612 "-" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36""#)
            .unwrap();
        assert_eq!(f["remote_addr"], "203.0.113.7");
        assert!(!f.contains_key("remote_user") && !f.contains_key("referer") && !f.contains_key("ident"));
        assert_eq!(f["time"], "01/May/2024:10:00:00 +0000");
        assert_eq!(
            (f["method"].as_str(), f["path"].as_str(), f["protocol"].as_str()),
            (Some("GET"), Some("/api/v1/items?id=3"), Some("HTTP/1.1"))
        );
        assert_eq!(f["status"], 200);
        assert_eq!(f["body_bytes_sent"], 612);
        assert_eq!(f["user_agent"], "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36");

        let f = p
            .parse(br#"10.0.0.1 - alice [01/May/2024:10:00:01 +0200] "POST /login HTTP/2.0" 302 0 "https://example.com/" "curl/8.5.0" "198.51.100.1, 10.0.0.9""#)
            .unwrap();
        assert_eq!(f["remote_user"], "alice");
        assert_eq!(f["referer"], "https://example.com/");
        assert_eq!(f["x_forwarded_for"], "198.51.100.1, 10.0.0.9");

        // TLS bytes sent to a plain-text port: nginx writes them escaped into the request.
        let f = p
            .parse(
                br#"192.0.2.5 - - [01/May/2024:10:00:02 +0000] "\x16\x03\x01\x02\x00\x01" 400 157 "-" "-""#,
            )
            .unwrap();
        assert_eq!(f["request"], r"\x16\x03\x01\x02\x00\x01");
        assert_eq!(f["status"], 400);
        assert!(p.parse(b"not an access log").is_none());
    }

    #[test]
    fn apache_combined_and_common() {
        let mut p = AccessLogParser::new(Flavor::Apache).unwrap();
        let f = p
            .parse(br#"127.0.0.1 ident frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#)
            .unwrap();
        assert_eq!(f["ident"], "ident");
        assert_eq!(f["remote_user"], "frank");
        assert_eq!(f["referer"], "http://www.example.com/start.html");
        let f = p.parse(br#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /x HTTP/1.0" 304 -"#).unwrap();
        assert_eq!(f["status"], 304);
        assert!(!f.contains_key("body_bytes_sent") && !f.contains_key("user_agent"));
        // An escaped quote inside the request line.
        let f = p.parse(br#"::1 - - [10/Oct/2000:13:55:36 -0700] "GET /q=\"x\" HTTP/1.1" 404 12"#).unwrap();
        assert_eq!(f["path"], r#"/q=\"x\""#);
    }
}
