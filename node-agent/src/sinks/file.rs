//! The `file` output: one NDJSON file per target under
//! `<output-dir>/<namespace>/<resource>/<output>/<pod-namespace>_<pod>_<container>.ndjson`,
//! rotated by size (`<name>.<n>.ndjson`, the highest `n` the newest, the oldest removed).
//!
//! A batch is acknowledged once its bytes are written to the file (in the page cache): that
//! survives a crash of the agent; `fsync` happens when a file is rotated or closed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tailor_crds::collection::OutputSpec;

use super::{Sink, SinkBuildError, SinkContext, SinkError};
use crate::encode::encode_ndjson;
use crate::event::Event;

pub struct FileSink {
    name: String,
    state: Arc<Mutex<Files>>,
}

/// The open files of the sink, touched only on the blocking pool.
struct Files {
    dir: PathBuf,
    max_bytes: u64,
    max_files: usize,
    open: HashMap<String, Open>,
}

struct Open {
    file: File,
    size: u64,
}

impl FileSink {
    pub fn new(output: &OutputSpec, ctx: &SinkContext) -> Result<Self, SinkBuildError> {
        let name = ctx.sink_name(output);
        let root =
            ctx.output_dir.as_ref().ok_or_else(|| SinkBuildError::NoOutputDir { output: name.clone() })?;
        let dir = root
            .join(sanitize(&ctx.collection.namespace))
            .join(sanitize(&ctx.collection.name))
            .join(sanitize(&output.name));
        fs::create_dir_all(&dir).map_err(|source| SinkBuildError::Io { output: name.clone(), source })?;
        let files = Files {
            dir,
            max_bytes: ctx.file_max_bytes.max(1024),
            max_files: ctx.file_max_files,
            open: HashMap::new(),
        };
        Ok(Self { name, state: Arc::new(Mutex::new(files)) })
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // Encode here, write on the blocking pool: one buffer per target file.
            let mut per_file: Vec<(String, Vec<u8>)> = Vec::new();
            for e in events {
                let base = format!(
                    "{}_{}_{}",
                    sanitize(&e.meta.namespace),
                    sanitize(&e.meta.pod),
                    sanitize(&e.meta.container)
                );
                let buf = match per_file.iter_mut().find(|(b, _)| *b == base) {
                    Some((_, buf)) => buf,
                    None => {
                        per_file.push((base, Vec::with_capacity(64 * 1024)));
                        &mut per_file.last_mut().expect("just pushed").1
                    }
                };
                encode_ndjson(e, buf);
            }
            let state = self.state.clone();
            let res = tokio::task::spawn_blocking(move || {
                let mut files = state.lock().unwrap_or_else(|p| p.into_inner());
                per_file.iter().try_for_each(|(base, buf)| files.write(base, buf))
            })
            .await;
            let err = |e: io::Error| SinkError::Failed {
                sink: self.name.clone(),
                message: "writing the output file".into(),
                source: Some(Box::new(e)),
            };
            match res {
                Ok(r) => r.map_err(err),
                Err(join) => Err(err(io::Error::other(join.to_string()))),
            }
        })
    }
}

impl Files {
    fn write(&mut self, base: &str, buf: &[u8]) -> io::Result<()> {
        if !self.open.contains_key(base) {
            let path = self.dir.join(format!("{base}.ndjson"));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let size = file.metadata()?.len();
            self.open.insert(base.to_string(), Open { file, size });
        }
        let Some(open) = self.open.get_mut(base) else { return Ok(()) };
        // One write per batch: a crash leaves whole batches (or a torn tail line at worst).
        open.file.write_all(buf)?;
        open.size += buf.len() as u64;
        if open.size >= self.max_bytes {
            open.file.sync_all()?;
            self.open.remove(base);
            rotate(&self.dir, base, self.max_files)?;
        }
        Ok(())
    }
}

/// Renames `<base>.ndjson` to `<base>.<n>.ndjson` (n one above the highest) and removes the
/// oldest beyond `keep`.
fn rotate(dir: &Path, base: &str, keep: usize) -> io::Result<()> {
    let mut numbers = rotated_numbers(dir, base)?;
    let next = numbers.last().map_or(1, |n| n + 1);
    fs::rename(dir.join(format!("{base}.ndjson")), dir.join(format!("{base}.{next}.ndjson")))?;
    numbers.push(next);
    while numbers.len() > keep {
        let n = numbers.remove(0);
        fs::remove_file(dir.join(format!("{base}.{n}.ndjson")))?;
    }
    Ok(())
}

fn rotated_numbers(dir: &Path, base: &str) -> io::Result<Vec<u64>> {
    let prefix = format!("{base}.");
    let mut out: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?.strip_suffix(".ndjson")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// A path component from a name: anything but `[A-Za-z0-9._-]` becomes `_`; never `.`/`..`.
pub fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') { format!("_{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc as StdArc;

    use bytes::Bytes;
    use tailor_crds::collection::OutputType;
    use tailor_crds::node::SourceRef;
    use tokio::sync::watch;

    use super::*;
    use crate::event::{EventFlags, FileId, TargetMeta};

    #[tokio::test]
    async fn writes_ndjson_per_target_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let (_tx, rx) = watch::channel(false);
        let ctx = SinkContext {
            node_name: "n".into(),
            collection: SourceRef { namespace: "ns".into(), name: "c".into(), generation: 1 },
            output_dir: Some(dir.path().to_path_buf()),
            state_dir: dir.path().to_path_buf(),
            file_max_bytes: 2048,
            file_max_files: 2,
            force_stop: rx,
            net: Default::default(),
        };
        let output: OutputSpec =
            serde_json::from_value(serde_json::json!({"name": "out", "type": "file"})).unwrap();
        assert_eq!(output.type_, OutputType::File);
        let mut sink = super::super::build(&output, &ctx).unwrap();
        let meta = |pod: &str| {
            StdArc::new(TargetMeta {
                namespace: "ns".into(),
                pod: pod.into(),
                container: "c".into(),
                ..Default::default()
            })
        };
        let (a, b) = (meta("a"), meta("../b"));
        let events: Vec<Event> = (0..100)
            .map(|i| Event {
                meta: if i % 2 == 0 { a.clone() } else { b.clone() },
                file: FileId { dev: 0, ino: 0, fingerprint: 0 },
                offset: i,
                timestamp_nanos: 0,
                stream: None,
                message: Bytes::from(format!("line {i}")),
                fields: None,
                flags: EventFlags::default(),
            })
            .collect();
        for batch in events.chunks(10) {
            sink.deliver(batch).await.unwrap();
        }
        let out = dir.path().join("ns/c/out");
        let mut names: Vec<String> =
            fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert!(names.contains(&"ns_a_c.ndjson".to_string()), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("ns_.._b_c.")), "{names:?}");
        // Rotated at least once and at most 2 rotated files kept per target.
        let rotated_a =
            names.iter().filter(|n| n.starts_with("ns_a_c.") && n.len() > "ns_a_c.ndjson".len()).count();
        assert!((1..=2).contains(&rotated_a), "{names:?}");
        // The current file's lines are valid JSON and in order.
        let text = fs::read_to_string(out.join("ns_a_c.ndjson")).unwrap();
        let mut last = -1i64;
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let n: i64 = v["message"].as_str().unwrap()[5..].parse().unwrap();
            assert!(n > last);
            last = n;
        }
        assert_eq!(last, 98);
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("a/b"), "a_b");
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize(""), "_");
    }
}
