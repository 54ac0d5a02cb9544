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
pub use inputs::{AgentResolver, InputResolver};
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
    /// The generation of the NodeLogConfig and its backups; `None` until a configuration arrived.
    fn backups(&self) -> Option<(Option<i64>, Vec<NodeBackup>)>;
}

impl BackupConfigView for NodeLogConfigSpec {
    fn backups(&self) -> Option<(Option<i64>, Vec<NodeBackup>)> {
        Some((None, self.backups.clone()))
    }
}

impl<T: BackupConfigView> BackupConfigView for Option<T> {
    fn backups(&self) -> Option<(Option<i64>, Vec<NodeBackup>)> {
        self.as_ref().and_then(T::backups)
    }
}

impl<T: BackupConfigView> BackupConfigView for Arc<T> {
    fn backups(&self) -> Option<(Option<i64>, Vec<NodeBackup>)> {
        T::backups(self)
    }
}

impl<T: BackupConfigView> BackupConfigView for (i64, T) {
    fn backups(&self) -> Option<(Option<i64>, Vec<NodeBackup>)> {
        self.1.backups().map(|(_, b)| (Some(self.0), b))
    }
}

impl BackupConfigView for (Option<i64>, Vec<NodeBackup>) {
    fn backups(&self) -> Option<(Option<i64>, Vec<NodeBackup>)> {
        Some(self.clone())
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

/// When the next sweep is due once the interval became `interval`: a shorter interval brings it
/// forward. Without that, the sweep scheduled before the first configuration arrived (with the
/// 60 s default) held every sweep off for a minute, and inotify, which only watches directories
/// of files already followed, does not announce a file created in a new directory meanwhile.
fn next_sweep_after(scheduled: Instant, last_sweep: Instant, interval: Duration) -> Instant {
    scheduled.min(last_sweep + interval)
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
    let mut interval = sweep_interval(&[]);
    if let Some((generation, backups)) = config_rx.borrow_and_update().backups() {
        interval = sweep_interval(&backups);
        engine.apply(generation, backups);
    }
    let mut next_sweep = Instant::now();
    let mut last_sweep = Instant::now();
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
                let Some((generation, backups)) = config_rx.borrow_and_update().backups() else { continue };
                interval = sweep_interval(&backups);
                next_sweep = next_sweep_after(next_sweep, last_sweep, interval);
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
            last_sweep = Instant::now();
            next_sweep = last_sweep + interval;
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

/// Starts the backup engine (and the backup API when asked) inside `tailor-agent run`.
/// Statuses go to the API server when a client is given, else to the log. Both tasks end when
/// `shutdown` completes; await the returned handle for the engine's final pass.
#[allow(clippy::too_many_arguments)]
pub fn start_in_agent<C>(
    backup_root: PathBuf,
    api: cli::BackupRunArgs,
    node_name: &str,
    host_root: PathBuf,
    state_dir: PathBuf,
    locator: Arc<dyn crate::resolve::RootfsLocator>,
    kube_client: Option<kube::Client>,
    config_rx: watch::Receiver<C>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), BackupError>>, BackupError>
where
    C: BackupConfigView + Send + Sync + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(addr) = api.backup_api_addr {
        let token = api::load_token(api.backup_api_token_file.as_deref())?;
        let root = backup_root.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = api::serve(addr, root, token, stop).await {
                tracing::error!(error = %e, "backup API failed");
            }
        });
    }
    let settings = BackupSettings::new(backup_root, state_dir, node_name);
    let resolver: Arc<dyn InputResolver> = Arc::new(AgentResolver::with_locator(host_root, locator));
    let status: Box<dyn StatusSink> = match kube_client {
        Some(client) => Box::new(KubeStatusSink { client }),
        None => Box::new(LogStatusSink),
    };
    Ok(tokio::spawn(run(config_rx, settings, resolver, status, stopped(stop_rx))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_interval_brings_the_next_sweep_forward() {
        let last = Instant::now();
        let scheduled = last + Duration::from_secs(60);
        assert_eq!(next_sweep_after(scheduled, last, Duration::from_secs(1)), last + Duration::from_secs(1));
        // A longer one does not push a due sweep back.
        let soon = last + Duration::from_secs(1);
        assert_eq!(next_sweep_after(soon, last, Duration::from_secs(60)), soon);
    }
}
