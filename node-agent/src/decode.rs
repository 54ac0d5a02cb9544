//! From bytes read off a file to decoded records: line splitting (slices of the read buffer, no
//! per-line allocation, a bounded maximum event size) and the runtimes' log formats: CRI
//! (`<time> <stream> <P|F> <message>`, partial lines joined), Docker json-file (16 KiB splits
//! joined), plain lines.

use bytes::{Bytes, BytesMut};
use chrono::DateTime;
use serde::Deserialize;
use tailor_crds::node::StdStream;

/// Default maximum size of one event: the rest of a longer line is cut and the event marked.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;

/// One line of a file: its bytes without the newline, and the file offset just past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub bytes: Bytes,
    pub end_offset: u64,
    /// The line was longer than the maximum and was cut.
    pub truncated: bool,
}

/// Splits a byte stream into lines. Only a line that spans two reads is copied; a line longer
/// than `max` keeps its first `max` bytes and skips the rest up to its newline.
#[derive(Debug)]
pub struct Splitter {
    max: usize,
    carry: BytesMut,
    /// The kept head of an over-long line whose newline has not been seen yet.
    overlong: Option<Bytes>,
}

impl Splitter {
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1), carry: BytesMut::new(), overlong: None }
    }

    /// Bytes held back (a line without its newline yet).
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Forgets any partial line (the file was truncated or re-opened).
    pub fn reset(&mut self) {
        self.carry.clear();
        self.overlong = None;
    }

    /// Splits `data`, which starts at file offset `offset`, pushing complete lines to `out`.
    pub fn push(&mut self, data: Bytes, offset: u64, out: &mut Vec<Line>) {
        let mut start = 0usize;
        if !self.carry.is_empty() {
            // Complete the line that spans reads: the only copy on the path.
            match memchr::memchr(b'\n', &data) {
                Some(nl) => {
                    self.carry.extend_from_slice(&data[..nl]);
                    let line = std::mem::take(&mut self.carry).freeze();
                    out.push(Line { bytes: line, end_offset: offset + nl as u64 + 1, truncated: false });
                    start = nl + 1;
                }
                None => {
                    self.carry.extend_from_slice(&data);
                    self.check_overlong();
                    return;
                }
            }
        }
        if let Some(head) = self.overlong.take() {
            match memchr::memchr(b'\n', &data[start..]) {
                Some(nl) => {
                    out.push(Line {
                        bytes: head,
                        end_offset: offset + (start + nl) as u64 + 1,
                        truncated: true,
                    });
                    start += nl + 1;
                }
                None => {
                    self.overlong = Some(head);
                    return;
                }
            }
        }
        let base = start;
        for nl in memchr::memchr_iter(b'\n', &data[base..]) {
            let end = base + nl;
            let (bytes, truncated) = if end - start > self.max {
                (data.slice(start..start + self.max), true)
            } else {
                (data.slice(start..end), false)
            };
            out.push(Line { bytes, end_offset: offset + end as u64 + 1, truncated });
            start = end + 1;
        }
        if start < data.len() {
            self.carry.extend_from_slice(&data[start..]);
            self.check_overlong();
        }
    }

    fn check_overlong(&mut self) {
        if self.carry.len() > self.max {
            let head = self.carry.split_to(self.max).freeze();
            self.carry.clear();
            self.overlong = Some(head);
        }
    }
}

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Cri,
    DockerJson,
    Plain,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub timestamp_nanos: Option<i64>,
    pub stream: Option<StdStream>,
    pub message: Bytes,
    pub end_offset: u64,
    pub truncated: bool,
}

/// Decodes lines of one file; joins partial lines per stream.
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    max: usize,
    /// Partial message per stream (stdout, stderr) and its first timestamp.
    partial: [Option<Partial>; 2],
    /// Lines that did not parse (kept as plain lines).
    pub malformed: u64,
}

#[derive(Debug)]
struct Partial {
    buf: BytesMut,
    timestamp: Option<i64>,
    truncated: bool,
}

impl Decoder {
    pub fn new(format: Format, max: usize) -> Self {
        Self { format, max: max.max(1), partial: [None, None], malformed: 0 }
    }

    pub fn reset(&mut self) {
        self.partial = [None, None];
    }

    /// Whether a partial message is held (its bytes are not committed yet).
    pub fn holds_partial(&self) -> bool {
        self.partial.iter().any(Option::is_some)
    }

    pub fn decode(&mut self, line: Line, out: &mut Vec<Record>) {
        match self.format {
            Format::Plain => {
                let mut b = line.bytes;
                if b.last() == Some(&b'\r') {
                    b.truncate(b.len() - 1);
                }
                out.push(Record {
                    timestamp_nanos: None,
                    stream: None,
                    message: b,
                    end_offset: line.end_offset,
                    truncated: line.truncated,
                })
            }
            Format::Cri => match parse_cri(&line.bytes) {
                Some((ts, stream, full, msg_start)) => {
                    let msg = line.bytes.slice(msg_start..);
                    self.emit(ts, stream, msg, full, line.end_offset, line.truncated, out);
                }
                None => self.malformed(line, out),
            },
            Format::DockerJson => match serde_json::from_slice::<DockerLine<'_>>(&line.bytes) {
                Ok(d) => {
                    let stream = match d.stream {
                        "stderr" => StdStream::Stderr,
                        _ => StdStream::Stdout,
                    };
                    let ts = parse_rfc3339(d.time.as_bytes());
                    let (text, full) = match d.log.strip_suffix('\n') {
                        Some(t) => (t, true),
                        None => (&*d.log, false),
                    };
                    let msg = match &d.log {
                        std::borrow::Cow::Borrowed(s) => line.bytes.slice_ref(&s.as_bytes()[..text.len()]),
                        std::borrow::Cow::Owned(_) => Bytes::copy_from_slice(text.as_bytes()),
                    };
                    self.emit(ts, stream, msg, full, line.end_offset, line.truncated, out);
                }
                Err(_) => self.malformed(line, out),
            },
        }
    }

    fn malformed(&mut self, line: Line, out: &mut Vec<Record>) {
        self.malformed += 1;
        out.push(Record {
            timestamp_nanos: None,
            stream: None,
            message: line.bytes,
            end_offset: line.end_offset,
            truncated: line.truncated,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        ts: Option<i64>,
        stream: StdStream,
        msg: Bytes,
        full: bool,
        end_offset: u64,
        truncated: bool,
        out: &mut Vec<Record>,
    ) {
        let slot = &mut self.partial[stream as usize];
        match (slot.take(), full) {
            (None, true) => out.push(Record {
                timestamp_nanos: ts,
                stream: Some(stream),
                message: msg,
                end_offset,
                truncated,
            }),
            (prev, _) => {
                let mut p = prev.unwrap_or(Partial { buf: BytesMut::new(), timestamp: ts, truncated: false });
                let room = self.max.saturating_sub(p.buf.len());
                if msg.len() > room {
                    p.truncated = true;
                }
                p.buf.extend_from_slice(&msg[..msg.len().min(room)]);
                p.truncated |= truncated;
                if full {
                    out.push(Record {
                        timestamp_nanos: p.timestamp,
                        stream: Some(stream),
                        message: p.buf.freeze(),
                        end_offset,
                        truncated: p.truncated,
                    });
                } else {
                    *slot = Some(p);
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    #[serde(default)]
    stream: &'a str,
    #[serde(default)]
    time: &'a str,
}

/// `<time> <stdout|stderr> <P|F>[:tags] <message>` → (time, stream, full, start of message).
fn parse_cri(line: &[u8]) -> Option<(Option<i64>, StdStream, bool, usize)> {
    let sp1 = memchr::memchr(b' ', line)?;
    let rest = &line[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', rest)?;
    let stream = match &rest[..sp2] {
        b"stdout" => StdStream::Stdout,
        b"stderr" => StdStream::Stderr,
        _ => return None,
    };
    let rest2 = &rest[sp2 + 1..];
    let (tag, msg_start) = match memchr::memchr(b' ', rest2) {
        Some(sp3) => (&rest2[..sp3], sp1 + 1 + sp2 + 1 + sp3 + 1),
        None => (rest2, line.len()),
    };
    let full = match tag.first() {
        Some(b'F') => true,
        Some(b'P') => false,
        _ => return None,
    };
    Some((parse_rfc3339(&line[..sp1]), stream, full, msg_start))
}

/// RFC 3339 time to nanoseconds since the epoch; a fast path for `YYYY-MM-DDTHH:MM:SS[.f]Z`.
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
    }
    if s.len() >= 20 && s[4] == b'-' && s[7] == b'-' && s[10] == b'T' && s[13] == b':' && s[16] == b':' {
        let (y, mo, d) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
        let (h, mi, se) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
        let mut i = 19;
        let mut frac = 0i64;
        if s[i] == b'.' {
            i += 1;
            let mut digits = 0;
            while i < s.len() && s[i].is_ascii_digit() {
                if digits < 9 {
                    frac = frac * 10 + i64::from(s[i] - b'0');
                    digits += 1;
                }
                i += 1;
            }
            for _ in digits..9 {
                frac *= 10;
            }
        }
        if i + 1 == s.len() && s[i] == b'Z' && (1..=12).contains(&mo) && (1..=31).contains(&d) {
            let days = days_from_civil(y, mo, d);
            return Some(((days * 86400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + frac);
        }
    }
    let text = std::str::from_utf8(s).ok()?;
    DateTime::parse_from_rfc3339(text).ok()?.timestamp_nanos_opt()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn split_all(chunks: &[&[u8]], max: usize) -> Vec<Line> {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        let mut off = 0;
        for c in chunks {
            s.push(Bytes::copy_from_slice(c), off, &mut out);
            off += c.len() as u64;
        }
        out
    }

    #[test]
    fn splits_lines_across_reads_with_offsets() {
        let lines = split_all(&[b"ab\ncd", b"e\n\nf"], 100);
        assert_eq!(lines.len(), 3);
        assert_eq!((&lines[0].bytes[..], lines[0].end_offset), (&b"ab"[..], 3));
        assert_eq!((&lines[1].bytes[..], lines[1].end_offset), (&b"cde"[..], 7));
        assert_eq!((&lines[2].bytes[..], lines[2].end_offset), (&b""[..], 8));
    }

    #[test]
    fn cuts_overlong_lines_and_skips_to_their_end() {
        let lines = split_all(&[b"0123456789abc\nok\n"], 4);
        assert_eq!(lines[0], Line { bytes: Bytes::from_static(b"0123"), end_offset: 14, truncated: true });
        assert_eq!(&lines[1].bytes[..], b"ok");
        // Spread over many reads, the held bytes stay bounded.
        let mut s = Splitter::new(4);
        let mut out = Vec::new();
        for i in 0..1000 {
            s.push(Bytes::from_static(b"xxxxxxxx"), i * 8, &mut out);
            assert!(s.pending() <= 4);
        }
        s.push(Bytes::from_static(b"y\nz\n"), 8000, &mut out);
        assert_eq!(out[0], Line { bytes: Bytes::from_static(b"xxxx"), end_offset: 8002, truncated: true });
        assert_eq!(out[1], Line { bytes: Bytes::from_static(b"z"), end_offset: 8004, truncated: false });
    }

    proptest! {
        /// However the input is cut into reads, the lines and offsets are the same.
        #[test]
        fn splitting_is_independent_of_read_boundaries(
            text in "[ab\n]{0,200}", cuts in proptest::collection::vec(0usize..200, 0..10)
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= bytes.len()).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                chunks.push(&bytes[prev..c]);
                prev = c;
            }
            prop_assert_eq!(split_all(&chunks, 1000), split_all(&[bytes], 1000));
        }
    }

    fn decode(format: Format, max: usize, lines: &[&str]) -> Vec<Record> {
        let mut d = Decoder::new(format, max);
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            d.decode(
                Line { bytes: Bytes::copy_from_slice(l.as_bytes()), end_offset: i as u64, truncated: false },
                &mut out,
            );
        }
        out
    }

    #[test]
    fn cri_lines_with_partials_joined_per_stream() {
        let out = decode(
            Format::Cri,
            1000,
            &[
                "2024-01-02T03:04:05.123456789Z stdout P hel",
                "2024-01-02T03:04:05.2Z stderr F err line",
                "2024-01-02T03:04:05.3Z stdout P lo ",
                "2024-01-02T03:04:05.4Z stdout F world",
                "2024-01-02T03:04:06+01:00 stdout F tz",
                "garbage",
            ],
        );
        assert_eq!(out.len(), 4);
        assert_eq!(&out[0].message[..], b"err line");
        assert_eq!(out[0].stream, Some(StdStream::Stderr));
        assert_eq!(&out[1].message[..], b"hello world");
        assert_eq!(out[1].stream, Some(StdStream::Stdout));
        assert_eq!(out[1].timestamp_nanos, Some(1_704_164_645_123_456_789));
        assert_eq!(out[1].end_offset, 3);
        assert_eq!(out[2].timestamp_nanos, Some(1_704_164_646_000_000_000 - 3600 * 1_000_000_000));
        assert_eq!(&out[3].message[..], b"garbage");
    }

    #[test]
    fn cri_partials_beyond_the_maximum_are_cut() {
        let out = decode(Format::Cri, 5, &["t stdout P abcd", "t stdout P efgh", "t stdout F ij"]);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].message[..], b"abcde");
        assert!(out[0].truncated);
    }

    #[test]
    fn docker_json_lines_with_16k_splits_joined() {
        let out = decode(
            Format::DockerJson,
            1000,
            &[
                r#"{"log":"part one ","stream":"stdout","time":"2024-01-02T03:04:05.5Z"}"#,
                r#"{"log":"oops\n","stream":"stderr","time":"2024-01-02T03:04:05.6Z"}"#,
                r#"{"log":"part two\n","stream":"stdout","time":"2024-01-02T03:04:05.7Z"}"#,
                r#"{"log":"esc \"q\"\n","stream":"stdout","time":"2024-01-02T03:04:05.8Z"}"#,
            ],
        );
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0].message[..], b"oops");
        assert_eq!(&out[1].message[..], b"part one part two");
        assert_eq!(out[1].timestamp_nanos, Some(1_704_164_645_500_000_000));
        assert_eq!(&out[2].message[..], b"esc \"q\"");
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339(b"2000-03-01T00:00:00.5Z"), Some(951_868_800_500_000_000));
        assert_eq!(parse_rfc3339(b"nope"), None);
    }
}
