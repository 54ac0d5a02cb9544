//! The collection engine: applies a `NodeLogConfigSpec` by discovering, tailing and decoding
//! the files of every target, running them through the target's processor, and handing chunks to
//! the sinks; commits offsets from the sinks' acknowledgements into checkpoints.
//!
//! It runs on one dedicated thread (blocking file IO stays off the async executor) and owns all
//! file state; sinks run as async tasks behind bounded queues. A target whose sink queue is full
//! is skipped (back-pressure) while the others go on.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tailor_crds::common::StartPosition;
use tailor_crds::node::{
    CollectionTarget, HostRootKind, Input, InputKind, NodeCollection, NodeLogConfigSpec, StdStream,
    TargetError,
};
use tokio::sync::{mpsc, watch};

use crate::ack::{AckSet, Ledger};
use crate::checkpoint::{CheckpointKey, CheckpointStore, FileCheckpoint, fnv1a};
use crate::decode::{Decoder, Format, Line, Record, Splitter};
use crate::docker::target_key;
use crate::event::{Event, EventFlags, FileId, TargetMeta};
use crate::metrics::Metrics;
use crate::moved_root::{Found, Seen, moved_root};
use crate::pipeline::PipelineCounters;
use crate::process::{Processor, build_processor};
use crate::resolve::{InRoot, RootfsLocator, input_root};
use crate::secrets::{NoSecrets, OutputSecrets, SecretSource, resolve_output};
use crate::sinks::net::{NetOptions, NetStats};
use crate::sinks::{self, Chunk, SinkContext, SinkHandle, spawn_sink};

/// Bytes hashed into a file's fingerprint.
const FINGERPRINT_LEN: u64 = 64;
/// Bytes read from one target per turn, so that a busy file does not starve the others. It is
/// also the most a chunk holds: parsed events take several times their line's bytes, and every
/// output queues `sink_queue` chunks, so this bounds memory more than anything else.
const TARGET_BUDGET: usize = 1 << 20;
/// How long a rotated-away or deleted file is kept open after it was last seen growing.
const RELEASE_AFTER: Duration = Duration::from_secs(2);
/// A turn that read less than this sleeps a little before the next one.
const LIGHT_TURN: usize = 64 * 1024;
/// A file at its end is read again when inotify reports it modified, or after this long: events
/// can be missed (queue overflow, the watch limit, some FUSE mounts), so idle files are still
/// polled, but a thousand of them cost a few reads per second each instead of one per turn.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Longest wait of an idle turn for an inotify event (the rescan and idle polls bound it too).
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Wait of a turn that read nothing because outputs' queues were full.
const BLOCKED_WAIT: Duration = Duration::from_millis(2);
/// Checkpoints of files no longer seen are kept this long (rotated files, restarts).
const ORPHAN_TTL: Duration = Duration::from_secs(3600);
/// How often outputs' Secrets are resolved again (rotation), when the source says they may
/// have changed.
const SECRET_CHECK: Duration = Duration::from_secs(1);

/// Settings of the engine (from the command line).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub node_name: String,
    pub host_root: PathBuf,
    pub state_dir: PathBuf,
    pub output_dir: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    pub rescan_interval: Duration,
    pub max_open_files: usize,
    pub read_bytes: usize,
    pub max_event_bytes: usize,
    pub shutdown_grace: Duration,
    pub file_max_bytes: u64,
    pub file_max_files: usize,
    pub sink_queue: usize,
}

impl EngineConfig {
    pub fn new(node_name: &str, host_root: &Path, state_dir: &Path) -> Self {
        Self {
            node_name: node_name.to_string(),
            host_root: host_root.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            output_dir: None,
            checkpoint_interval: Duration::from_secs(5),
            rescan_interval: Duration::from_secs(1),
            max_open_files: 1024,
            read_bytes: 256 * 1024,
            max_event_bytes: crate::decode::DEFAULT_MAX_EVENT_BYTES,
            shutdown_grace: Duration::from_secs(20),
            file_max_bytes: 256 << 20,
            file_max_files: 5,
            sink_queue: 4,
        }
    }
}

/// A configuration to apply, with the generation of the object it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub generation: i64,
    pub spec: NodeLogConfigSpec,
}

impl crate::backup::BackupConfigView for Applied {
    fn backups(&self) -> Option<(Option<i64>, Vec<tailor_crds::node::NodeBackup>)> {
        Some((Some(self.generation), self.spec.backups.clone()))
    }
}

/// What the engine reports for the NodeLogConfig status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStatus {
    pub observed_generation: Option<i64>,
    pub active_targets: u32,
    pub active_files: u32,
    pub errors: Vec<TargetError>,
    /// Unix seconds of the last checkpoint write.
    pub last_checkpoint: Option<i64>,
    /// A problem with checkpoints (corrupt slot found, write failures).
    pub checkpoint_problem: Option<String>,
}

/// Shutdown requests: 0 run, 1 graceful (drain), 2 forced.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicU8>);

impl Shutdown {
    pub fn request(&self) -> u8 {
        self.0.fetch_add(1, Ordering::SeqCst).saturating_add(1)
    }
    pub fn level(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Collection {
    spec: NodeCollection,
    /// Still in the applied configuration (else its targets drain and it goes).
    in_config: bool,
    sinks: Vec<SinkHandle>,
    sink_error: Option<String>,
    /// Per output (in spec order): the Secret values its sink was built with, or why they could
    /// not be resolved; compared with a fresh resolution to notice rotation.
    secrets: Vec<Resolved>,
    targets: BTreeMap<String, Target>,
    /// Shared by the pipelines of its targets, kept across configuration changes.
    counters: Arc<PipelineCounters>,
}

/// The outcome of resolving one output's Secrets (the error as its message).
type Resolved = Result<OutputSecrets, String>;

/// Which sinks of a collection to rebuild after its outputs' Secrets were resolved again.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretRebuild {
    Nothing,
    /// These outputs (indices into the spec's outputs); the others keep running.
    Outputs(Vec<usize>),
    /// Every output: the collection was held, or now must be (a Secret became unusable).
    All,
}

/// Decides what a change of resolved Secrets means for a collection whose sinks are `running`.
pub fn secret_rebuild<T: PartialEq, E: PartialEq>(
    before: &[Result<T, E>],
    now: &[Result<T, E>],
    running: bool,
) -> SecretRebuild {
    if before == now {
        return SecretRebuild::Nothing;
    }
    if !running || before.len() != now.len() || now.iter().any(Result::is_err) {
        return SecretRebuild::All;
    }
    SecretRebuild::Outputs((0..now.len()).filter(|&i| before[i] != now[i]).collect())
}

struct Target {
    key: String,
    meta: Arc<TargetMeta>,
    spec: CollectionTarget,
    processor: Box<dyn Processor>,
    processor_error: Option<String>,
    /// What a replaced processor still held (a multiline event): sent before anything newer.
    held: Vec<Event>,
    inputs: Vec<InputState>,
    files: Vec<Tracked>,
    errors: Vec<String>,
    /// Contents of files truncated in place, so that their copy (copy-truncate) goes on from
    /// where reading stopped.
    recent: Vec<Recent>,
    /// Removed from the configuration: read what is left, then let go.
    draining: bool,
    source_generation: i64,
}

/// What was read of a file's former content before it was truncated.
struct Recent {
    fingerprint: u64,
    fingerprint_len: u32,
    /// Line boundary up to which it was read.
    offset: u64,
    path: PathBuf,
    /// The ledger of the content before the truncation.
    ledger: Ledger,
}

/// Most `Recent` entries kept per target.
const RECENT_MAX: usize = 16;

struct InputState {
    input: Input,
    format: Format,
    keep: [bool; 2],
    root: Option<Arc<InRoot>>,
}

struct Tracked {
    id: FileId,
    fingerprint_len: u32,
    input: usize,
    root: Option<Arc<InRoot>>,
    rel: PathBuf,
    path: PathBuf,
    file: Option<File>,
    read_offset: u64,
    splitter: Splitter,
    decoder: Decoder,
    ledger: Ledger,
    /// Still matched by its input at its path (not rotated away or deleted).
    present: bool,
    last_growth: Instant,
    at_eof: bool,
    /// When a file at its end is read again without an inotify event (`IDLE_POLL`).
    next_poll: Instant,
    /// In a container's writable layer: read every turn. inotify does not see writes made
    /// through an overlay or FUSE mount reliably, and that mount goes away when the container
    /// stops, so its last lines must be read at once, not at the next idle poll.
    every_turn: bool,
    /// For a copy that goes on from where its original was read: the original's ledger, whose
    /// events in flight still hold the commit back.
    floor: Option<Ledger>,
    /// A compressed rotated file (`.gz`): offsets count decompressed bytes.
    gz: Option<GzState>,
    /// The identity it had before its container's root moved (`moved_root`): events read under
    /// it may still be held by a processor (multiline) and must find this file's ledger.
    former_id: Option<FileId>,
    /// Its root moved: read the open descriptor to its end (the container may be removed before
    /// a reopen), then reopen under the new root (the old mount sees no new writes).
    reopen_at_eof: bool,
}

/// Reading a `.gz` file: the decoder while open, and when to try again after it failed (a file
/// still being compressed ends early).
#[derive(Default)]
struct GzState {
    decoder: Option<Box<flate2::read::MultiGzDecoder<File>>>,
    retry_at: Option<Instant>,
}

impl Tracked {
    /// The offset a checkpoint may record: nothing before it is unacknowledged.
    fn committed(&self) -> u64 {
        let own = self.ledger.committed();
        match &self.floor {
            Some(l) => {
                let l = l.lock();
                if l.in_flight() > 0 { own.min(l.committed()) } else { own }
            }
            None => own,
        }
    }
}

/// The engine; `run` consumes it on its own thread.
pub struct Engine {
    cfg: EngineConfig,
    locator: Arc<dyn RootfsLocator>,
    rt: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    force_tx: watch::Sender<bool>,
    collections: BTreeMap<String, Collection>,
    store: CheckpointStore,
    orphans: BTreeMap<CheckpointKey, FileCheckpoint>,
    applied_targets: BTreeSet<String>,
    generation: i64,
    checkpoint_problem: Option<String>,
    last_checkpoint: Option<i64>,
    open_files: usize,
    scratch: BytesMut,
    lines: Vec<Line>,
    records: Vec<Record>,
    out: Vec<Event>,
    watcher: Option<DirWatcher>,
    /// Files inotify reported modified since the last turn: read even if at their end.
    woken: HashSet<PathBuf>,
    /// A target was skipped in the last turn because an output's queue was full.
    blocked: bool,
    /// Read turns so far: where the next turn starts among a collection's targets.
    turn: usize,
    /// Tasks of replaced sinks, delivering what they still hold.
    retired: Vec<tokio::task::JoinHandle<()>>,
    /// Where the values of the Secrets outputs name come from.
    secrets: Arc<dyn SecretSource>,
    /// Counters of network outputs by sink name, kept across rebuilds so that they never reset.
    net_stats: BTreeMap<String, Arc<NetStats>>,
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        locator: Arc<dyn RootfsLocator>,
        rt: tokio::runtime::Handle,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut store = CheckpointStore::new(&cfg.state_dir);
        let loaded = store.load();
        let mut checkpoint_problem = None;
        for p in &loaded.problems {
            tracing::error!(error = %p, "checkpoint slot unusable; using the other one");
            Metrics::add(&metrics.checkpoint_corrupt, 1);
            checkpoint_problem = Some(p.to_string());
        }
        if loaded.lost {
            tracing::error!("every checkpoint slot is corrupt: files are read again from where `start` says");
            checkpoint_problem = Some("every checkpoint slot is corrupt; started without checkpoints".into());
        }
        let (force_tx, _) = watch::channel(false);
        Self {
            watcher: DirWatcher::new()
                .map_err(|e| tracing::warn!(error = %e, "no inotify; polling only"))
                .ok(),
            cfg,
            locator,
            rt,
            metrics,
            force_tx,
            collections: BTreeMap::new(),
            store,
            orphans: loaded.files,
            applied_targets: loaded.applied_targets,
            generation: 0,
            checkpoint_problem,
            last_checkpoint: None,
            open_files: 0,
            scratch: BytesMut::new(),
            lines: Vec::new(),
            records: Vec::new(),
            out: Vec::new(),
            woken: HashSet::new(),
            blocked: false,
            turn: 0,
            retired: Vec::new(),
            secrets: Arc::new(NoSecrets),
            net_stats: BTreeMap::new(),
        }
    }

    /// Resolves the Secrets outputs name from `source` (default: none, and an output that names
    /// one is not built).
    pub fn with_secrets(mut self, source: Arc<dyn SecretSource>) -> Self {
        self.secrets = source;
        self
    }

    /// Runs until `shutdown` is requested, applying every configuration `config` publishes, and
    /// publishing status on `status`.
    pub fn run(
        mut self,
        mut config: watch::Receiver<Option<Applied>>,
        status: watch::Sender<EngineStatus>,
        shutdown: Shutdown,
    ) {
        let mut next_rescan = Instant::now();
        let mut next_checkpoint = Instant::now() + self.cfg.checkpoint_interval;
        let mut next_status = Instant::now();
        let mut next_secret_check = Instant::now() + SECRET_CHECK;
        // A configuration published before the engine started counts too.
        let initial = config.borrow_and_update().clone();
        if let Some(a) = initial {
            self.apply(a);
        }
        while shutdown.level() == 0 {
            let now = Instant::now();
            self.metrics.heartbeat.store(unix_now() as i64, Ordering::Relaxed);
            if config.has_changed().unwrap_or(false) {
                let applied = config.borrow_and_update().clone();
                if let Some(a) = applied {
                    self.apply(a);
                    next_rescan = now;
                }
            }
            if now >= next_rescan {
                self.rescan();
                next_rescan = now + self.cfg.rescan_interval;
            }
            if now >= next_secret_check {
                self.refresh_secrets();
                next_secret_check = now + SECRET_CHECK;
            }
            let read = self.read_turn(now);
            self.settle(now);
            if now >= next_checkpoint {
                self.checkpoint();
                next_checkpoint = now + self.cfg.checkpoint_interval;
            }
            if now >= next_status {
                status.send_if_modified(|s| replace_if_changed(s, self.status()));
                next_status = now + Duration::from_millis(500);
            }
            if read > 0 && read < LIGHT_TURN {
                // Little to do: gather a few more lines per turn instead of spinning on each one.
                std::thread::sleep(Duration::from_millis(20));
            }
            // Wait for a change when idle; when busy, only take the events already queued. A
            // full sink queue frees up within milliseconds: look again soon, not in 100 ms.
            let idle_wait = if std::mem::take(&mut self.blocked) { BLOCKED_WAIT } else { IDLE_WAIT };
            let wait = if read == 0 {
                idle_wait.min(next_rescan.saturating_duration_since(Instant::now()))
            } else {
                Duration::ZERO
            };
            let changed = match &mut self.watcher {
                Some(w) => w.wait(wait, &mut self.woken),
                None if read == 0 => {
                    std::thread::sleep(wait);
                    false
                }
                None => false,
            };
            if changed {
                next_rescan = Instant::now();
            }
        }
        self.stop(&shutdown);
        status.send_if_modified(|s| replace_if_changed(s, self.status()));
    }

    /// Applies a new configuration: targets added, changed and removed, without re-reading.
    pub fn apply(&mut self, applied: Applied) {
        self.generation = applied.generation;
        self.metrics.config_generation.store(applied.generation, Ordering::Relaxed);
        if applied.spec.format_version != tailor_crds::node::FORMAT_VERSION {
            tracing::error!(
                version = applied.spec.format_version,
                "unknown NodeLogConfig format version; not applied"
            );
            return;
        }
        let mut wanted: BTreeMap<String, NodeCollection> = applied
            .spec
            .collections
            .into_iter()
            .map(|c| (format!("{}/{}", c.source.namespace, c.source.name), c))
            .collect();
        // Collections gone: their targets drain, their sinks close once drained.
        for (key, coll) in self.collections.iter_mut() {
            coll.in_config = wanted.contains_key(key);
            if !coll.in_config {
                for t in coll.targets.values_mut() {
                    t.draining = true;
                }
            }
        }
        for (key, spec) in std::mem::take(&mut wanted) {
            let rebuild = match self.collections.get(&key) {
                None => true,
                Some(c) => !same_outputs_and_pipeline(&c.spec, &spec),
            };
            if rebuild {
                let secrets = self.resolve_secrets(&spec);
                let (sinks, sink_error) = self.build_sinks(&spec, &secrets);
                match self.collections.get_mut(&key) {
                    Some(c) => {
                        self.retired
                            .extend(std::mem::replace(&mut c.sinks, sinks).into_iter().map(|h| h.task));
                        c.sink_error = sink_error;
                        c.secrets = secrets;
                    }
                    None => {
                        self.collections.insert(
                            key.clone(),
                            Collection {
                                spec: spec.clone(),
                                in_config: true,
                                sinks,
                                sink_error,
                                secrets,
                                targets: BTreeMap::new(),
                                counters: Arc::default(),
                            },
                        );
                    }
                }
            }
            let node = self.cfg.node_name.clone();
            let Some(coll) = self.collections.get_mut(&key) else { continue };
            let wanted_targets: BTreeMap<String, &CollectionTarget> =
                spec.targets.iter().map(|t| (target_key(&t.pod, &t.container), t)).collect();
            for (tkey, t) in coll.targets.iter_mut() {
                if !wanted_targets.contains_key(tkey) {
                    t.draining = true;
                }
            }
            for (tkey, tspec) in wanted_targets {
                let meta = Arc::new(target_meta(&node, &spec, tspec));
                match coll.targets.get_mut(&tkey) {
                    Some(t) => {
                        t.draining = false;
                        t.source_generation = spec.source.generation;
                        if rebuild || *t.meta != *meta {
                            let (p, e) = processor(&spec, &meta, &coll.counters);
                            // What the old pipeline holds was read: it is sent, not dropped.
                            let mut old = std::mem::replace(&mut t.processor, p);
                            old.flush(Instant::now(), true, &mut t.held);
                            t.processor_error = e;
                            t.meta = meta;
                        }
                        if t.spec.inputs != tspec.inputs {
                            t.inputs = input_states(&tspec.inputs);
                        }
                        t.spec = tspec.clone();
                    }
                    None => {
                        let (p, e) = processor(&spec, &meta, &coll.counters);
                        coll.targets.insert(
                            tkey,
                            Target {
                                key: meta.target.clone(),
                                meta,
                                spec: tspec.clone(),
                                processor: p,
                                processor_error: e,
                                held: Vec::new(),
                                inputs: input_states(&tspec.inputs),
                                files: Vec::new(),
                                errors: Vec::new(),
                                recent: Vec::new(),
                                draining: false,
                                source_generation: spec.source.generation,
                            },
                        );
                    }
                }
            }
            coll.spec = spec;
        }
        self.publish_sink_stats();
        tracing::info!(
            generation = self.generation,
            collections = self.collections.len(),
            "configuration applied"
        );
    }

    /// The Secrets of every output of `spec`, in output order.
    fn resolve_secrets(&self, spec: &NodeCollection) -> Vec<Resolved> {
        spec.outputs
            .iter()
            .map(|o| {
                resolve_output(o, &spec.source.namespace, &*self.secrets)
                    .map_err(|e| format!("output {}: {e}", o.name))
            })
            .collect()
    }

    /// Builds and starts the sinks of every output; none when any cannot be built (`secrets` is
    /// what `resolve_secrets` gave).
    fn build_sinks(
        &mut self,
        spec: &NodeCollection,
        secrets: &[Resolved],
    ) -> (Vec<SinkHandle>, Option<String>) {
        let mut handles = Vec::new();
        let mut errors = Vec::new();
        for (i, resolved) in secrets.iter().enumerate() {
            match resolved {
                Ok(values) => match self.build_sink(spec, i, values) {
                    Ok(h) => handles.push(h),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e.clone()),
            }
        }
        if !errors.is_empty() {
            // Every output must acknowledge an event before it is committed: with one missing,
            // reading this collection would either lose data for it or block forever. Hold it.
            tracing::error!(
                collection = %format!("{}/{}", spec.source.namespace, spec.source.name),
                errors = ?errors,
                "outputs could not be built; collection held"
            );
            return (Vec::new(), Some(errors.join("; ")));
        }
        if handles.is_empty() {
            return (Vec::new(), Some("no outputs".into()));
        }
        (handles, None)
    }

    /// Builds and starts the sink of output `i` of `spec` with its resolved Secrets.
    fn build_sink(
        &mut self,
        spec: &NodeCollection,
        i: usize,
        values: &OutputSecrets,
    ) -> Result<SinkHandle, String> {
        let output = &spec.outputs[i];
        let mut ctx = SinkContext {
            node_name: self.cfg.node_name.clone(),
            collection: spec.source.clone(),
            output_dir: self.cfg.output_dir.clone(),
            state_dir: self.cfg.state_dir.clone(),
            file_max_bytes: self.cfg.file_max_bytes,
            file_max_files: self.cfg.file_max_files,
            force_stop: self.force_tx.subscribe(),
            net: NetOptions::default(),
        };
        let name = ctx.sink_name(output);
        ctx.net = NetOptions {
            credentials: values.credentials.clone(),
            tls: values.tls.clone(),
            stats: self.net_stats.entry(name).or_default().clone(),
            ..NetOptions::default()
        };
        let _guard = self.rt.enter();
        let sink = sinks::build(output, &ctx).map_err(|e| e.to_string())?;
        Ok(spawn_sink(sink, &output.batch, self.cfg.sink_queue, self.force_tx.subscribe()))
    }

    /// Resolves every output's Secrets again and rebuilds the sinks whose values changed
    /// (rotation), or holds a collection whose Secret became unusable.
    fn refresh_secrets(&mut self) {
        if !self.secrets.take_changed() {
            return;
        }
        let keys: Vec<String> =
            self.collections.iter().filter(|(_, c)| c.in_config).map(|(k, _)| k.clone()).collect();
        let mut rebuilt = false;
        for key in keys {
            let Some(c) = self.collections.get(&key) else { continue };
            let now = self.resolve_secrets(&c.spec);
            let running = !c.sinks.is_empty();
            let decision = secret_rebuild(&c.secrets, &now, running);
            if decision == SecretRebuild::Nothing {
                continue;
            }
            let spec = c.spec.clone();
            let mut replaced = Vec::new();
            let mut full = decision == SecretRebuild::All;
            if let SecretRebuild::Outputs(indices) = &decision {
                for &i in indices {
                    let Ok(values) = &now[i] else { continue };
                    match self.build_sink(&spec, i, values) {
                        Ok(h) => replaced.push((i, h)),
                        Err(e) => {
                            tracing::error!(output = %spec.outputs[i].name, error = %e, "output rebuild failed");
                            full = true;
                        }
                    }
                }
            }
            let full_build = full.then(|| self.build_sinks(&spec, &now));
            let Some(c) = self.collections.get_mut(&key) else { continue };
            if let Some((sinks, error)) = full_build {
                // Sinks built for single outputs above go unused (their tasks end at once).
                self.retired.extend(std::mem::replace(&mut c.sinks, sinks).into_iter().map(|h| h.task));
                c.sink_error = error;
            } else {
                for (i, h) in replaced {
                    // The old sink delivers what it holds and ends; new chunks go to the new one.
                    let old = std::mem::replace(&mut c.sinks[i], h);
                    self.retired.push(old.task);
                }
            }
            tracing::info!(collection = %key, rebuild = ?decision, "output secrets changed");
            c.secrets = now;
            rebuilt = true;
        }
        if rebuilt {
            self.publish_sink_stats();
        }
    }

    fn publish_sink_stats(&mut self) {
        let mut s = self.metrics.sinks.lock().unwrap_or_else(|p| p.into_inner());
        s.clear();
        for c in self.collections.values() {
            for h in &c.sinks {
                s.push((h.name.clone(), h.stats.clone()));
            }
        }
        drop(s);
        let live: BTreeSet<String> = self
            .collections
            .values()
            .flat_map(|c| {
                c.spec
                    .outputs
                    .iter()
                    .map(|o| format!("{}/{}/{}", c.spec.source.namespace, c.spec.source.name, o.name))
            })
            .collect();
        self.net_stats.retain(|name, _| live.contains(name));
        let mut n = self.metrics.net_sinks.lock().unwrap_or_else(|p| p.into_inner());
        *n = self.net_stats.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        drop(n);
        let mut p = self.metrics.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        *p = self.collections.iter().map(|(key, c)| (key.clone(), c.counters.clone())).collect();
    }

    /// Expands every input and reconciles the tracked files with what is on disk now.
    fn rescan(&mut self) {
        for coll in self.collections.values_mut() {
            let start = coll.spec.start;
            for t in coll.targets.values_mut() {
                let first = !self.applied_targets.contains(&t.key);
                scan_target(
                    t,
                    start,
                    first,
                    &self.cfg,
                    &*self.locator,
                    &mut self.orphans,
                    &self.metrics,
                    self.watcher.as_mut(),
                );
                if first && !t.draining {
                    self.applied_targets.insert(t.key.clone());
                }
            }
        }
    }

    /// One turn over every target whose sinks have room and that has a file worth reading;
    /// returns the bytes read.
    fn read_turn(&mut self, now: Instant) -> usize {
        let mut progressed = 0;
        let woken = std::mem::take(&mut self.woken);
        // Files of a target going away, and files gone from their path, are drained now.
        let due = |f: &Tracked| {
            !f.at_eof || f.every_turn || !f.present || now >= f.next_poll || woken.contains(&f.path)
        };
        self.turn = self.turn.wrapping_add(1);
        for coll in self.collections.values_mut() {
            if coll.sinks.is_empty() {
                continue;
            }
            for t in rotated(coll.targets.values_mut().collect(), self.turn) {
                if !t.draining && !t.files.iter().any(due) && !t.processor.holds() && t.held.is_empty() {
                    continue;
                }
                let Some(permits) = reserve(&coll.sinks) else {
                    Metrics::add(&self.metrics.backpressure_waits, 1);
                    self.blocked = true;
                    continue;
                };
                self.out.append(&mut t.held);
                let mut budget = TARGET_BUDGET;
                for fi in 0..t.files.len() {
                    if !t.draining && !due(&t.files[fi]) {
                        continue;
                    }
                    while budget > 0 {
                        let n = read_file(
                            &mut t.files[fi],
                            &t.inputs,
                            &mut self.open_files,
                            &self.cfg,
                            &mut self.scratch,
                            &mut self.lines,
                            &mut self.records,
                            &mut t.recent,
                            &self.metrics,
                        );
                        if n == 0 {
                            t.files[fi].next_poll = now + IDLE_POLL;
                            break;
                        }
                        progressed += n;
                        budget = budget.saturating_sub(n);
                        let input = &t.inputs[t.files[fi].input];
                        for r in self.records.drain(..) {
                            if let Some(s) = r.stream
                                && !input.keep[s as usize]
                            {
                                continue;
                            }
                            let ev = Event {
                                meta: t.meta.clone(),
                                file: t.files[fi].id,
                                offset: r.end_offset,
                                timestamp_nanos: r.timestamp_nanos.unwrap_or_else(now_nanos),
                                stream: r.stream,
                                message: r.message,
                                fields: None,
                                flags: EventFlags { truncated: r.truncated, parse_failed: false },
                            };
                            t.processor.process(ev, &mut self.out);
                        }
                    }
                }
                // A target going away flushes what multiline holds once its files are read.
                let drained = t.draining && t.files.iter().all(|f| f.at_eof);
                t.processor.flush(Instant::now(), drained, &mut self.out);
                if !self.out.is_empty() {
                    send_chunk(t, &mut self.out, permits, coll.sinks.len() as u32, &self.metrics);
                }
            }
        }
        progressed
    }

    /// Lets go of drained files and targets; retires closed sinks.
    fn settle(&mut self, now: Instant) {
        let metrics = self.metrics.clone();
        let mut open_files = self.open_files;
        for coll in self.collections.values_mut() {
            for t in coll.targets.values_mut() {
                let draining = t.draining;
                let target = t.key.clone();
                let node_gen = self.generation;
                let src_gen = t.source_generation;
                let inputs = &t.inputs;
                let orphans = &mut self.orphans;
                // Held events still need their files' ledgers to be acknowledged against.
                let holds = t.processor.holds() || !t.held.is_empty();
                t.files.retain_mut(|f| {
                    let done_reading = f.at_eof && f.splitter.pending() == 0 && !f.decoder.holds_partial();
                    let gone = !f.present && now.duration_since(f.last_growth) >= RELEASE_AFTER;
                    // `at_eof` is as of the file's last read, which may be an idle poll ago: a file
                    // let go of must hold nothing past what was read (it may be deleted already,
                    // the open descriptor still reads it).
                    let release = (gone || draining)
                        && done_reading
                        && !holds
                        && f.ledger.lock().in_flight() == 0
                        && nothing_unread(f);
                    if release {
                        if f.file.take().is_some() {
                            open_files -= 1;
                        }
                        if f.gz.as_mut().and_then(|g| g.decoder.take()).is_some() {
                            open_files -= 1;
                        }
                        Metrics::add(&metrics.files_released, 1);
                        let cp = file_checkpoint(&target, f, inputs, node_gen, src_gen);
                        orphans.insert(cp.key(), cp);
                    }
                    !release
                });
            }
            coll.targets.retain(|_, t| !(t.draining && t.files.is_empty()));
        }
        self.open_files = open_files;
        self.close_idle(now);
        let before = self.collections.len();
        let mut retired = Vec::new();
        // A collection removed from the config keeps its sinks until its targets drained;
        // dropping a sink's sender then lets its task deliver what is queued and end.
        self.collections.retain(|_, c| {
            let keep = c.in_config || !c.targets.is_empty();
            if !keep {
                retired.extend(c.sinks.drain(..).map(|h| h.task));
            }
            keep
        });
        self.retired.append(&mut retired);
        self.retired.retain(|t| !t.is_finished());
        if before != self.collections.len() {
            self.publish_sink_stats();
        }
        let (targets, files) = self.counts();
        self.metrics.targets_active.store(targets as i64, Ordering::Relaxed);
        self.metrics.files_tracked.store(files as i64, Ordering::Relaxed);
        self.metrics.files_open.store(self.open_files as i64, Ordering::Relaxed);
    }

    /// Near the descriptor limit, closes files idle at their end (reopened when they grow:
    /// the rescan sees their size, the read reopens them inside their root).
    fn close_idle(&mut self, now: Instant) {
        if self.open_files * 10 < self.cfg.max_open_files * 9 {
            return;
        }
        for coll in self.collections.values_mut() {
            for t in coll.targets.values_mut() {
                for f in &mut t.files {
                    if f.file.is_some()
                        && f.present
                        && f.at_eof
                        && f.splitter.pending() == 0
                        && now.duration_since(f.last_growth) > Duration::from_secs(5)
                    {
                        f.file = None;
                        self.open_files -= 1;
                    }
                }
            }
        }
    }

    fn counts(&self) -> (usize, usize) {
        let targets = self.collections.values().map(|c| c.targets.len()).sum();
        let files = self.collections.values().flat_map(|c| c.targets.values()).map(|t| t.files.len()).sum();
        (targets, files)
    }

    /// Writes the committed offsets of every tracked file (and recent orphans).
    pub fn checkpoint(&mut self) {
        let now = unix_now();
        self.orphans.retain(|_, o| now.saturating_sub(o.seen) < ORPHAN_TTL.as_secs());
        let mut files: BTreeMap<CheckpointKey, FileCheckpoint> = self.orphans.clone();
        for coll in self.collections.values() {
            for t in coll.targets.values() {
                for f in &t.files {
                    let cp = file_checkpoint(&t.key, f, &t.inputs, self.generation, t.source_generation);
                    files.insert(cp.key(), cp);
                }
                // Contents truncated away whose copy has not shown up yet: found by fingerprint.
                for r in &t.recent {
                    let cp = FileCheckpoint {
                        target: t.key.clone(),
                        dev: 0,
                        ino: r.fingerprint,
                        fingerprint: r.fingerprint,
                        fingerprint_len: r.fingerprint_len,
                        offset: r.ledger.committed(),
                        host_path: r.path.clone(),
                        container_path: None,
                        rel: None,
                        node_generation: self.generation,
                        source_generation: t.source_generation,
                        seen: now,
                    };
                    files.insert(cp.key(), cp);
                }
            }
        }
        let live: BTreeSet<&str> =
            self.collections.values().flat_map(|c| c.targets.values()).map(|t| t.key.as_str()).collect();
        let applied: Vec<String> =
            self.applied_targets.iter().filter(|t| live.contains(t.as_str())).cloned().collect();
        let files: Vec<FileCheckpoint> = files.into_values().collect();
        match self.store.write(&files, &applied) {
            Ok(written) => {
                if written {
                    Metrics::add(&self.metrics.checkpoint_writes, 1);
                }
                self.last_checkpoint = Some(now as i64);
                self.metrics.checkpoint_last_write.store(now as i64, Ordering::Relaxed);
            }
            Err(e) => {
                Metrics::add(&self.metrics.checkpoint_failures, 1);
                tracing::error!(error = %e, "checkpoint write failed");
                self.checkpoint_problem = Some(e.to_string());
            }
        }
    }

    fn status(&self) -> EngineStatus {
        let (targets, files) = self.counts();
        let mut errors = Vec::new();
        for c in self.collections.values() {
            for t in c.targets.values() {
                let mut msgs: Vec<String> = t.errors.clone();
                if let Some(e) = &c.sink_error {
                    msgs.push(e.clone());
                }
                if let Some(e) = &t.processor_error {
                    msgs.push(e.clone());
                }
                if !msgs.is_empty() {
                    errors.push(TargetError {
                        target: format!(
                            "{} ({}/{})",
                            t.spec.key(),
                            c.spec.source.namespace,
                            c.spec.source.name
                        ),
                        message: msgs.join("; "),
                    });
                }
            }
        }
        errors.sort();
        EngineStatus {
            observed_generation: (self.generation > 0).then_some(self.generation),
            active_targets: targets as u32,
            active_files: files as u32,
            errors,
            last_checkpoint: self.last_checkpoint,
            checkpoint_problem: self.checkpoint_problem.clone(),
        }
    }

    /// Graceful stop: no more reading; flush what processors hold, let every sink deliver what it
    /// has within the grace period, then write the final checkpoint. A second request (or the end
    /// of the grace period) stops the sinks at once; what they did not acknowledge stays
    /// uncommitted and is read again after the restart.
    fn stop(&mut self, shutdown: &Shutdown) {
        tracing::info!("stopping: draining in-flight events");
        let deadline = Instant::now() + self.cfg.shutdown_grace;
        for coll in self.collections.values_mut() {
            for t in coll.targets.values_mut() {
                // What a replaced processor held was read before anything its successor holds.
                self.out.append(&mut t.held);
                t.processor.flush(Instant::now(), true, &mut self.out);
                if self.out.is_empty() {
                    continue;
                }
                loop {
                    if let Some(p) = reserve(&coll.sinks) {
                        send_chunk(t, &mut self.out, p, coll.sinks.len() as u32, &self.metrics);
                        break;
                    }
                    if Instant::now() >= deadline || shutdown.level() >= 2 || coll.sinks.is_empty() {
                        self.out.clear();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let mut tasks = Vec::new();
        for coll in self.collections.values_mut() {
            for h in coll.sinks.drain(..) {
                tasks.push(h.task);
            }
        }
        tasks.append(&mut self.retired);
        while !tasks.iter().all(|t| t.is_finished()) {
            if Instant::now() >= deadline || shutdown.level() >= 2 {
                tracing::warn!("grace period over: stopping sinks now");
                let _ = self.force_tx.send(true);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Give forced sinks a moment to return, so that nothing half-done is acknowledged later.
        let until = Instant::now() + Duration::from_millis(500);
        while !tasks.iter().all(|t| t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.checkpoint();
        tracing::info!("final checkpoint written");
    }
}

/// `items` starting at `turn` modulo their number: when outputs are saturated, the few free queue
/// slots of a turn go to other targets each turn instead of always to the first ones.
fn rotated<T>(mut items: Vec<T>, turn: usize) -> Vec<T> {
    if !items.is_empty() {
        let k = turn % items.len();
        items.rotate_left(k);
    }
    items
}

/// Whether an open file holds no byte beyond what was read (a compressed or closed one: as far
/// as can be told, yes; its reads already reported their end).
fn nothing_unread(f: &Tracked) -> bool {
    match &f.file {
        Some(file) if f.gz.is_none() => file.metadata().map_or(true, |m| m.len() <= f.read_offset),
        _ => true,
    }
}

fn replace_if_changed(s: &mut EngineStatus, new: EngineStatus) -> bool {
    if *s == new {
        false
    } else {
        *s = new;
        true
    }
}

/// Outputs, batching, parsing, multiline and filters equal: sinks and processors stay.
fn same_outputs_and_pipeline(a: &NodeCollection, b: &NodeCollection) -> bool {
    a.outputs == b.outputs && a.parse == b.parse && a.multiline == b.multiline && a.filters == b.filters
}

fn processor(
    spec: &NodeCollection,
    meta: &TargetMeta,
    counters: &Arc<PipelineCounters>,
) -> (Box<dyn Processor>, Option<String>) {
    match build_processor(spec, meta, counters.clone()) {
        Ok(p) => (p, None),
        Err(e) => (Box::new(crate::process::Identity), Some(e.to_string())),
    }
}

/// The metadata every event of a target carries.
pub fn target_meta(node: &str, coll: &NodeCollection, t: &CollectionTarget) -> TargetMeta {
    TargetMeta {
        target: format!(
            "collection/{}/{}/{}",
            coll.source.namespace,
            coll.source.name,
            target_key(&t.pod, &t.container).split_once('/').map_or("", |(_, rest)| rest)
        ),
        node: node.to_string(),
        namespace: t.pod.namespace.clone(),
        pod: t.pod.name.clone(),
        pod_uid: t.pod.uid.clone(),
        container: t.container.name.clone(),
        image: t.container.image.clone(),
        workload: t.pod.workload.as_ref().map(|w| format!("{}/{}", w.kind, w.name)),
        fields: t.fields.clone(),
    }
}

fn input_states(inputs: &[Input]) -> Vec<InputState> {
    inputs
        .iter()
        .map(|i| {
            let format = match (i.kind, i.root.kind) {
                (InputKind::Stdio, HostRootKind::DockerJson) => Format::DockerJson,
                (InputKind::Stdio, _) => Format::Cri,
                (InputKind::File, _) => Format::Plain,
            };
            let keep = if i.streams.is_empty() {
                [true, true]
            } else {
                [i.streams.contains(&StdStream::Stdout), i.streams.contains(&StdStream::Stderr)]
            };
            InputState { input: i.clone(), format, keep, root: None }
        })
        .collect()
}

/// Room in every sink queue of a target, or `None` (back-pressure).
fn reserve(sinks: &[SinkHandle]) -> Option<Vec<mpsc::OwnedPermit<Arc<Chunk>>>> {
    if sinks.is_empty() {
        return None;
    }
    sinks.iter().map(|s| s.tx.clone().try_reserve_owned().ok()).collect()
}

/// Sends `out` as one chunk to every sink, registering each file's part with its ledger.
fn send_chunk(
    t: &mut Target,
    out: &mut Vec<Event>,
    permits: Vec<mpsc::OwnedPermit<Arc<Chunk>>>,
    sinks: u32,
    metrics: &Metrics,
) {
    let mut ends: Vec<(FileId, u64)> = Vec::new();
    for e in out.iter() {
        match ends.iter_mut().find(|(id, _)| *id == e.file) {
            Some((_, end)) => *end = (*end).max(e.offset),
            None => ends.push((e.file, e.offset)),
        }
    }
    let mut acks = AckSet::default();
    for (id, end) in ends {
        if let Some(f) = t.files.iter().find(|f| f.id == id || f.former_id == Some(id)) {
            let seq = f.ledger.lock().register(end, sinks);
            acks.push(f.ledger.clone(), seq);
        }
    }
    Metrics::add(&metrics.events_sent, out.len() as u64);
    let chunk = Arc::new(Chunk { events: std::mem::take(out), acks });
    for p in permits {
        p.send(chunk.clone());
    }
}

fn file_checkpoint(
    target: &str,
    f: &Tracked,
    inputs: &[InputState],
    node_gen: i64,
    src_gen: i64,
) -> FileCheckpoint {
    FileCheckpoint {
        target: target.to_string(),
        dev: f.id.dev,
        ino: f.id.ino,
        fingerprint: f.id.fingerprint,
        fingerprint_len: f.fingerprint_len,
        offset: f.committed(),
        host_path: f.path.clone(),
        container_path: inputs.get(f.input).and_then(|i| i.input.container_path.clone()),
        rel: Some(f.rel.clone()),
        node_generation: node_gen,
        source_generation: src_gen,
        seen: unix_now(),
    }
}

/// Reconciles one target's tracked files with what its inputs match now.
#[allow(clippy::too_many_arguments)]
fn scan_target(
    t: &mut Target,
    start: StartPosition,
    first: bool,
    cfg: &EngineConfig,
    locator: &dyn RootfsLocator,
    orphans: &mut BTreeMap<CheckpointKey, FileCheckpoint>,
    metrics: &Metrics,
    mut watcher: Option<&mut DirWatcher>,
) {
    t.errors.clear();
    for f in &mut t.files {
        f.present = false;
    }
    if t.draining {
        return;
    }
    for (idx, input) in t.inputs.iter_mut().enumerate() {
        let root = match input_root(&input.input, &cfg.host_root, locator) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                // A terminated container's rootfs disappears; its files already tracked drain.
                if !(t.spec.container.terminated && e.category() == "no_rootfs") {
                    Metrics::add(&metrics.resolve_errors, 1);
                    t.errors.push(e.to_string());
                }
                input.root = None;
                continue;
            }
        };
        input.root = Some(root.clone());
        if let Some(w) = watcher.as_deref_mut() {
            w.watch(root.path());
        }
        let expansion = root.glob(&input.input.path);
        for p in expansion.problems {
            t.errors.push(p.to_string());
        }
        for m in expansion.files {
            let Ok(st) = std::fs::symlink_metadata(&m.path) else { continue };
            if !st.is_file() {
                continue;
            }
            if let Some(w) = watcher.as_deref_mut()
                && let Some(parent) = m.path.parent()
            {
                w.watch(parent);
            }
            if let Some(f) = t.files.iter_mut().find(|f| f.id.dev == st.dev() && f.id.ino == st.ino()) {
                if f.path != m.path && f.present {
                    continue; // another path (hard link) to a file already matched
                }
                if f.path != m.path {
                    Metrics::add(&metrics.rotations, 1);
                }
                f.present = true;
                f.path = m.path.clone();
                f.rel = m.rel.clone();
                f.root = Some(root.clone());
                if f.gz.is_none() && st.len() < f.read_offset {
                    truncated(f, metrics, &mut t.recent);
                }
                continue;
            }
            if st.len() == 0 {
                continue; // tracked once it has bytes to fingerprint
            }
            let Ok(file) = root.open_file(&m.rel) else { continue };
            let Ok(fst) = file.metadata() else { continue };
            let is_gz = m.path.extension().is_some_and(|e| e == "gz");
            // Offsets in a compressed file count decompressed bytes; its length is not known.
            let content_len = if is_gz { u64::MAX } else { fst.len() };
            let (fp, fp_len) =
                if is_gz { gz_fingerprint(&file, FINGERPRINT_LEN) } else { fingerprint(&file, fst.len()) };
            if fp_len == 0 {
                continue;
            }
            let id = FileId { dev: fst.dev(), ino: fst.ino(), fingerprint: fp };
            if t.files.iter().any(|f| f.id.dev == id.dev && f.id.ino == id.ino) {
                continue;
            }
            // The same file through another root of its container (MergedDir while it runs,
            // UpperDir once it stopped, and back at a restart): another device, sometimes another
            // inode, but the same content. It goes on where it was, through the new root.
            let found = |fingerprint_len: u32| Found {
                rel: &m.rel,
                host_path: &m.path,
                dev: id.dev,
                ino: id.ino,
                len: fst.len(),
                prefix: fingerprint_prefix(&file, u64::from(fingerprint_len)),
            };
            if !is_gz
                && let Some(f) = t.files.iter_mut().find(|f| {
                    f.input == idx
                        && !f.present
                        && f.gz.is_none()
                        && moved_root(&Seen::of_tracked(f), &found(f.fingerprint_len))
                })
            {
                tracing::info!(from = %f.path.display(), to = %m.path.display(), "file continues under its container's new root");
                f.reopen_at_eof = f.file.is_some();
                f.former_id = Some(f.id);
                f.id.dev = id.dev;
                f.id.ino = id.ino;
                f.path = m.path.clone();
                f.rel = m.rel.clone();
                f.root = Some(root.clone());
                f.present = true;
                f.at_eof = false;
                continue;
            }
            let key = (t.key.clone(), id.dev, id.ino);
            let moved = |o: &FileCheckpoint| {
                o.rel
                    .as_deref()
                    .is_some_and(|rel| moved_root(&Seen::of_checkpoint(o, rel), &found(o.fingerprint_len)))
            };
            // After a restart, or once the file was let go: its checkpoint under the old root.
            let key = if !orphans.contains_key(&key)
                && !is_gz
                && let Some(k) =
                    orphans.iter().find(|(k, o)| k.0 == t.key && moved(o)).map(|(k, _)| k.clone())
            {
                k
            } else {
                key
            };
            let resumed = match orphans.remove(&key) {
                Some(o) => {
                    let prefix = if is_gz {
                        Some(gz_fingerprint(&file, u64::from(o.fingerprint_len)))
                            .filter(|(_, n)| *n == u64::from(o.fingerprint_len))
                            .map(|(fp, _)| fp)
                    } else {
                        fingerprint_prefix(&file, u64::from(o.fingerprint_len))
                    };
                    let same = o.fingerprint_len <= fp_len as u32 && prefix == Some(o.fingerprint);
                    if !same {
                        // Its inode now holds other bytes (reuse, or truncated while the agent was
                        // down): keep what was read of the old content for a copy of it to find.
                        orphans.insert(
                            (t.key.clone(), 0, o.fingerprint),
                            FileCheckpoint { dev: 0, ino: o.fingerprint, ..o },
                        );
                    }
                    (same && o.offset <= content_len).then_some(o.offset)
                }
                None => None,
            };
            let copy_of = if resumed.is_some() {
                None
            } else {
                find_copy_origin(
                    &mut t.files,
                    &mut t.recent,
                    &t.key,
                    orphans,
                    fp,
                    fp_len as u32,
                    &m.path,
                    content_len,
                    is_gz,
                )
            };
            let floor = copy_of.as_ref().and_then(|(_, l)| l.clone());
            let offset = match (resumed, copy_of.map(|(o, _)| o)) {
                (Some(o), _) => o,
                (None, Some(o)) => o,
                (None, None) if first && start == StartPosition::End => content_len,
                (None, None) => 0,
            };
            let mut tracked = Tracked {
                id,
                fingerprint_len: fp_len as u32,
                input: idx,
                root: Some(root.clone()),
                rel: m.rel.clone(),
                path: m.path.clone(),
                file: None,
                read_offset: offset,
                splitter: Splitter::new(cfg.max_event_bytes),
                decoder: Decoder::new(input.format, cfg.max_event_bytes),
                ledger: Ledger::new(offset),
                present: true,
                last_growth: Instant::now(),
                at_eof: false,
                next_poll: Instant::now(),
                every_turn: input.input.root.kind == HostRootKind::ContainerRootfs,
                floor,
                gz: is_gz.then(GzState::default),
                former_id: None,
                reopen_at_eof: false,
            };
            drop(file);
            tracked.at_eof = !is_gz && tracked.read_offset >= fst.len();
            t.files.push(tracked);
        }
    }
}

impl<'a> Seen<'a> {
    fn of_tracked(f: &'a Tracked) -> Self {
        Seen {
            rel: &f.rel,
            host_path: &f.path,
            dev: f.id.dev,
            ino: f.id.ino,
            fingerprint: f.id.fingerprint,
            fingerprint_len: f.fingerprint_len,
            offset: f.read_offset,
        }
    }

    fn of_checkpoint(o: &'a FileCheckpoint, rel: &'a Path) -> Self {
        Seen {
            rel,
            host_path: &o.host_path,
            dev: o.dev,
            ino: o.ino,
            fingerprint: o.fingerprint,
            fingerprint_len: o.fingerprint_len,
            offset: o.offset,
        }
    }
}

/// A new file whose first bytes and name say it is a copy of a file already read (copy-truncate
/// rotation): the offset to go on from, instead of reading the copied part twice. Looks at files
/// being read (copied, not yet truncated: that one then skips what the copy holds), contents
/// truncated away, and checkpoints of files no longer where they were (their inode holds other
/// bytes, or it is empty after the truncation).
#[allow(clippy::too_many_arguments)]
fn find_copy_origin(
    files: &mut [Tracked],
    recent: &mut Vec<Recent>,
    target: &str,
    orphans: &mut BTreeMap<CheckpointKey, FileCheckpoint>,
    fp: u64,
    fp_len: u32,
    path: &Path,
    len: u64,
    is_gz: bool,
) -> Option<(u64, Option<Ledger>)> {
    let name = path.file_name()?.as_encoded_bytes();
    let extends = |orig: &Path| {
        orig.file_name().is_some_and(|o| name.len() > o.len() && name.starts_with(o.as_encoded_bytes()))
    };
    if fp_len == 0 {
        return None;
    }
    if let Some(live) =
        files.iter_mut().find(|f| f.id.fingerprint == fp && f.fingerprint_len == fp_len && extends(&f.path))
    {
        if is_gz {
            // A rotated file compressed while it is still open here: it is drained through its
            // descriptor, so the compressed copy adds nothing.
            let size =
                live.file.as_ref().and_then(|f| f.metadata().ok()).map_or(live.read_offset, |m| m.len());
            return Some((size, Some(live.ledger.clone())));
        }
        let boundary = live.read_offset - live.splitter.pending() as u64;
        if live.read_offset < len {
            // What the copy holds is read from the copy; the original's commit skips it once
            // its own events in flight are acknowledged.
            live.ledger.lock().register(len, 0);
            live.read_offset = len;
            live.splitter.reset();
            live.decoder.reset();
            if let Some(file) = &mut live.file {
                let _ = file.seek(SeekFrom::Start(len));
            }
        }
        return Some((boundary.min(len), Some(live.ledger.clone())));
    }
    if let Some(i) =
        recent.iter().position(|r| r.fingerprint == fp && r.fingerprint_len == fp_len && extends(&r.path))
    {
        let r = recent.remove(i);
        return Some((r.offset.min(len), Some(r.ledger)));
    }
    let key = orphans
        .iter()
        .find(|(k, o)| {
            k.0 == target && o.fingerprint == fp && o.fingerprint_len == fp_len && extends(&o.host_path)
        })
        .map(|(k, _)| k.clone())?;
    orphans.remove(&key).map(|o| (o.offset.min(len), None))
}

fn truncated(f: &mut Tracked, metrics: &Metrics, recent: &mut Vec<Recent>) {
    Metrics::add(&metrics.truncations, 1);
    if f.fingerprint_len > 0 {
        recent.push(Recent {
            fingerprint: f.id.fingerprint,
            fingerprint_len: f.fingerprint_len,
            offset: f.read_offset - f.splitter.pending() as u64,
            path: f.path.clone(),
            ledger: f.ledger.clone(),
        });
        if recent.len() > RECENT_MAX {
            recent.remove(0);
        }
    }
    // The new content is a new identity: events of the old one in flight no longer count for it.
    f.id.fingerprint = 0;
    f.fingerprint_len = 0;
    f.read_offset = 0;
    f.splitter.reset();
    f.decoder.reset();
    // Acknowledgements of events read before the truncation go to the old ledger.
    f.ledger = Ledger::new(0);
    if let Some(file) = &mut f.file {
        let _ = file.seek(SeekFrom::Start(0));
    }
}

/// Reads once from `f` (opening it if needed); returns the bytes read.
#[allow(clippy::too_many_arguments)]
fn read_file(
    f: &mut Tracked,
    inputs: &[InputState],
    open_files: &mut usize,
    cfg: &EngineConfig,
    scratch: &mut BytesMut,
    lines: &mut Vec<Line>,
    records: &mut Vec<Record>,
    recent: &mut Vec<Recent>,
    metrics: &Metrics,
) -> usize {
    if f.gz.is_some() {
        let n = read_gz(f, open_files, cfg, scratch);
        if n == 0 {
            f.at_eof = true;
            return 0;
        }
        return consume(f, n, scratch, lines, records, metrics);
    }
    if f.file.is_none() {
        if !f.present || *open_files >= cfg.max_open_files {
            // A file that is gone and was closed cannot be reopened; one over the limit waits.
            f.at_eof = true;
            return 0;
        }
        let Some(root) = &f.root else { return 0 };
        match root.open_file(&f.rel) {
            Ok(mut file) => {
                let same =
                    file.metadata().map(|m| m.dev() == f.id.dev && m.ino() == f.id.ino).unwrap_or(false);
                if !same || file.seek(SeekFrom::Start(f.read_offset)).is_err() {
                    f.at_eof = true;
                    return 0;
                }
                f.file = Some(file);
                *open_files += 1;
            }
            Err(_) => {
                f.at_eof = true;
                return 0;
            }
        }
    }
    let Some(file) = &mut f.file else { return 0 };
    scratch.clear();
    scratch.resize(cfg.read_bytes, 0);
    let n = match file.read(&mut scratch[..]) {
        Ok(n) => n,
        Err(e) => {
            // Closed so the next turn reopens it where its root is now (a writable layer's
            // merged mount goes away when its container stops).
            tracing::warn!(path = %f.path.display(), error = %e, "read failed; reopening");
            f.file = None;
            *open_files -= 1;
            return 0;
        }
    };
    if n == 0 && f.reopen_at_eof {
        f.reopen_at_eof = false;
        f.file = None;
        *open_files -= 1;
        return 0;
    }
    if n == 0 {
        // At the end: a size below what was read means the file was truncated in place.
        if let Ok(m) = file.metadata()
            && m.len() < f.read_offset
        {
            truncated(f, metrics, recent);
            return 0;
        }
        f.at_eof = true;
        return 0;
    }
    let _ = inputs;
    consume(f, n, scratch, lines, records, metrics)
}

/// Splits and decodes the `n` bytes just read into `scratch`.
fn consume(
    f: &mut Tracked,
    n: usize,
    scratch: &mut BytesMut,
    lines: &mut Vec<Line>,
    records: &mut Vec<Record>,
    metrics: &Metrics,
) -> usize {
    // Events hold slices of the buffer until every sink delivered them: a small read is copied
    // out so that many quiet files do not each pin a whole read buffer.
    let data = if n < scratch.len() / 8 {
        let d = bytes::Bytes::copy_from_slice(&scratch[..n]);
        scratch.clear();
        d
    } else {
        scratch.truncate(n);
        scratch.split().freeze()
    };
    f.at_eof = false;
    f.last_growth = Instant::now();
    let start = f.read_offset;
    f.read_offset += n as u64;
    // A fingerprint taken over fewer bytes than usual (a young or truncated file) is completed
    // once nothing of the file is in flight under the old identity.
    if u64::from(f.fingerprint_len) < FINGERPRINT_LEN.min(f.read_offset)
        && f.gz.is_none()
        && f.ledger.lock().in_flight() == 0
        && let Some(file) = &f.file
    {
        let len = FINGERPRINT_LEN.min(f.read_offset);
        if let Some(fp) = fingerprint_prefix(file, len) {
            f.id.fingerprint = fp;
            f.fingerprint_len = len as u32;
        }
    }
    Metrics::add(&metrics.bytes_read, n as u64);
    lines.clear();
    f.splitter.push(data, start, lines);
    Metrics::add(&metrics.lines_read, lines.len() as u64);
    let before = f.decoder.malformed;
    for l in lines.drain(..) {
        if l.truncated {
            Metrics::add(&metrics.lines_truncated, 1);
        }
        f.decoder.decode(l, records);
    }
    Metrics::add(&metrics.lines_malformed, f.decoder.malformed - before);
    n
}

/// Reads decompressed bytes of a `.gz` file into `scratch`, (re)opening it at `read_offset`.
/// A file that ends early (still being compressed) is closed and tried again a second later.
fn read_gz(f: &mut Tracked, open_files: &mut usize, cfg: &EngineConfig, scratch: &mut BytesMut) -> usize {
    let Some(gz) = &mut f.gz else { return 0 };
    if gz.decoder.is_none() {
        if !f.present || *open_files >= cfg.max_open_files || gz.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return 0;
        }
        let Some(root) = &f.root else { return 0 };
        let Ok(file) = root.open_file(&f.rel) else { return 0 };
        if !file.metadata().is_ok_and(|m| m.dev() == f.id.dev && m.ino() == f.id.ino) {
            return 0;
        }
        let mut dec = flate2::read::MultiGzDecoder::new(file);
        match std::io::copy(&mut (&mut dec).take(f.read_offset), &mut std::io::sink()) {
            Ok(k) if k == f.read_offset => {}
            _ => {
                gz.retry_at = Some(Instant::now() + Duration::from_secs(1));
                return 0;
            }
        }
        gz.decoder = Some(Box::new(dec));
        *open_files += 1;
    }
    let Some(dec) = &mut gz.decoder else { return 0 };
    scratch.clear();
    scratch.resize(cfg.read_bytes, 0);
    match dec.read(&mut scratch[..]) {
        Ok(n) => n,
        Err(_) => {
            gz.decoder = None;
            *open_files -= 1;
            gz.retry_at = Some(Instant::now() + Duration::from_secs(1));
            0
        }
    }
}

/// FNV-1a of the first `n` decompressed bytes of a `.gz` file (fewer if it is shorter or still
/// being written), and how many bytes that was.
fn gz_fingerprint(file: &File, n: u64) -> (u64, u64) {
    let mut buf = Vec::with_capacity(n as usize);
    let mut dec = flate2::read::MultiGzDecoder::new(file);
    let _ = (&mut dec).take(n).read_to_end(&mut buf);
    (fnv1a(&buf), buf.len() as u64)
}

/// FNV-1a of the first `min(len, FINGERPRINT_LEN)` bytes, and that length.
fn fingerprint(file: &File, len: u64) -> (u64, u64) {
    let n = len.min(FINGERPRINT_LEN);
    (fingerprint_prefix(file, n).unwrap_or(0), n)
}

fn fingerprint_prefix(file: &File, n: u64) -> Option<u64> {
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, 0).ok()?;
    Some(fnv1a(&buf))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// inotify on the directories of inputs and files: a change wakes the engine at once; the
/// periodic rescan repairs anything it missed (including an overflowed queue).
struct DirWatcher {
    fd: OwnedFd,
    /// Watched directories, by path and by watch descriptor.
    watched: HashMap<PathBuf, i32>,
    dirs: HashMap<i32, PathBuf>,
    buf: Vec<std::mem::MaybeUninit<u8>>,
}

impl DirWatcher {
    fn new() -> std::io::Result<Self> {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        Ok(Self {
            fd,
            watched: HashMap::new(),
            dirs: HashMap::new(),
            buf: vec![std::mem::MaybeUninit::uninit(); 16 * 1024],
        })
    }

    fn watch(&mut self, dir: &Path) {
        use rustix::fs::inotify::WatchFlags;
        if self.watched.contains_key(dir) || self.watched.len() >= 8192 {
            return;
        }
        let flags = WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE
            | WatchFlags::MODIFY
            | WatchFlags::ONLYDIR;
        if let Ok(wd) = rustix::fs::inotify::add_watch(&self.fd, dir, flags) {
            self.watched.insert(dir.to_path_buf(), wd);
            self.dirs.insert(wd, dir.to_path_buf());
        }
    }

    /// Waits up to `timeout` for a change; adds the files written to `woken` and returns
    /// whether files appeared or moved (rescan).
    fn wait(&mut self, timeout: Duration, woken: &mut HashSet<PathBuf>) -> bool {
        use rustix::event::{PollFd, PollFlags, poll};
        use rustix::fs::inotify::ReadFlags;
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        if poll(&mut fds, Some(&ts)).unwrap_or(0) == 0 {
            return false;
        }
        let mut rescan = false;
        let mut reader = rustix::fs::inotify::Reader::new(&self.fd, &mut self.buf);
        while let Ok(ev) = reader.next() {
            let f = ev.events();
            if f.intersects(
                ReadFlags::CREATE
                    | ReadFlags::MOVED_TO
                    | ReadFlags::MOVED_FROM
                    | ReadFlags::DELETE
                    | ReadFlags::QUEUE_OVERFLOW,
            ) {
                rescan = true;
            }
            if f.contains(ReadFlags::MODIFY)
                && let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd()), ev.file_name())
            {
                woken.insert(dir.join(std::ffi::OsStr::from_bytes(name.to_bytes())));
            }
            if f.contains(ReadFlags::IGNORED) {
                rescan = true;
            }
        }
        if rescan {
            // Directories that vanished are watched again when they come back.
            self.watched.retain(|p, _| p.is_dir());
            self.dirs.retain(|_, p| self.watched.contains_key(p));
        }
        rescan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine with one collection (a `file` output under `dir/out`) and one target, applied.
    fn engine_with_target(dir: &Path, rt: &tokio::runtime::Runtime) -> Engine {
        let mut cfg = EngineConfig::new("n1", &dir.join("host"), &dir.join("state"));
        cfg.output_dir = Some(dir.join("out"));
        cfg.shutdown_grace = Duration::from_secs(10);
        let locator = Arc::new(crate::resolve::ContainerdLocator { host_root: dir.join("host") });
        let mut engine = Engine::new(cfg, locator, rt.handle().clone(), Arc::default());
        let yaml = "formatVersion: 1\ncollections:\n- source: {namespace: ns, name: c}\n  outputs: [{name: out, type: file}]\n  targets:\n  - pod: {namespace: ns, name: p, uid: u}\n    container: {name: app}\n    inputs:\n    - kind: stdio\n      root: {kind: podLogs, hostDir: /var/log/pods/ns_p_u/app}\n      path: \"*.log\"\n";
        let (spec, _) = crate::config::parse_config(yaml, "n1", Path::new("inline")).unwrap();
        engine.apply(Applied { generation: 1, spec });
        engine
    }

    #[test]
    fn a_graceful_stop_delivers_what_a_replaced_processor_held() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut engine = engine_with_target(dir.path(), &rt);
        let t = engine.collections.values_mut().next().unwrap().targets.values_mut().next().unwrap();
        // Held across a configuration change and not sent yet (the output had no room).
        t.held.push(Event {
            meta: t.meta.clone(),
            file: FileId { dev: 1, ino: 2, fingerprint: 3 },
            offset: 40,
            timestamp_nanos: 0,
            stream: None,
            message: bytes::Bytes::from_static(b"held multiline event"),
            fields: None,
            flags: EventFlags::default(),
        });
        engine.stop(&Shutdown::default());
        let out =
            std::fs::read_to_string(dir.path().join("out/ns/c/out/ns_p_app.ndjson")).unwrap_or_default();
        assert!(out.contains("held multiline event"), "delivered at the stop, got {out:?}");
    }

    #[test]
    fn every_target_comes_first_once_in_as_many_turns() {
        let firsts: Vec<u8> = (0..3).map(|turn| rotated(vec![10u8, 11, 12], turn)[0]).collect();
        assert_eq!(firsts, [10, 11, 12]);
        assert_eq!(rotated(vec![1, 2, 3], 4), [2, 3, 1]);
        assert!(rotated(Vec::<u8>::new(), 7).is_empty());
    }

    #[test]
    fn secret_changes_rebuild_only_what_they_touch() {
        let ok = |v: u8| Ok::<u8, String>(v);
        let err = || Err::<u8, String>("secret gone".into());
        assert_eq!(secret_rebuild(&[ok(1), ok(2)], &[ok(1), ok(2)], true), SecretRebuild::Nothing);
        // Rotation of one output's Secret: only that sink is replaced.
        assert_eq!(
            secret_rebuild(&[ok(1), ok(2), ok(3)], &[ok(1), ok(9), ok(3)], true),
            SecretRebuild::Outputs(vec![1])
        );
        // A Secret that became unusable holds the whole collection (every output must ack).
        assert_eq!(secret_rebuild(&[ok(1), ok(2)], &[ok(1), err()], true), SecretRebuild::All);
        // A held collection whose Secret appeared is built whole.
        assert_eq!(secret_rebuild(&[ok(1), err()], &[ok(1), ok(2)], false), SecretRebuild::All);
        // Unchanged errors: nothing to do, the collection stays held with its error.
        assert_eq!(secret_rebuild(&[err()], &[err()], false), SecretRebuild::Nothing);
    }
}
