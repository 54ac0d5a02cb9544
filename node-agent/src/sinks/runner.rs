//! The sink runner: one task per output with a bounded queue in front of it, batching by the
//! output's `BatchSpec` (events, bytes, time), and acknowledgements once a batch is delivered.
//!
//! The tailer hands each sink of a target the same `Arc<Chunk>`; when the queue of any of them is
//! full, the tailer stops reading that target's files (back-pressure) instead of buffering more.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tailor_crds::collection::BatchSpec;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Sink, SinkError};
use crate::ack::AckSet;
use crate::event::Event;

/// Events of one target, in file order, handed to every sink of the target.
#[derive(Debug, Default)]
pub struct Chunk {
    pub events: Vec<Event>,
    /// Acknowledged once per sink that delivered every event of the chunk.
    pub acks: AckSet,
}

/// Counters of one sink, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub batches: AtomicU64,
    pub failures: AtomicU64,
}

/// The tailer's end of a sink.
pub struct SinkHandle {
    pub name: String,
    pub tx: mpsc::Sender<Arc<Chunk>>,
    pub stats: Arc<SinkStats>,
    pub task: JoinHandle<()>,
}

/// Starts the task of `sink` with a queue of `queue` chunks.
pub fn spawn_sink(
    sink: Box<dyn Sink>,
    batch: &BatchSpec,
    queue: usize,
    force_stop: watch::Receiver<bool>,
) -> SinkHandle {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let stats = Arc::new(SinkStats::default());
    let name = sink.name().to_string();
    let limits = Limits {
        max_events: batch.max_events.max(1) as usize,
        max_bytes: batch.max_bytes.max(1) as usize,
        timeout: Duration::from_millis(u64::from(batch.timeout_ms.max(1))),
    };
    let task = tokio::spawn(run(sink, rx, limits, stats.clone(), force_stop));
    SinkHandle { name, tx, stats, task }
}

#[derive(Clone, Copy, Debug)]
struct Limits {
    max_events: usize,
    max_bytes: usize,
    timeout: Duration,
}

/// Events waiting to be delivered, and the chunks whose last event is among them.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    bytes: usize,
    complete: Vec<Arc<Chunk>>,
    opened: Option<Instant>,
}

async fn run(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Arc<Chunk>>,
    limits: Limits,
    stats: Arc<SinkStats>,
    mut force_stop: watch::Receiver<bool>,
) {
    let mut batch = Batch::default();
    loop {
        let deadline = batch.opened.map(|t| t + limits.timeout);
        let next = tokio::select! {
            c = rx.recv() => c,
            _ = sleep_until(deadline) => {
                if deliver(&mut *sink, &mut batch, &stats).await.is_err() { return; }
                continue;
            }
            _ = forced(&mut force_stop) => return,
        };
        let Some(chunk) = next else {
            // The tailer is done: deliver what is left, then stop.
            let _ = deliver(&mut *sink, &mut batch, &stats).await;
            return;
        };
        for e in &chunk.events {
            if batch.opened.is_none() {
                batch.opened = Some(Instant::now());
            }
            batch.bytes += e.message.len();
            batch.events.push(e.clone());
            if (batch.events.len() >= limits.max_events || batch.bytes >= limits.max_bytes)
                && deliver(&mut *sink, &mut batch, &stats).await.is_err()
            {
                return;
            }
        }
        batch.complete.push(chunk);
        if batch.events.is_empty() {
            // Every event of the chunk went out with an earlier batch (or it had none).
            ack_complete(&mut batch);
        }
    }
}

/// Resolves once the force-stop flag is set (never, if its sender is gone).
pub async fn forced(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Delivers the batch; on success acknowledges every chunk it completes.
async fn deliver(sink: &mut dyn Sink, batch: &mut Batch, stats: &SinkStats) -> Result<(), SinkError> {
    if !batch.events.is_empty() {
        if let Err(e) = sink.deliver(&batch.events).await {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sink = sink.name(), error = %e, "sink gave up on a batch; it stays uncommitted");
            return Err(e);
        }
        stats.events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        stats.bytes.fetch_add(batch.bytes as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        batch.events.clear();
        batch.bytes = 0;
    }
    batch.opened = None;
    ack_complete(batch);
    Ok(())
}

fn ack_complete(batch: &mut Batch) {
    for c in batch.complete.drain(..) {
        c.acks.ack();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use futures::future::BoxFuture;

    use super::*;
    use crate::ack::Ledger;
    use crate::event::{EventFlags, FileId};

    /// Records batch sizes; fails every batch while `fail` is set.
    struct Recorder {
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for Recorder {
        fn name(&self) -> &str {
            "test/recorder"
        }
        fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
            let n = events.len();
            let batches = self.batches.clone();
            Box::pin(async move {
                batches.lock().unwrap().push(n);
                Ok(())
            })
        }
    }

    fn event(offset: u64) -> Event {
        Event {
            meta: Default::default(),
            file: FileId { dev: 1, ino: 1, fingerprint: 1 },
            offset,
            timestamp_nanos: 0,
            stream: None,
            message: Bytes::from_static(b"0123456789"),
            fields: None,
            flags: EventFlags::default(),
        }
    }

    fn chunk(ledger: &Ledger, offsets: std::ops::Range<u64>, sinks: u32) -> Arc<Chunk> {
        let mut acks = AckSet::default();
        acks.push(ledger.clone(), ledger.lock().register(offsets.end, sinks));
        Arc::new(Chunk { events: offsets.map(event).collect(), acks })
    }

    #[tokio::test]
    async fn batches_by_count_and_acks_after_delivery() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (_force_tx, force_rx) = watch::channel(false);
        let spec = BatchSpec { max_events: 4, max_bytes: 1 << 20, timeout_ms: 60_000 };
        let h = spawn_sink(Box::new(Recorder { batches: batches.clone() }), &spec, 2, force_rx);
        let ledger = Ledger::new(0);
        h.tx.send(chunk(&ledger, 0..3, 1)).await.unwrap();
        h.tx.send(chunk(&ledger, 3..6, 1)).await.unwrap();
        h.tx.send(chunk(&ledger, 6..8, 1)).await.unwrap();
        // 8 events: two full batches of 4; the chunk ending at 6 is acked, the one ending at 8 too.
        for _ in 0..100 {
            if ledger.committed() == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ledger.committed(), 8);
        assert_eq!(*batches.lock().unwrap(), [4, 4]);
        drop(h.tx);
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_goes_out_after_the_timeout() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (_force_tx, force_rx) = watch::channel(false);
        let spec = BatchSpec { max_events: 100, max_bytes: 1 << 20, timeout_ms: 500 };
        let h = spawn_sink(Box::new(Recorder { batches: batches.clone() }), &spec, 2, force_rx);
        let ledger = Ledger::new(0);
        h.tx.send(chunk(&ledger, 0..3, 2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(batches.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*batches.lock().unwrap(), [3]);
        assert_eq!(ledger.committed(), 0, "the second sink has not acknowledged yet");
        drop(h.tx);
        h.task.await.unwrap();
    }
}
