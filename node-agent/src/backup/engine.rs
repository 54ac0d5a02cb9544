//! The copying engine: one `pass` resolves every backup target's files, follows them by
//! identity (renames, truncations, deletions), appends what is new to the destination files,
//! closes and compresses what is finished, applies retention, and persists its state.
//!
//! Everything here is blocking file IO: the async shell (`run`) calls `pass` on a blocking
//! thread. Decisions that need no IO live in `layout`, `retention`, `identity` and `status`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tailor_crds::node::{BackupTarget, Input, NodeBackup};
use tailor_crds::units::{parse_bytes, parse_duration};

use super::copy::Copier;
use super::dest::{DestDir, DestRoot, list_files};
use super::error::BackupError;
use super::identity::{FINGERPRINT_BYTES, Fingerprint};
use super::inputs::InputResolver;
use super::layout::{checked_destination, free_name, is_writer_compressed};
use super::manifest::{Manifest, Origin};
use super::retention::{BackupFile, expired};
use super::state::{BackupState, Codec, PendingCompression, PolicyRecord, SourceKey, SourceRecord};
use crate::docker::target_key;

/// At most this many bytes of one file per pass, so one busy file does not starve the others.
const MAX_BYTES_PER_FILE_PER_PASS: u64 = 256 << 20;
/// At most this many bytes per pass, so a backlog (a first start on a full node) does not hold
/// off shutdown or configuration changes; the rest follows in the next passes at once.
const MAX_BYTES_PER_PASS: u64 = 1 << 30;

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub backup_root: PathBuf,
    pub state_dir: PathBuf,
    pub node_name: String,
    /// A file is closed (and compressed) once it stopped growing for this long after it was
    /// rotated, its container terminated, or it disappeared.
    pub close_after: Duration,
    /// Offsets are persisted at most this often (structural changes are persisted at once).
    pub checkpoint_interval: Duration,
}

impl EngineSettings {
    pub fn new(
        backup_root: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        node_name: impl Into<String>,
    ) -> Self {
        EngineSettings {
            backup_root: backup_root.into(),
            state_dir: state_dir.into(),
            node_name: node_name.into(),
            close_after: Duration::from_secs(5),
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Why a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    /// Something changed on disk: copy what is new.
    Event,
    /// The periodic sweep: also verify fingerprints, compress, apply retention.
    Sweep,
    /// Shutdown: copy what is new and persist the state.
    Final,
}

/// What one pass saw of one policy: the input of the status computation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyReport {
    pub namespace: String,
    pub log_backup: String,
    /// Pods with at least one backed-up file being followed.
    pub pods: u32,
    /// Source files followed.
    pub sources: u32,
    /// Files and bytes in the policy's destinations.
    pub files: u32,
    pub bytes: u64,
    /// Bytes in the sources not copied yet.
    pub lag_bytes: u64,
    /// Absolute directory that holds the policy's copies (common prefix of its destinations).
    pub destination: Option<String>,
    /// First error of the pass: (category, message, permanent, destination unavailable).
    pub error: Option<ReportedError>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReportedError {
    pub category: &'static str,
    pub message: String,
    pub permanent: bool,
    pub destination_unavailable: bool,
}

impl From<&BackupError> for ReportedError {
    fn from(e: &BackupError) -> Self {
        ReportedError {
            category: e.category(),
            message: e.to_string(),
            permanent: e.is_permanent(),
            destination_unavailable: e.is_destination_unavailable(),
        }
    }
}

/// Counters since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub bytes_copied: u64,
    pub files_compressed: u64,
    pub files_deleted: u64,
}

/// A followed source file.
struct Tracked {
    rec: SourceRecord,
    file: File,
    seen: bool,
    renamed: bool,
    terminated: bool,
    vanished_at: Option<Instant>,
    last_growth: Instant,
    size: u64,
    closed: bool,
}

pub struct Engine {
    settings: EngineSettings,
    resolver: Arc<dyn InputResolver>,
    root: Option<DestRoot>,
    copier: Copier,
    generation: Option<i64>,
    config: Vec<NodeBackup>,
    tracked: BTreeMap<SourceKey, Tracked>,
    /// Records of the state file not matched with a file yet (after a restart).
    orphans: BTreeMap<SourceKey, SourceRecord>,
    policies: BTreeMap<String, PolicyRecord>,
    pending: Vec<PendingCompression>,
    manifests: HashMap<String, Manifest>,
    structural_change: bool,
    offsets_dirty: bool,
    last_save: Instant,
    /// A configuration was applied: records of the state file not found by then are settled.
    configured: bool,
    orphans_settled: bool,
    pass_count: u64,
    pub counters: EngineCounters,
}

type PassErrors = BTreeMap<String, BackupError>;

fn policy_key(nb: &NodeBackup) -> String {
    format!("{}/{}", nb.source.namespace, nb.source.name)
}

fn note(errors: &mut PassErrors, policy: &str, e: BackupError) {
    tracing::warn!(policy, error = %e, category = e.category(), "backup");
    errors.entry(policy.to_string()).or_insert(e);
}

impl Engine {
    /// Loads the state of a previous run.
    pub fn new(settings: EngineSettings, resolver: Arc<dyn InputResolver>) -> Result<Engine, BackupError> {
        std::fs::create_dir_all(&settings.state_dir)
            .map_err(|e| BackupError::io("create", &settings.state_dir, e))?;
        let state = BackupState::load(&settings.state_dir)?;
        let orphans = state.sources.into_iter().map(|r| (r.key(), r)).collect();
        Ok(Engine {
            root: DestRoot::open(&settings.backup_root).ok(),
            settings,
            resolver,
            copier: Copier::default(),
            generation: None,
            config: Vec::new(),
            tracked: BTreeMap::new(),
            orphans,
            policies: state.policies,
            pending: state.pending_compression,
            manifests: HashMap::new(),
            structural_change: false,
            offsets_dirty: false,
            last_save: Instant::now(),
            configured: false,
            orphans_settled: false,
            pass_count: 0,
            counters: EngineCounters::default(),
        })
    }

    /// Applies a new configuration (takes effect at the next pass).
    pub fn apply(&mut self, generation: Option<i64>, backups: Vec<NodeBackup>) {
        self.generation = generation;
        self.config = backups;
        self.configured = true;
    }

    pub fn generation(&self) -> Option<i64> {
        self.generation
    }

    pub fn backup_root(&self) -> &Path {
        &self.settings.backup_root
    }

    /// Source files followed now.
    pub fn tracked_files(&self) -> usize {
        self.tracked.len()
    }

    /// One pass; returns a report per policy of the current configuration.
    pub fn pass(&mut self, kind: PassKind) -> Vec<PolicyReport> {
        let now = Instant::now();
        let mut errors = PassErrors::new();
        if self.root.is_none() {
            match DestRoot::open(&self.settings.backup_root) {
                Ok(r) => self.root = Some(r),
                Err(e) => {
                    let err =
                        || BackupError::io("open backup root", &self.settings.backup_root, e.kind().into());
                    for nb in &self.config {
                        note(&mut errors, &policy_key(nb), err());
                    }
                    return self.reports(&errors);
                }
            }
        }
        for t in self.tracked.values_mut() {
            t.seen = false;
        }
        self.observe_all(&mut errors);
        self.drop_removed_policies();
        // Not before a configuration arrived: an agent that starts has none for a moment, and
        // settling then would copy every file again under a new name.
        if self.configured && (!self.orphans_settled || kind == PassKind::Sweep) {
            self.settle_orphans();
            self.orphans_settled = true;
        }
        if self.structural_change {
            self.save(&mut errors);
        }
        let mut keys: Vec<SourceKey> = self.tracked.keys().cloned().collect();
        // Start at a different file each pass, so a budget that runs out favours no one.
        if !keys.is_empty() {
            let start = self.pass_count as usize % keys.len();
            keys.rotate_left(start);
        }
        self.pass_count = self.pass_count.wrapping_add(1);
        let mut budget = MAX_BYTES_PER_PASS;
        for key in &keys {
            if let Err(e) = self.sync_one(key, kind == PassKind::Sweep, now, &mut budget) {
                note(&mut errors, &key.policy, e);
            }
        }
        if self.structural_change {
            self.save(&mut errors);
        }
        self.close_finished(&keys, now, &mut errors);
        if kind != PassKind::Event {
            self.compress_pending(&mut errors);
            self.apply_retention(&mut errors);
        }
        let due = self.last_save.elapsed() >= self.settings.checkpoint_interval;
        if self.structural_change || (self.offsets_dirty && (due || kind != PassKind::Event)) {
            self.save(&mut errors);
        }
        self.reports(&errors)
    }

    /// A deleted policy stops copying at once (a deleted pod, by contrast, is drained); what
    /// was copied stays until the policy's retention removes it.
    fn drop_removed_policies(&mut self) {
        let gone: Vec<SourceKey> = self
            .tracked
            .keys()
            .filter(|k| !self.policies.get(&k.policy).is_some_and(|p| p.active))
            .cloned()
            .collect();
        for key in gone {
            if let Some(t) = self.tracked.remove(&key) {
                tracing::info!(source = %t.rec.source_path.display(), policy = key.policy, "policy removed; copy stops");
                self.retire_record(&t.rec);
            }
        }
    }

    /// Resolves every target of every policy and follows its files.
    fn observe_all(&mut self, errors: &mut PassErrors) {
        let config = std::mem::take(&mut self.config);
        let active: BTreeSet<String> = config.iter().map(policy_key).collect();
        for (k, p) in self.policies.iter_mut() {
            if p.active && !active.contains(k) {
                p.active = false;
                self.structural_change = true;
            }
        }
        for nb in &config {
            let pkey = policy_key(nb);
            if let Err(e) =
                parse_duration(&nb.retention.max_age).and_then(|_| parse_bytes(&nb.retention.max_bytes))
            {
                note(errors, &pkey, e.into());
            }
            let rec = self.policies.entry(pkey.clone()).or_insert_with(|| PolicyRecord {
                max_age: nb.retention.max_age.clone(),
                max_bytes: nb.retention.max_bytes.clone(),
                compression: nb.compression,
                destinations: Vec::new(),
                active: true,
            });
            let updated = PolicyRecord {
                max_age: nb.retention.max_age.clone(),
                max_bytes: nb.retention.max_bytes.clone(),
                compression: nb.compression,
                destinations: rec.destinations.clone(),
                active: true,
            };
            if *rec != updated {
                *rec = updated;
                self.structural_change = true;
            }
            for target in &nb.targets {
                if target.container.terminated && !nb.keep_terminated {
                    continue;
                }
                if let Err(e) = self.observe_target(&pkey, target) {
                    note(errors, &pkey, e);
                }
            }
        }
        self.config = config;
    }

    fn observe_target(&mut self, pkey: &str, target: &BackupTarget) -> Result<(), BackupError> {
        let dest = checked_destination(&target.destination)?;
        let destination = dest.to_string_lossy().into_owned();
        if let Some(p) = self.policies.get_mut(pkey)
            && !p.destinations.contains(&destination)
        {
            p.destinations.push(destination.clone());
            p.destinations.sort();
            self.structural_change = true;
        }
        let mut first_err = None;
        let mut paths = Vec::new();
        for input in &target.inputs {
            match self.resolver.resolve(input) {
                Ok(p) => paths.extend(p.into_iter().map(|p| (p, input))),
                Err(message) => {
                    first_err.get_or_insert(BackupError::Resolve { target: target.key(), message });
                }
            }
        }
        // Known files first: a rotated file must take its new name (and free the old one)
        // before a new file that wants the old name is named.
        let mut found = Vec::with_capacity(paths.len());
        for (path, input) in paths {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() => {
                    let key = SourceKey { policy: pkey.to_string(), dev: m.dev(), ino: m.ino() };
                    let known = self.tracked.contains_key(&key) || self.orphans.contains_key(&key);
                    found.push((!known, key, path, input));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(BackupError::io("stat", &path, e));
                }
            }
        }
        found.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
        let (known, new): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| !f.0);
        for (_, key, path, input) in known {
            if let Err(e) = self.observe_file(key, input, target, &destination, &path) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.follow_renames_out_of_sight(pkey, target) {
            first_err.get_or_insert(e);
        }
        for (_, key, path, input) in new {
            if let Err(e) = self.observe_file(key, input, target, &destination, &path) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn origin(&self, pkey: &str, target: &BackupTarget) -> Origin {
        Origin {
            namespace: target.pod.namespace.clone(),
            pod: target.pod.name.clone(),
            pod_uid: target.pod.uid.clone(),
            container: target.container.name.clone(),
            workload: target.pod.workload.as_ref().map(|w| format!("{}/{}", w.kind, w.name)),
            policy: pkey.to_string(),
            node: self.settings.node_name.clone(),
            files: Vec::new(),
            first_write: BTreeMap::new(),
        }
    }

    fn dest_dir(&self, destination: &str) -> Result<DestDir, BackupError> {
        let root = self.root.as_ref().ok_or_else(|| {
            BackupError::io("open", &self.settings.backup_root, std::io::ErrorKind::NotFound.into())
        })?;
        let rel = checked_destination(destination)?;
        root.dir(&rel, true).map_err(|e| BackupError::io("create directory", root.path().join(&rel), e))
    }

    /// Is `name` in `destination` used, on disk or by a record?
    fn name_taken(&self, dir: &DestDir, destination: &str, name: &str) -> bool {
        dir.exists(name)
            || self.tracked.values().any(|t| t.rec.destination == destination && t.rec.dest_name == name)
            || self.orphans.values().any(|r| r.destination == destination && r.dest_name == name)
            || self.pending.iter().any(|p| p.destination == destination && p.name == name)
    }

    /// Records `name` in the manifest of `destination` before the file is created or renamed,
    /// so a file on disk always has an origin.
    fn manifest_add(
        &mut self,
        dir: &DestDir,
        destination: &str,
        origin: &Origin,
        name: &str,
        first_write: Option<i64>,
    ) -> Result<(), BackupError> {
        if !self.manifests.contains_key(destination) {
            let m = Manifest::load(dir.path())?;
            self.manifests.insert(destination.to_string(), m);
        }
        let Some(m) = self.manifests.get_mut(destination) else { return Ok(()) };
        if m.add_file(origin, name, first_write) {
            m.save(dir.path())?;
        }
        Ok(())
    }

    fn observe_file(
        &mut self,
        key: SourceKey,
        input: &Input,
        target: &BackupTarget,
        destination: &str,
        path: &Path,
    ) -> Result<(), BackupError> {
        let pkey = key.policy.clone();
        let pkey = pkey.as_str();
        if self.tracked.contains_key(&key) {
            return self.follow_known(&key, target, path);
        }
        let file = match self.resolver.open(input, path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BackupError::io("open", path, e)),
        };
        let fmeta = file.metadata().map_err(|e| BackupError::io("stat", path, e))?;
        if (fmeta.dev(), fmeta.ino()) != (key.dev, key.ino) {
            // Replaced between stat and open: the next pass sees the new file.
            return Ok(());
        }
        let size = fmeta.len();
        let now = Instant::now();
        if let Some(rec) = self.orphans.remove(&key) {
            let same = rec.fingerprint.matches(&file, size).map_err(|e| BackupError::io("read", path, e))?;
            if same {
                let mut t = Tracked {
                    rec,
                    file,
                    seen: true,
                    renamed: false,
                    terminated: target.container.terminated,
                    vanished_at: None,
                    last_growth: now,
                    size,
                    closed: false,
                };
                self.reconcile_dest(&mut t)?;
                self.tracked.insert(key.clone(), t);
                return self.follow_known(&key, target, path);
            }
            // The inode was reused while we were down: the old copy is complete as it is.
            self.retire_record(&rec);
        }
        let fingerprint = Fingerprint::of_file(&file, size).map_err(|e| BackupError::io("read", path, e))?;
        let dir = self.dest_dir(destination)?;
        let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("log");
        let dest_name = free_name(base, |n| self.name_taken(&dir, destination, n));
        let origin = self.origin(pkey, target);
        // The content begins when the source was created (where the filesystem knows it).
        let born = fmeta.created().unwrap_or_else(|_| SystemTime::now());
        self.manifest_add(&dir, destination, &origin, &dest_name, Some(unix_seconds(born)))?;
        tracing::info!(source = %path.display(), destination, dest_name, "backing up new file");
        let rec = SourceRecord {
            policy: pkey.to_string(),
            target: target_key(&target.pod, &target.container),
            dev: key.dev,
            ino: key.ino,
            fingerprint,
            source_path: path.to_path_buf(),
            destination: destination.to_string(),
            dest_name,
            offset: 0,
            dest_len: 0,
            codec: None,
            expired: false,
        };
        self.tracked.insert(
            key,
            Tracked {
                rec,
                file,
                seen: true,
                renamed: false,
                terminated: target.container.terminated,
                vanished_at: None,
                last_growth: now,
                size,
                closed: false,
            },
        );
        self.structural_change = true;
        Ok(())
    }

    /// A followed file that no input matches any more may have been renamed to a name outside
    /// the input's pattern (`app.log` → `app.log-20240101` under a `*.log` pattern): its open
    /// descriptor tells where it is now; if still in the same directory, the copy takes the
    /// new name as well.
    fn follow_renames_out_of_sight(&mut self, pkey: &str, target: &BackupTarget) -> Result<(), BackupError> {
        use std::os::fd::AsRawFd;
        let target_key = target_key(&target.pod, &target.container);
        let unseen: Vec<(SourceKey, PathBuf, i32)> = self
            .tracked
            .iter()
            .filter(|(k, t)| k.policy == pkey && t.rec.target == target_key && !t.seen && !t.rec.expired)
            .map(|(k, t)| (k.clone(), t.rec.source_path.clone(), t.file.as_raw_fd()))
            .collect();
        for (key, old, fd) in unseen {
            let Ok(now_at) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else { continue };
            if now_at == old
                || now_at.to_string_lossy().ends_with(" (deleted)")
                || now_at.parent() != old.parent()
            {
                continue;
            }
            self.follow_known(&key, target, &now_at)?;
        }
        Ok(())
    }

    /// A known file seen at `path`: follow a rename (rotation keeps the rotated name).
    fn follow_known(
        &mut self,
        key: &SourceKey,
        target: &BackupTarget,
        path: &Path,
    ) -> Result<(), BackupError> {
        let Some(t) = self.tracked.get_mut(key) else { return Ok(()) };
        t.seen = true;
        t.vanished_at = None;
        t.terminated = target.container.terminated;
        if t.rec.source_path == path {
            return Ok(());
        }
        let old_base = t.rec.source_path.file_name().map(|n| n.to_os_string());
        let new_base = path.file_name().and_then(|n| n.to_str()).unwrap_or("log").to_string();
        t.rec.source_path = path.to_path_buf();
        self.structural_change = true;
        if old_base.as_deref() == Some(std::ffi::OsStr::new(&new_base)) {
            return Ok(());
        }
        t.renamed = true;
        let destination = t.rec.destination.clone();
        let current = t.rec.dest_name.clone();
        let suffix = t.rec.codec.map(|c| c.suffix()).unwrap_or("");
        let dir = self.dest_dir(&destination)?;
        let desired = format!("{new_base}{suffix}");
        let new_name = free_name(&desired, |n| n != current && self.name_taken(&dir, &destination, n));
        if new_name == current {
            return Ok(());
        }
        let origin = self.origin(&key.policy, target);
        let first = self.manifests.get(&destination).and_then(|m| m.first_write_of(&current));
        self.manifest_add(&dir, &destination, &origin, &new_name, first)?;
        match dir.rename_noreplace(&current, &new_name) {
            Ok(()) => {}
            // Nothing copied yet: the new name is simply used from now on.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::io("rename", dir.path().join(&current), e)),
        }
        dir.sync().map_err(|e| BackupError::io("sync", dir.path(), e))?;
        tracing::info!(source = %path.display(), from = current, to = new_name, "rotated file keeps its name");
        if let Some(t) = self.tracked.get_mut(key) {
            t.rec.dest_name = new_name;
        }
        Ok(())
    }

    /// After a restart: the destination file of an adopted record may have been compressed
    /// (the state not updated yet), or be gone.
    fn reconcile_dest(&mut self, t: &mut Tracked) -> Result<(), BackupError> {
        let dir = self.dest_dir(&t.rec.destination)?;
        if dir.exists(&t.rec.dest_name) {
            return Ok(());
        }
        for codec in [Codec::Zstd, Codec::Gzip] {
            let name = format!("{}{}", t.rec.dest_name, codec.suffix());
            if t.rec.codec.is_none() && dir.exists(&name) {
                let len = dir.open_read(&name).and_then(|f| f.metadata()).map(|m| m.len()).unwrap_or(0);
                t.rec.dest_name = name;
                t.rec.codec = Some(codec);
                t.rec.dest_len = len;
                self.structural_change = true;
                return Ok(());
            }
        }
        if t.rec.dest_len > 0 {
            // Lost (removed by hand): continue into a fresh file from where we were.
            tracing::warn!(dest = %dir.path().join(&t.rec.dest_name).display(), "destination file missing; continuing in a new file");
            let base = t.rec.source_path.file_name().and_then(|n| n.to_str()).unwrap_or("log").to_string();
            let destination = t.rec.destination.clone();
            t.rec.dest_name = free_name(&base, |n| self.name_taken(&dir, &destination, n));
            t.rec.dest_len = 0;
            t.rec.codec = None;
            self.structural_change = true;
        }
        Ok(())
    }

    /// Orphans not matched in the first pass after a restart: their files went away while we
    /// were down; their copies are complete as they are.
    fn settle_orphans(&mut self) {
        let orphans = std::mem::take(&mut self.orphans);
        for rec in orphans.values() {
            self.retire_record(rec);
        }
    }

    /// Queues the destination file of a record that will not grow any more for compression.
    fn retire_record(&mut self, rec: &SourceRecord) {
        self.structural_change = true;
        if rec.codec.is_some() || is_writer_compressed(&rec.dest_name) || rec.dest_len == 0 {
            return;
        }
        self.pending.push(PendingCompression {
            policy: rec.policy.clone(),
            destination: rec.destination.clone(),
            name: rec.dest_name.clone(),
        });
    }

    /// Copies what is new in one source file.
    fn sync_one(
        &mut self,
        key: &SourceKey,
        verify: bool,
        now: Instant,
        budget: &mut u64,
    ) -> Result<(), BackupError> {
        let Some(mut t) = self.tracked.remove(key) else { return Ok(()) };
        let r = self.sync_tracked(&mut t, verify, now, budget);
        self.tracked.insert(key.clone(), t);
        r
    }

    fn sync_tracked(
        &mut self,
        t: &mut Tracked,
        verify: bool,
        now: Instant,
        budget: &mut u64,
    ) -> Result<(), BackupError> {
        if t.rec.expired {
            return Ok(());
        }
        let src_path = t.rec.source_path.clone();
        let meta = t.file.metadata().map_err(|e| BackupError::io("stat", &src_path, e))?;
        let size = meta.len();
        t.size = size;
        let mut truncated = size < t.rec.offset;
        if !truncated && verify && t.rec.offset > 0 {
            truncated = !t
                .rec
                .fingerprint
                .matches(&t.file, size)
                .map_err(|e| BackupError::io("read", &src_path, e))?;
        }
        if truncated {
            self.start_new_segment(t, size)?;
        }
        if size <= t.rec.offset || *budget == 0 {
            return Ok(());
        }
        let dir = self.dest_dir(&t.rec.destination)?;
        let dest_path = dir.path().join(&t.rec.dest_name);
        let io = |op, e| BackupError::io(op, &dest_path, e);
        // Opened per pass, not kept: the agent holds no writable descriptor on the backup root
        // between passes (an administrator can remount it read-only, a full disk can be freed).
        let dest_file = dir.open_write(&t.rec.dest_name).map_err(|e| io("open", e))?;
        let dest = &dest_file;
        let dest_len = dest.metadata().map_err(|e| io("stat", e))?.len();
        if dest_len > t.rec.dest_len {
            // Bytes past the committed length: a crash or a failed write left them; they are
            // copied again from the source.
            dest.set_len(t.rec.dest_len).map_err(|e| io("truncate", e))?;
        } else if dest_len < t.rec.dest_len {
            tracing::warn!(dest = %dest_path.display(), "destination shorter than recorded; continuing after it");
            t.rec.dest_len = dest_len;
        }
        let len = (size - t.rec.offset).min(MAX_BYTES_PER_FILE_PER_PASS).min(*budget);
        let (copied, new_len) = match t.rec.codec {
            None => {
                let n = self
                    .copier
                    .append_plain(&t.file, t.rec.offset, len, dest, t.rec.dest_len)
                    .map_err(|e| io("copy", e))?;
                (n, t.rec.dest_len + n)
            }
            Some(codec) => self
                .copier
                .append_compressed(&t.file, t.rec.offset, len, dest, t.rec.dest_len, codec)
                .map_err(|e| io("copy", e))?,
        };
        if copied == 0 {
            return Ok(());
        }
        dest.sync_data().map_err(|e| io("fsync", e))?;
        if let Ok(mtime) = meta.modified() {
            // Like `rsync -a`: the copy carries the source's time, which retention and the
            // time filters of `backups list` use.
            let _ = dest.set_modified(mtime);
        }
        t.rec.offset += copied;
        *budget = budget.saturating_sub(copied);
        t.rec.dest_len = new_len;
        t.last_growth = now;
        if t.rec.fingerprint.is_partial() {
            let len = t.rec.offset.min(FINGERPRINT_BYTES as u64) as usize;
            if let Ok(fp) = Fingerprint::of_prefix(&t.file, len) {
                t.rec.fingerprint = fp;
            }
        }
        self.counters.bytes_copied += copied;
        self.offsets_dirty = true;
        Ok(())
    }

    /// The source was truncated (copy-truncate rotation, or a writer that reopened it with
    /// O_TRUNC): what was copied stays, the rest of the file goes to a new destination file.
    fn start_new_segment(&mut self, t: &mut Tracked, size: u64) -> Result<(), BackupError> {
        let dir = self.dest_dir(&t.rec.destination)?;
        let destination = t.rec.destination.clone();
        self.retire_record(&t.rec);
        let base = t.rec.source_path.file_name().and_then(|n| n.to_str()).unwrap_or("log").to_string();
        let name = free_name(&base, |n| self.name_taken(&dir, &destination, n));
        if let Some(origin) = self.origin_of_record(&t.rec) {
            self.manifest_add(&dir, &destination, &origin, &name, Some(unix_seconds(SystemTime::now())))?;
        }
        tracing::info!(source = %t.rec.source_path.display(), new = name, "source truncated; continuing in a new file");
        t.rec.dest_name = name;
        t.rec.offset = 0;
        t.rec.dest_len = 0;
        t.rec.codec = None;
        t.rec.fingerprint = Fingerprint::of_file(&t.file, size)
            .map_err(|e| BackupError::io("read", &t.rec.source_path, e))?;
        t.closed = false;
        self.structural_change = true;
        Ok(())
    }

    fn origin_of_record(&self, rec: &SourceRecord) -> Option<Origin> {
        let nb = self.config.iter().find(|nb| policy_key(nb) == rec.policy)?;
        let target = nb.targets.iter().find(|t| target_key(&t.pod, &t.container) == rec.target)?;
        Some(self.origin(&rec.policy, target))
    }

    /// Closes files that are finished: compresses the copies of rotated files and of
    /// terminated containers once drained, and lets go of files that disappeared once drained.
    fn close_finished(&mut self, keys: &[SourceKey], now: Instant, errors: &mut PassErrors) {
        let close_after = self.settings.close_after;
        for key in keys {
            let Some(t) = self.tracked.get_mut(key) else { continue };
            if !t.seen && t.vanished_at.is_none() {
                t.vanished_at = Some(now);
            }
            let drained = t.size == t.rec.offset;
            let quiet = now.duration_since(t.last_growth) >= close_after;
            if !drained || !quiet {
                continue;
            }
            if let Some(since) = t.vanished_at {
                if now.duration_since(since) >= close_after
                    && let Some(t) = self.tracked.remove(key)
                {
                    tracing::info!(source = %t.rec.source_path.display(), "source gone and drained; letting go");
                    self.retire_record(&t.rec);
                }
                continue;
            }
            if (t.renamed || t.terminated) && !t.closed {
                t.closed = true;
                if let Err(e) = self.compress_tracked(key) {
                    note(errors, &key.policy, e);
                }
            }
        }
    }

    fn compression_of(&self, policy: &str) -> Option<Codec> {
        self.policies.get(policy).and_then(|p| Codec::from_policy(p.compression))
    }

    fn compress_tracked(&mut self, key: &SourceKey) -> Result<(), BackupError> {
        let Some(t) = self.tracked.get(key) else { return Ok(()) };
        let Some(codec) = self.compression_of(&key.policy) else { return Ok(()) };
        if t.rec.codec.is_some() || is_writer_compressed(&t.rec.dest_name) || t.rec.dest_len == 0 {
            return Ok(());
        }
        let (destination, name) = (t.rec.destination.clone(), t.rec.dest_name.clone());
        let dir = self.dest_dir(&destination)?;
        let target = format!("{name}{}", codec.suffix());
        if self.name_taken(&dir, &destination, &target) {
            return Ok(());
        }
        let (new_name, len) = self
            .copier
            .compress_in_place(&dir, &name, codec)
            .map_err(|e| BackupError::io("compress", dir.path().join(&name), e))?;
        self.counters.files_compressed += 1;
        if let Some(t) = self.tracked.get_mut(key) {
            t.rec.dest_name = new_name;
            t.rec.dest_len = len;
            t.rec.codec = Some(codec);
        }
        self.structural_change = true;
        Ok(())
    }

    fn compress_pending(&mut self, errors: &mut PassErrors) {
        let pending = std::mem::take(&mut self.pending);
        let mut keep = Vec::new();
        for p in pending {
            let Some(codec) = self.compression_of(&p.policy) else {
                self.structural_change = true;
                continue;
            };
            let dir = match self.dest_dir(&p.destination) {
                Ok(d) => d,
                Err(e) => {
                    note(errors, &p.policy, e);
                    keep.push(p);
                    continue;
                }
            };
            let target = format!("{}{}", p.name, codec.suffix());
            let taken = self.name_taken(&dir, &p.destination, &target);
            if !dir.exists(&p.name) || taken {
                self.structural_change = true;
                continue;
            }
            match self.copier.compress_in_place(&dir, &p.name, codec) {
                Ok(_) => {
                    self.counters.files_compressed += 1;
                    self.structural_change = true;
                }
                Err(e) => {
                    let _ = dir.remove(&format!("{target}.tmp"));
                    note(errors, &p.policy, BackupError::io("compress", dir.path().join(&p.name), e));
                    keep.push(p);
                }
            }
        }
        self.pending.extend(keep);
    }

    /// Files of a policy's destinations, with whether a followed source still writes to them.
    fn policy_files(&self, pkey: &str) -> Vec<BackupFile> {
        let Some(p) = self.policies.get(pkey) else { return Vec::new() };
        let active: HashSet<(&str, &str)> = self
            .tracked
            .values()
            .filter(|t| !t.closed)
            .map(|t| (t.rec.destination.as_str(), t.rec.dest_name.as_str()))
            .chain(self.orphans.values().map(|r| (r.destination.as_str(), r.dest_name.as_str())))
            .collect();
        let mut out = Vec::new();
        for destination in &p.destinations {
            let dir = self.settings.backup_root.join(destination);
            let Ok(files) = list_files(&dir) else { continue };
            for (name, meta) in files {
                out.push(BackupFile {
                    active: active.contains(&(destination.as_str(), name.as_str())),
                    destination: destination.clone(),
                    name,
                    len: meta.len(),
                    mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        out
    }

    /// Is there more to copy than one pass copies (a backlog that no event will announce)?
    pub fn has_backlog(&self) -> bool {
        self.tracked.values().any(|t| !t.rec.expired && t.size > t.rec.offset)
    }

    /// Deletes files past each policy's retention (also of policies that are gone), oldest first.
    fn apply_retention(&mut self, errors: &mut PassErrors) {
        let now = SystemTime::now();
        let keys: Vec<String> = self.policies.keys().cloned().collect();
        for pkey in keys {
            let Some(p) = self.policies.get(&pkey).cloned() else { continue };
            let limits = parse_duration(&p.max_age).and_then(|age| Ok((age, parse_bytes(&p.max_bytes)?)));
            let Ok((max_age, max_bytes)) = limits else { continue };
            let files = self.policy_files(&pkey);
            for i in expired(&files, max_age, max_bytes, now) {
                let f = &files[i];
                let dir = self.settings.backup_root.join(&f.destination);
                let removed = self.dest_dir(&f.destination).and_then(|d| {
                    d.remove(&f.name).map_err(|e| BackupError::io("remove", dir.join(&f.name), e))
                });
                match removed {
                    Ok(()) => {
                        tracing::info!(file = %dir.join(&f.name).display(), "retention removed backup file");
                        self.counters.files_deleted += 1;
                        // A source still on the node is not copied again.
                        for t in self.tracked.values_mut() {
                            if t.rec.destination == f.destination && t.rec.dest_name == f.name {
                                t.rec.expired = true;
                                t.closed = true;
                                self.structural_change = true;
                            }
                        }
                    }
                    Err(e) => note(errors, &pkey, e),
                }
            }
            self.tidy_destinations(&pkey);
        }
    }

    /// Updates manifests after deletions; forgets empty destinations and, once a removed
    /// policy has no files left, the policy.
    fn tidy_destinations(&mut self, pkey: &str) {
        let Some(p) = self.policies.get(pkey).cloned() else { return };
        let mut kept = Vec::new();
        for destination in &p.destinations {
            let dir = self.settings.backup_root.join(destination);
            let names: BTreeSet<String> =
                list_files(&dir).unwrap_or_default().into_iter().map(|(n, _)| n).collect();
            let in_use = self.tracked.values().any(|t| t.rec.destination == *destination);
            if let Ok(mut m) = Manifest::load(&dir) {
                let present = |f: &str| {
                    names.contains(f)
                        || names.contains(&format!("{f}.zst"))
                        || names.contains(&format!("{f}.gz"))
                };
                let in_use_names: BTreeSet<&str> = self
                    .tracked
                    .values()
                    .filter(|t| t.rec.destination == *destination)
                    .map(|t| t.rec.dest_name.as_str())
                    .collect();
                if m.retain_files(|f| present(f) || in_use_names.contains(f)) {
                    let _ = m.save(&dir);
                    self.manifests.insert(destination.clone(), m.clone());
                }
                if m.origins.is_empty() && names.is_empty() && !in_use {
                    let _ = std::fs::remove_file(dir.join(super::layout::MANIFEST));
                    let _ = std::fs::remove_dir(&dir);
                    self.manifests.remove(destination);
                    continue;
                }
            }
            kept.push(destination.clone());
        }
        if kept != p.destinations {
            self.structural_change = true;
        }
        if kept.is_empty() && !p.active {
            self.policies.remove(pkey);
        } else if let Some(p) = self.policies.get_mut(pkey) {
            p.destinations = kept;
        }
    }

    fn save(&mut self, errors: &mut PassErrors) {
        let state = BackupState {
            version: super::state::STATE_VERSION,
            sources: self
                .tracked
                .values()
                .map(|t| t.rec.clone())
                .chain(self.orphans.values().cloned())
                .collect(),
            policies: self.policies.clone(),
            pending_compression: self.pending.clone(),
        };
        match state.save(&self.settings.state_dir) {
            Ok(()) => {
                self.structural_change = false;
                self.offsets_dirty = false;
                self.last_save = Instant::now();
            }
            Err(e) => {
                for nb in &self.config {
                    note(
                        errors,
                        &policy_key(nb),
                        BackupError::State { path: self.settings.state_dir.clone(), message: e.to_string() },
                    );
                }
            }
        }
    }

    fn reports(&self, errors: &PassErrors) -> Vec<PolicyReport> {
        self.config
            .iter()
            .map(|nb| {
                let pkey = policy_key(nb);
                let mine: Vec<&Tracked> = self.tracked.values().filter(|t| t.rec.policy == pkey).collect();
                // `ns/pod/container`, or `ns/<container-id>` for a plain Docker container.
                let pods: BTreeSet<&str> = mine
                    .iter()
                    .map(|t| {
                        let target = t.rec.target.as_str();
                        target
                            .rsplit_once('/')
                            .filter(|(pod, _)| pod.contains('/'))
                            .map_or(target, |(pod, _)| pod)
                    })
                    .collect();
                let files = self.policy_files(&pkey);
                let root = self.settings.backup_root.to_string_lossy().trim_end_matches('/').to_string();
                let destination =
                    super::layout::common_dir(nb.targets.iter().map(|t| t.destination.as_str()))
                        .map(|d| if d.is_empty() { root.clone() } else { format!("{root}/{d}") });
                PolicyReport {
                    namespace: nb.source.namespace.clone(),
                    log_backup: nb.log_backup.clone(),
                    pods: pods.len() as u32,
                    sources: mine.len() as u32,
                    files: files.len() as u32,
                    bytes: files.iter().map(|f| f.len).sum(),
                    lag_bytes: mine.iter().map(|t| t.size.saturating_sub(t.rec.offset)).sum(),
                    destination,
                    error: errors.get(&pkey).map(ReportedError::from),
                }
            })
            .collect()
    }

    /// Host directories that hold followed files (for the inotify watcher).
    pub fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        self.tracked.values().filter_map(|t| t.rec.source_path.parent().map(Path::to_path_buf)).collect()
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
