//! The dead-letter file of a sink: events the destination refused for good, as NDJSON under
//! `<state-dir>/dead-letter/<sink>.ndjson`, so an operator can inspect and replay them.
//!
//! Bounded: when the file would pass its cap it becomes `<sink>.ndjson.1` (replacing the older
//! one), so at most twice the cap is kept per sink. Each line:
//! `{"sink":"..","reason":"..","id":"..","event":{<document>}}`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::encode::encode_json;
use crate::event::Event;
use crate::sinks::net::file_safe_name;

/// Where a sink's refused events go.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    path: PathBuf,
    max_bytes: u64,
}

impl DeadLetter {
    /// Creates the dead-letter directory of `sink` under `state_dir`.
    pub fn new(state_dir: &Path, sink: &str, max_bytes: u64) -> io::Result<Self> {
        let dir = state_dir.join("dead-letter");
        fs::create_dir_all(&dir)?;
        Ok(DeadLetter { path: dir.join(format!("{}.ndjson", file_safe_name(sink))), max_bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `(event, reason)` pairs; the file IO runs on the blocking pool.
    pub async fn write<'a>(
        &self,
        sink: &str,
        entries: impl IntoIterator<Item = (&'a Event, &'a str)>,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        for (ev, reason) in entries {
            // Strings into a Vec: serializing cannot fail.
            buf.extend_from_slice(b"{\"sink\":");
            let _ = serde_json::to_writer(&mut buf, sink);
            buf.extend_from_slice(b",\"reason\":");
            let _ = serde_json::to_writer(&mut buf, reason);
            buf.extend_from_slice(b",\"id\":");
            let _ = serde_json::to_writer(&mut buf, &ev.id());
            buf.extend_from_slice(b",\"event\":");
            encode_json(ev, &mut buf);
            buf.extend_from_slice(b"}\n");
        }
        if buf.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append(&buf)).await.map_err(io::Error::other)?
    }

    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let len = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if len > 0 && len + buf.len() as u64 > self.max_bytes {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            fs::rename(&self.path, old)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(buf)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::net::testutil::sample_event;

    #[tokio::test]
    async fn appends_and_rotates_at_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(d.path(), "ns/res/es", 600).unwrap();
        let ev = sample_event(1);
        dl.write("ns/res/es", [(&ev, "mapper_parsing_exception")]).await.unwrap();
        let text = fs::read_to_string(dl.path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["reason"], "mapper_parsing_exception");
        assert_eq!(v["id"], ev.id());
        assert_eq!(v["event"]["pod"], "api-1");
        for _ in 0..3 {
            dl.write("ns/res/es", [(&ev, "x")]).await.unwrap();
        }
        assert!(fs::metadata(dl.path()).unwrap().len() <= 600);
        assert!(d.path().join("dead-letter/ns_res_es.ndjson.1").exists());
    }
}
