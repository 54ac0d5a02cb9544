//! Disk buffer: a `Sink` wrapper that makes a batch durable on disk, acknowledges it, and
//! delivers it to the wrapped sink in the background, so that a destination that is slow or
//! down for a long time does not stop reading until the buffer is full, and a restart during an
//! outage loses nothing.
//!
//! - Layout: `<state-dir>/buffer/<sink>/<seq>.seg` segments of records framed with length and
//!   CRC (`frame`), one record per accepted batch (`codec`), and an `ack` file with the position
//!   of the first record the wrapped sink has not delivered yet.
//! - `deliver` = append + fsync, then `Ok`: the runner may checkpoint those events.
//! - A background task reads one record at a time (bounded memory), hands it to the wrapped
//!   sink (which retries as it does without a buffer), then moves the `ack` position and
//!   deletes segments it finished. A crash between delivery and the `ack` write re-sends that one
//!   batch (zero duplicates for Elasticsearch thanks to `_id`).
//! - Size cap: records not yet delivered never exceed `maxSize` (plus the delivered head of the
//!   oldest segment, at most one segment). When full: `block` makes `deliver` wait for room
//!   (back-pressure to the targets of this sink), `dropNewest` drops the batch and counts it.
//!   A batch larger than the whole cap is accepted when the buffer is empty, so it cannot wedge.

pub mod codec;
pub mod frame;
pub mod segments;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tailor_crds::collection::{BufferSpec, WhenFull};
use tailor_crds::units::{UnitError, parse_bytes};
use tokio::sync::Notify;
use tokio::sync::watch;

use crate::event::Event;
use crate::sinks::net::backoff::Backoff;
use crate::sinks::net::{NetContext, NetStats, RetryPolicy, file_safe_name, stopped};
use crate::sinks::{Sink, SinkError};
use segments::{Position, ReadOutcome, Writer};

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer maxSize: {0}")]
    Size(#[from] UnitError),
    #[error("buffer directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BufferError {
    pub fn category(&self) -> &'static str {
        match self {
            BufferError::Size(_) => "size",
            BufferError::Io { .. } => "io",
        }
    }
}

/// Where the buffer of a sink lives: `<state-dir>/buffer/<sink name, file-safe>`.
pub fn buffer_dir(state_dir: &Path, sink: &str) -> PathBuf {
    state_dir.join("buffer").join(file_safe_name(sink))
}

#[derive(Debug)]
struct State {
    /// Durable end of the buffer: the drain task reads up to here.
    write: Position,
    /// Bytes of records not yet delivered.
    pending_bytes: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// A record was appended.
    data: Notify,
    /// A record was delivered (room was made).
    space: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the numbers inside stay consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A sink that buffers on disk in front of another one.
pub struct DiskBuffer {
    name: String,
    shared: Arc<Shared>,
    writer: Option<Writer>,
    max_bytes: u64,
    when_full: WhenFull,
    stats: Arc<NetStats>,
    force_stop: watch::Receiver<bool>,
    policy: RetryPolicy,
    drain: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DiskBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBuffer").field("name", &self.name).field("max_bytes", &self.max_bytes).finish()
    }
}

impl DiskBuffer {
    /// Opens the buffer of `ctx.name` under `ctx.state_dir`, recovering what a previous run left
    /// (cheap: a directory listing and a scan of the newest segment only, which is where a crash
    /// can tear a write), and starts delivering its content to `inner`. Needs a Tokio runtime.
    pub fn open(
        spec: &BufferSpec,
        ctx: &NetContext,
        inner: Box<dyn Sink>,
    ) -> Result<DiskBuffer, BufferError> {
        let max_bytes = parse_bytes(&spec.max_size)?;
        let dir = buffer_dir(&ctx.state_dir, &ctx.name);
        let segment_max = (max_bytes / 4).clamp(64 << 10, 64 << 20);
        let recovered = segments::recover(&dir, segment_max)
            .map_err(|source| BufferError::Io { path: dir.clone(), source })?;
        if recovered.pending_bytes > 0 {
            tracing::info!(sink = %ctx.name, bytes = recovered.pending_bytes, "resuming delivery of buffered events");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                write: Position { seg: recovered.writer.seg, off: recovered.writer.len },
                pending_bytes: recovered.pending_bytes,
            }),
            data: Notify::new(),
            space: Notify::new(),
        });
        let drain = tokio::spawn(drain(
            ctx.name.clone(),
            dir,
            shared.clone(),
            inner,
            recovered.read,
            ctx.force_stop.clone(),
            ctx.opts.retry.clone(),
        ));
        Ok(DiskBuffer {
            name: ctx.name.clone(),
            shared,
            writer: Some(recovered.writer),
            max_bytes,
            when_full: spec.when_full,
            stats: ctx.opts.stats.clone(),
            force_stop: ctx.force_stop.clone(),
            policy: ctx.opts.retry.clone(),
            drain,
        })
    }

    /// Bytes of records not yet delivered by the wrapped sink.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.lock().pending_bytes
    }

    /// Whether the background delivery task is still running.
    pub fn is_draining(&self) -> bool {
        !self.drain.is_finished()
    }

    async fn accept(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut payload = Vec::with_capacity(events.len() * 320);
        codec::encode_batch(events, &mut payload);
        let mut record = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::frame(&payload, &mut record);
        drop(payload);
        let size = record.len() as u64;

        // Reserve room.
        loop {
            {
                let mut st = self.shared.lock();
                if st.pending_bytes == 0 || st.pending_bytes + size <= self.max_bytes {
                    st.pending_bytes += size;
                    break;
                }
            }
            match self.when_full {
                WhenFull::DropNewest => {
                    NetStats::add(&self.stats.dropped, events.len());
                    tracing::warn!(sink = %self.name, events = events.len(), "disk buffer full, batch dropped");
                    return Ok(());
                }
                WhenFull::Block => tokio::select! {
                    _ = self.shared.space.notified() => {}
                    _ = stopped(&self.force_stop) => return Err(self.shutting_down()),
                },
            }
        }

        let mut backoff = Backoff::new(self.policy.clone());
        loop {
            let Some(mut writer) = self.writer.take() else {
                self.shared.lock().pending_bytes -= size;
                return Err(SinkError::Failed {
                    sink: self.name.clone(),
                    message: "buffer writer lost".into(),
                    source: None,
                });
            };
            let joined = tokio::task::spawn_blocking(move || {
                let res = writer.append(&record);
                (writer, record, res)
            })
            .await;
            let (w, r, res) = match joined {
                Ok(t) => t,
                Err(e) => {
                    self.shared.lock().pending_bytes -= size;
                    return Err(SinkError::Failed {
                        sink: self.name.clone(),
                        message: "buffer write task failed".into(),
                        source: Some(Box::new(e)),
                    });
                }
            };
            record = r;
            let end = Position { seg: w.seg, off: w.len };
            self.writer = Some(w);
            match res {
                Ok(()) => {
                    self.shared.lock().write = end;
                    self.shared.data.notify_one();
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot write the disk buffer, retrying");
                    if backoff.wait(&self.force_stop).await.is_err() {
                        self.shared.lock().pending_bytes -= size;
                        return Err(self.shutting_down());
                    }
                }
            }
        }
    }

    fn shutting_down(&self) -> SinkError {
        SinkError::ShuttingDown { sink: self.name.clone() }
    }
}

impl Sink for DiskBuffer {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.accept(events))
    }
}

/// The background task: delivers records in order and moves the `ack` position.
async fn drain(
    name: String,
    dir: PathBuf,
    shared: Arc<Shared>,
    mut inner: Box<dyn Sink>,
    mut read: Position,
    force_stop: watch::Receiver<bool>,
    policy: RetryPolicy,
) {
    let mut backoff = Backoff::new(policy);
    loop {
        let write = shared.lock().write;
        if read.seg == write.seg && read.off >= write.off {
            tokio::select! {
                _ = shared.data.notified() => continue,
                _ = stopped(&force_stop) => return,
            }
        }
        let limit = (read.seg == write.seg).then_some(write.off);
        let d = dir.clone();
        let got = tokio::task::spawn_blocking(move || segments::read_record(&d, read, limit)).await;
        let (payload, next) = match got {
            Ok(Ok(ReadOutcome::Record { payload, next })) => (payload, next),
            Ok(Ok(outcome @ (ReadOutcome::EndOfSegment | ReadOutcome::Damaged))) => {
                if read.seg == write.seg {
                    // The segment being written is read only up to its durable end, which is
                    // always a record boundary; damage there is an IO problem: retry.
                    tracing::error!(sink = %name, ?read, "unreadable record in the active buffer segment");
                    if backoff.wait(&force_stop).await.is_err() {
                        return;
                    }
                    continue;
                }
                if matches!(outcome, ReadOutcome::Damaged) {
                    tracing::error!(sink = %name, ?read, "damaged buffer segment, skipping its rest");
                }
                // Done with this segment: step to the next one that exists.
                let mut next_seg = read.seg + 1;
                while next_seg < write.seg && !segments::segment_exists(&dir, next_seg) {
                    next_seg += 1;
                }
                let freed =
                    if matches!(outcome, ReadOutcome::Damaged) { segment_rest(&dir, read) } else { 0 };
                let old = read.seg;
                read = Position { seg: next_seg, off: 0 };
                let d = dir.clone();
                let res = tokio::task::spawn_blocking(move || {
                    segments::write_ack(&d, read)?;
                    segments::remove_segment(&d, old)
                })
                .await;
                if let Ok(Err(e)) | Err(e) = res.map_err(std::io::Error::other) {
                    tracing::warn!(sink = %name, error = %e, "cannot move the buffer's ack position");
                }
                if freed > 0 {
                    let mut st = shared.lock();
                    st.pending_bytes = st.pending_bytes.saturating_sub(freed);
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(sink = %name, error = %e, "cannot read the disk buffer, retrying");
                if backoff.wait(&force_stop).await.is_err() {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        let size = next - read.off;
        match codec::decode_batch(payload) {
            Ok(events) => loop {
                match inner.deliver(&events).await {
                    Ok(()) => break,
                    Err(SinkError::ShuttingDown { .. }) => return,
                    Err(e) => {
                        tracing::warn!(sink = %name, error = %e, "buffered batch not delivered, retrying");
                        if backoff.wait(&force_stop).await.is_err() {
                            return;
                        }
                    }
                }
            },
            Err(e) => tracing::error!(sink = %name, error = %e, ?read, "undecodable buffered batch skipped"),
        }
        backoff.reset();
        read.off = next;
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || segments::write_ack(&d, read)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(sink = %name, error = %e, "cannot persist the buffer's ack position")
            }
            Err(_) => return,
        }
        {
            let mut st = shared.lock();
            st.pending_bytes = st.pending_bytes.saturating_sub(size);
        }
        shared.space.notify_one();
    }
}

/// Bytes from `pos` to the end of its segment (what skipping a damaged rest frees).
fn segment_rest(dir: &Path, pos: Position) -> u64 {
    std::fs::metadata(segments::segment_path(dir, pos.seg))
        .map(|m| m.len().saturating_sub(pos.off))
        .unwrap_or(0)
}
