//! Record framing of buffer segments: `[len: u32 LE][crc32 of payload: u32 LE][payload]`.
//! A crash can leave a torn record at the end of the last segment; the CRC and the length tell
//! a whole record from a torn or damaged one.

/// Bytes before each payload.
pub const HEADER_LEN: usize = 8;

/// A record larger than this is damage, not data (batches are capped far below).
pub const MAX_RECORD: usize = 1 << 30;

/// Appends one framed record to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What is at a position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole record: its payload is `buf[payload.start..payload.end]`, the next one starts at `next`.
    Record { payload: std::ops::Range<usize>, next: usize },
    /// Nothing more.
    End,
    /// A record cut short (a write the crash interrupted).
    Torn,
    /// A whole record whose CRC does not match, or an impossible length.
    Corrupt,
}

/// Reads the header at `pos` from `header` (at least `HEADER_LEN` bytes, or what is left).
pub fn parse_header(header: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(header.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
    Some((len, crc))
}

/// Looks at the record starting at `pos` of a segment held in `buf`.
pub fn scan(buf: &[u8], pos: usize) -> Scan {
    if pos >= buf.len() {
        return Scan::End;
    }
    let Some((len, crc)) = parse_header(&buf[pos..]) else { return Scan::Torn };
    if len > MAX_RECORD {
        return Scan::Corrupt;
    }
    let start = pos + HEADER_LEN;
    let end = start + len;
    if end > buf.len() {
        return Scan::Torn;
    }
    if crc32fast::hash(&buf[start..end]) != crc {
        return Scan::Corrupt;
    }
    Scan::Record { payload: start..end, next: end }
}

/// The length of the valid prefix of a segment: every whole record up to the first torn or
/// damaged one.
pub fn valid_prefix(buf: &[u8]) -> (usize, Scan) {
    let mut pos = 0;
    loop {
        match scan(buf, pos) {
            Scan::Record { next, .. } => pos = next,
            other => return (pos, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_torn_and_corrupt_records() {
        let mut buf = Vec::new();
        frame(b"first", &mut buf);
        frame(b"second", &mut buf);
        let whole = buf.len();
        assert_eq!(valid_prefix(&buf), (whole, Scan::End));
        let Scan::Record { payload, next } = scan(&buf, 0) else { panic!() };
        assert_eq!(&buf[payload], b"first");
        assert_eq!(next, HEADER_LEN + 5);

        let mut torn = buf.clone();
        frame(b"third", &mut torn);
        torn.truncate(torn.len() - 2);
        assert_eq!(valid_prefix(&torn), (whole, Scan::Torn));
        assert_eq!(valid_prefix(&torn[..whole + 3]), (whole, Scan::Torn));

        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(valid_prefix(&bad), (HEADER_LEN + 5, Scan::Corrupt));

        let mut huge = buf.clone();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(valid_prefix(&huge), (whole, Scan::Corrupt));
    }
}
