//! The backup engine: keeps an untouched, incremental copy of selected containers' log files
//! under the node's backup root, applies retention, reports each `LogBackup`'s status, and lets
//! operators find and read the copies (`tailor-agent backups ...` and an HTTP API).
//!
//! Layout of the module: `engine` (the copying passes) over `copy`, `dest` (confined writes),
//! `identity`, `state`, `manifest`, `retention` and `layout`; `status` (pure computation + the
//! writer seam); `run` (the async shell: config channel, inotify, sweeps, shutdown); `query`,
//! `api` and `cli` (finding the originals); `bench`.

pub mod api;
pub mod bench;
pub mod cli;
pub mod copy;
pub mod dest;
pub mod engine;
pub mod error;
pub mod fixture;
pub mod identity;
pub mod inputs;
pub mod layout;
pub mod manifest;
pub mod query;
pub mod retention;
pub mod state;
pub mod status;
pub mod watcher;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tailor_crds::NodeLogConfigSpec;
use tailor_crds::node::NodeBackup;
use tokio::sync::watch;
use tokio::time::Instant;

pub use engine::{Engine, EngineSettings, PassKind, PolicyReport};
pub use error::BackupError;
pub use inputs::{HostGlobResolver, InputResolver};
pub use status::{KubeStatusSink, LogStatusSink, StatusPublisher, StatusSink};

/// Settings of the backup engine (from the agent's command line).
#[derive(Clone, Debug)]
pub struct BackupSettings {
    pub backup_root: PathBuf,
    pub state_dir: PathBuf,
    pub node_name: String,
    /// A rotated, terminated or vanished file is closed after this long without growth.
    pub close_after: Duration,
    /// At most one status write per LogBackup this often (a phase change goes out at once).
    pub status_interval: Duration,
    /// Offsets are persisted at most this often.
    pub checkpoint_interval: Duration,
}

impl BackupSettings {
    pub fn new(
        backup_root: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        node_name: impl Into<String>,
    ) -> Self {
        BackupSettings {
            backup_root: backup_root.into(),
            state_dir: state_dir.into(),
            node_name: node_name.into(),
            close_after: Duration::from_secs(5),
            status_interval: Duration::from_secs(10),
            checkpoint_interval: Duration::from_secs(1),
        }
    }

    fn engine(&self) -> EngineSettings {
        EngineSettings {
            backup_root: self.backup_root.clone(),
            state_dir: self.state_dir.join("backup"),
            node_name: self.node_name.clone(),
            close_after: self.close_after,
            checkpoint_interval: self.checkpoint_interval,
        }
    }
}

/// What the backup engine reads from the agent's configuration channel.
pub trait BackupConfigView {
    /// The generation of the NodeLogConfig and its backups.
    fn backups(&self) -> (Option<i64>, Vec<NodeBackup>);
}

impl BackupConfigView for NodeLogConfigSpec {
    fn backups(&self) -> (Option<i64>, Vec<NodeBackup>) {
        (None, self.backups.clone())
    }
}

impl<T: BackupConfigView> BackupConfigView for Option<T> {
    fn backups(&self) -> (Option<i64>, Vec<NodeBackup>) {
        self.as_ref().map(T::backups).unwrap_or_default()
    }
}

impl<T: BackupConfigView> BackupConfigView for Arc<T> {
    fn backups(&self) -> (Option<i64>, Vec<NodeBackup>) {
        T::backups(self)
    }
}

impl<T: BackupConfigView> BackupConfigView for (i64, T) {
    fn backups(&self) -> (Option<i64>, Vec<NodeBackup>) {
        (Some(self.0), self.1.backups().1)
    }
}

impl BackupConfigView for (Option<i64>, Vec<NodeBackup>) {
    fn backups(&self) -> (Option<i64>, Vec<NodeBackup>) {
        self.clone()
    }
}

/// Shortest sweep interval of the configured policies (at least 1s; 60s without policies).
fn sweep_interval(backups: &[NodeBackup]) -> Duration {
    backups
        .iter()
        .filter_map(|b| tailor_crds::units::parse_duration(&b.interval).ok())
        .min()
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1))
}

/// Runs one pass on a blocking thread.
async fn pass(engine: Engine, kind: PassKind) -> Result<(Engine, Vec<PolicyReport>), BackupError> {
    tokio::task::spawn_blocking(move || {
        let mut engine = engine;
        let reports = engine.pass(kind);
        (engine, reports)
    })
    .await
    .map_err(|e| BackupError::State { path: PathBuf::new(), message: format!("backup pass panicked: {e}") })
}

/// Runs the backup engine until `shutdown` completes: follows the configuration channel, copies
/// on inotify events and at each policy's interval, publishes statuses, and on shutdown copies
/// what is left and persists its state.
pub async fn run<C>(
    mut config_rx: watch::Receiver<C>,
    settings: BackupSettings,
    resolver: Arc<dyn InputResolver>,
    status: Box<dyn StatusSink>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BackupError>
where
    C: BackupConfigView + Send + Sync + 'static,
{
    let mut engine = Engine::new(settings.engine(), resolver)?;
    let mut publisher = StatusPublisher::new(status, settings.status_interval);
    let mut watcher = watcher::DirWatcher::new().map_err(|e| BackupError::io("inotify", "", e))?;
    let (generation, backups) = config_rx.borrow_and_update().backups();
    let mut interval = sweep_interval(&backups);
    engine.apply(generation, backups);
    let mut next_sweep = Instant::now();
    let mut config_open = true;
    let mut catch_up = false;
    tokio::pin!(shutdown);
    tracing::info!(root = %settings.backup_root.display(), "backup engine started");
    loop {
        let kind = tokio::select! {
            biased;
            _ = &mut shutdown => PassKind::Final,
            _ = std::future::ready(()), if catch_up => PassKind::Event,
            changed = config_rx.changed(), if config_open => {
                if changed.is_err() {
                    config_open = false;
                    continue;
                }
                let (generation, backups) = config_rx.borrow_and_update().backups();
                interval = sweep_interval(&backups);
                engine.apply(generation, backups);
                PassKind::Event
            }
            r = watcher.changed() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "inotify failed; relying on sweeps");
                    tokio::time::sleep(interval).await;
                }
                // Let a burst of writes settle into one pass.
                tokio::time::sleep(Duration::from_millis(100)).await;
                PassKind::Event
            }
            _ = tokio::time::sleep_until(next_sweep) => PassKind::Sweep,
        };
        if kind == PassKind::Sweep {
            next_sweep = Instant::now() + interval;
        }
        let generation = engine.generation();
        let (e, reports) = pass(engine, kind).await?;
        engine = e;
        publisher.publish(&reports, generation).await;
        // New directories: one more pass for what was written before their watch existed.
        catch_up = watcher.set_dirs(&engine.watched_dirs());
        // A backlog larger than one pass copies: go on at once, unless the copy is failing
        // (then the next event or sweep retries, without spinning).
        catch_up |= engine.has_backlog() && reports.iter().all(|r| r.error.is_none());
        if kind == PassKind::Final {
            tracing::info!("backup engine stopped");
            return Ok(());
        }
    }
}
