//! Request body compression (`OutputSpec.compression`).

use std::io::{self, Write};

use bytes::Bytes;
use tailor_crds::collection::Compression;

/// Compresses `body` as configured; returns the body and its `Content-Encoding`, if any.
/// gzip runs at level 1 and zstd at level 3: log lines compress well already at low levels,
/// and the agent's CPU belongs to the node's workloads.
pub fn encode(compression: Compression, body: Vec<u8>) -> io::Result<(Bytes, Option<&'static str>)> {
    match compression {
        Compression::None => Ok((Bytes::from(body), None)),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4 + 64),
                flate2::Compression::fast(),
            );
            enc.write_all(&body)?;
            Ok((Bytes::from(enc.finish()?), Some("gzip")))
        }
        Compression::Zstd => Ok((Bytes::from(zstd::bulk::compress(&body, 3)?), Some("zstd"))),
    }
}

/// Inverse of `encode`, for receivers in tests and benchmarks.
pub fn decode(encoding: Option<&str>, body: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Read;
    match encoding {
        None | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
            Ok(out)
        }
        Some("zstd") => zstd::stream::decode_all(body),
        Some(other) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown encoding {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let body = b"{\"message\":\"hello\"}\n".repeat(100);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let (enc, ce) = encode(c, body.clone()).unwrap();
            if c != Compression::None {
                assert!(enc.len() < body.len() / 4, "{c:?} compresses");
            }
            assert_eq!(decode(ce, &enc).unwrap(), body);
        }
    }
}
