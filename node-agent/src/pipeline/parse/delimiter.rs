//! Delimited lines (CSV, TSV): named columns, fields in double quotes may hold the delimiter, and
//! a doubled quote inside quotes is a literal quote (RFC 4180).

use serde_json::{Map, Value};

/// Why a delimited line did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DelimiterError {
    #[error("a quoted value is not closed")]
    UnclosedQuote,
    #[error("a closing quote is followed by something other than the delimiter")]
    TextAfterQuote,
    #[error("{found} values for {expected} columns")]
    ColumnCount { expected: usize, found: usize },
}

/// A compiled delimiter parser.
#[derive(Clone, Debug)]
pub struct DelimiterParser {
    delimiter: Vec<u8>,
    columns: Vec<String>,
    /// Value spans of the line being parsed, reused between lines.
    spans: Vec<Span>,
    /// Unescaped quoted values, reused between lines.
    scratch: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Span {
    /// A slice of the line.
    Raw(usize, usize),
    /// A slice of `scratch` (a quoted value with its quotes removed and `""` undoubled).
    Unquoted(usize, usize),
}

impl DelimiterParser {
    /// `delimiter` as written in the resource; the two characters `\t` mean a tab so that TSV
    /// can be asked for in single-quoted YAML too.
    pub fn new(delimiter: Option<&str>, columns: Vec<String>) -> Self {
        let delimiter = match delimiter {
            None | Some("") => b",".to_vec(),
            Some(r"\t") => b"\t".to_vec(),
            Some(d) => d.as_bytes().to_vec(),
        };
        Self { delimiter, columns, spans: Vec::new(), scratch: Vec::new() }
    }

    /// Parses one line into one string field per named column; a column named `` or `_` is skipped.
    pub fn parse(&mut self, line: &[u8]) -> Result<Map<String, Value>, DelimiterError> {
        self.split(line)?;
        if self.spans.len() != self.columns.len() {
            return Err(DelimiterError::ColumnCount {
                expected: self.columns.len(),
                found: self.spans.len(),
            });
        }
        let mut fields = Map::new();
        for (name, span) in self.columns.iter().zip(&self.spans) {
            if name.is_empty() || name == "_" {
                continue;
            }
            let bytes = match *span {
                Span::Raw(s, e) => &line[s..e],
                Span::Unquoted(s, e) => &self.scratch[s..e],
            };
            fields.insert(name.clone(), Value::String(String::from_utf8_lossy(bytes).into_owned()));
        }
        Ok(fields)
    }

    fn split(&mut self, line: &[u8]) -> Result<(), DelimiterError> {
        self.spans.clear();
        self.scratch.clear();
        let d = self.delimiter.as_slice();
        let mut pos = 0;
        loop {
            if line.get(pos) == Some(&b'"') {
                let start = self.scratch.len();
                let mut i = pos + 1;
                loop {
                    match line[i..].iter().position(|&b| b == b'"') {
                        None => return Err(DelimiterError::UnclosedQuote),
                        Some(q) => {
                            self.scratch.extend_from_slice(&line[i..i + q]);
                            i += q + 1;
                            if line.get(i) == Some(&b'"') {
                                self.scratch.push(b'"');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                self.spans.push(Span::Unquoted(start, self.scratch.len()));
                if i == line.len() {
                    return Ok(());
                }
                if !line[i..].starts_with(d) {
                    return Err(DelimiterError::TextAfterQuote);
                }
                pos = i + d.len();
            } else {
                match find(&line[pos..], d) {
                    Some(at) => {
                        self.spans.push(Span::Raw(pos, pos + at));
                        pos += at + d.len();
                    }
                    None => {
                        self.spans.push(Span::Raw(pos, line.len()));
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => haystack.iter().position(|c| c == b),
        _ => haystack.windows(needle.len()).position(|w| w == needle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(delimiter: Option<&str>, columns: &[&str]) -> DelimiterParser {
        DelimiterParser::new(delimiter, columns.iter().map(|c| c.to_string()).collect())
    }

    #[test]
    fn csv_with_quotes_and_embedded_delimiters() {
        let mut p = parser(None, &["time", "level", "msg", "user"]);
        let f = p.parse(br#"2024-05-01T10:00:00Z,WARN,"disk 90% full, cleaning ""tmp""",alice"#).unwrap();
        assert_eq!(f["time"], "2024-05-01T10:00:00Z");
        assert_eq!(f["level"], "WARN");
        assert_eq!(f["msg"], r#"disk 90% full, cleaning "tmp""#);
        assert_eq!(f["user"], "alice");
        // Empty values, a quoted empty value, and a quote inside an unquoted value.
        let f = p.parse(br#",,"",say "hi""#).unwrap();
        assert_eq!(
            (f["time"].as_str(), f["msg"].as_str(), f["user"].as_str()),
            (Some(""), Some(""), Some(r#"say "hi""#))
        );
    }

    #[test]
    fn tsv_and_multi_byte_delimiters_and_skipped_columns() {
        let mut p = parser(Some(r"\t"), &["a", "_", "c"]);
        let f = p.parse(b"1\tskip\t\"x\ty\"").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f["c"], "x\ty");
        let mut p = parser(Some("||"), &["a", "b"]);
        let f = p.parse(b"left|x||right").unwrap();
        assert_eq!((f["a"].as_str(), f["b"].as_str()), (Some("left|x"), Some("right")));
    }

    #[test]
    fn malformed_lines_are_errors() {
        let mut p = parser(None, &["a", "b"]);
        assert_eq!(p.parse(b"\"open,b").unwrap_err(), DelimiterError::UnclosedQuote);
        assert_eq!(p.parse(b"\"a\"x,b").unwrap_err(), DelimiterError::TextAfterQuote);
        assert_eq!(p.parse(b"a,b,c").unwrap_err(), DelimiterError::ColumnCount { expected: 2, found: 3 });
        assert_eq!(p.parse(b"a").unwrap_err(), DelimiterError::ColumnCount { expected: 2, found: 1 });
    }
}
