//! The controller: watch caches of everything rendering reads, a debounced render loop, and
//! the writes (only by the lease holder) that bring the cluster to the rendering.
//!
//! Relations are declared here: any change of a LogCollectionConfig, LogBackupPolicy, Pod,
//! Node, NodeLogConfig or LogBackup re-renders the whole cluster (one pass is cheap and keeps
//! every node consistent); a periodic resync repairs what an event may have missed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tailor_crds::node::NodeLogConfig;
use tailor_crds::{LogBackup, LogBackupPolicy, LogCollectionConfig, SelectionStatus};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::plan::{Observed, Plan, plan};
use crate::render::{
    ClusterInput, MalformedResource, NodeInfo, RenderedCluster, ResourceKey, ResourceKind, render,
};
use crate::secrets::{Fetched, SecretKey};
use crate::trim::{trim_meta, trim_pod};
use crate::{MANAGED_BY, MANAGED_BY_LABEL, apply, secrets};

/// Timing of the render loop.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Changes arriving within this window are rendered together.
    pub debounce: Duration,
    /// A full pass happens at least this often.
    pub resync: Duration,
    /// First retry delay after a failed write (doubles up to `resync`).
    pub retry: Duration,
    /// Secrets outputs name are read again this often (the operator may `get` them but not
    /// watch them), so that a rotated Secret reaches its mirror within this time.
    pub secret_refresh: Duration,
    /// A Secret that could not be used (missing, not labelled) is read again this often.
    pub secret_retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(300),
            resync: Duration::from_secs(300),
            retry: Duration::from_secs(2),
            secret_refresh: Duration::from_secs(60),
            secret_retry: Duration::from_secs(10),
        }
    }
}

/// What the controller shares with its tasks.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Publishes Events as `tailor-operator` (instance: this replica's identity).
    pub recorder: Recorder,
    /// The operator's own namespace: where mirrors of output Secrets live.
    pub namespace: String,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, identity: &str) -> Self {
        let reporter = Reporter { controller: crate::FIELD_MANAGER.into(), instance: Some(identity.into()) };
        let namespace = client.default_namespace().to_string();
        Self { recorder: Recorder::new(client.clone(), reporter), client, metrics, namespace }
    }
}

/// The watch caches.
pub struct Stores {
    pub collections: Store<DeserializeGuard<LogCollectionConfig>>,
    pub backups: Store<DeserializeGuard<LogBackupPolicy>>,
    pub pods: Store<Pod>,
    pub nodes: Store<PartialObjectMeta<Node>>,
    pub node_configs: Store<NodeLogConfig>,
    pub log_backups: Store<LogBackup>,
    /// Mirror Secrets in the operator's namespace.
    pub mirrors: Store<Secret>,
}

impl Stores {
    /// Starts every watch; each change wakes `notify`.
    pub fn start(ctx: &Context, notify: &Arc<Notify>) -> Self {
        let c = &ctx.client;
        let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let all = watcher::Config::default;
        Self {
            collections: spawn_watch(
                ctx,
                notify,
                "LogCollectionConfig",
                Api::all(c.clone()),
                all(),
                trim_guarded,
                guard_error,
            ),
            backups: spawn_watch(
                ctx,
                notify,
                "LogBackupPolicy",
                Api::all(c.clone()),
                all(),
                trim_guarded,
                guard_error,
            ),
            pods: spawn_watch(ctx, notify, "Pod", Api::all(c.clone()), all(), trim_pod, never_malformed),
            nodes: spawn_watch(ctx, notify, "Node", Api::all(c.clone()), all(), trim_obj, never_malformed),
            node_configs: spawn_watch(
                ctx,
                notify,
                "NodeLogConfig",
                Api::all(c.clone()),
                managed.clone(),
                trim_obj,
                never_malformed,
            ),
            log_backups: spawn_watch(
                ctx,
                notify,
                "LogBackup",
                Api::all(c.clone()),
                managed,
                trim_obj,
                never_malformed,
            ),
            // Only the operator's own namespace, only mirrors: it may not list other Secrets.
            mirrors: spawn_watch(
                ctx,
                notify,
                "Secret",
                Api::namespaced(c.clone(), &ctx.namespace),
                watcher::Config::default().labels(&format!("{}=true", tailor_crds::secrets::MIRROR_LABEL)),
                trim_obj,
                never_malformed,
            ),
        }
    }

    /// Waits for every cache's initial list.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.collections.wait_until_ready().await?;
        self.backups.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.node_configs.wait_until_ready().await?;
        self.log_backups.wait_until_ready().await?;
        self.mirrors.wait_until_ready().await
    }

    /// The current state of the caches.
    pub fn snapshot(&self) -> Snapshot {
        let mut input = ClusterInput::default();
        for g in self.collections.state() {
            match &g.0 {
                Ok(o) => input.collections.push(Arc::new(o.clone())),
                Err(e) => input.malformed.push(MalformedResource {
                    kind: ResourceKind::Collection,
                    metadata: e.metadata.clone(),
                    error: e.error.clone(),
                }),
            }
        }
        for g in self.backups.state() {
            match &g.0 {
                Ok(o) => input.backups.push(Arc::new(o.clone())),
                Err(e) => input.malformed.push(MalformedResource {
                    kind: ResourceKind::Backup,
                    metadata: e.metadata.clone(),
                    error: e.error.clone(),
                }),
            }
        }
        input.pods = self.pods.state();
        input.nodes = self
            .nodes
            .state()
            .iter()
            .map(|n| NodeInfo {
                name: n.metadata.name.clone().unwrap_or_default(),
                uid: n.metadata.uid.clone(),
            })
            .collect();
        let observed = Observed {
            node_configs: self.node_configs.state(),
            log_backups: self.log_backups.state(),
            mirrors: self.mirrors.state(),
        };
        Snapshot { input, observed }
    }
}

/// Everything one pass reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub input: ClusterInput,
    pub observed: Observed,
}

fn trim_obj<K: Resource>(o: &mut K) {
    trim_meta(o.meta_mut());
}

fn trim_guarded<K: Resource>(o: &mut DeserializeGuard<K>) {
    trim_meta(o.meta_mut());
}

fn spawn_watch<K>(
    ctx: &Context,
    notify: &Arc<Notify>,
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    malformed: fn(&K) -> Option<&str>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().modify(trim).reflect(writer);
    tokio::spawn(drain(stream, kind, malformed, notify.clone(), ctx.metrics.clone()));
    reader
}

/// Consumes a reflected watch: every event wakes the render loop; errors are counted and the
/// watch carries on (with backoff) instead of ending.
async fn drain<K, S>(
    stream: S,
    kind: &'static str,
    malformed: fn(&K) -> Option<&str>,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    K: Resource,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                if let Some(error) = malformed(&o) {
                    let m = o.meta();
                    tracing::warn!(kind, namespace = ?m.namespace, name = ?m.name, %error, "malformed object skipped");
                }
                notify.notify_one();
            }
            Ok(_) => notify.notify_one(),
            Err(e) => {
                metrics.error("watch");
                tracing::warn!(kind, error = %e, "watch error, retrying");
            }
        }
    }
}

fn guard_error<K>(o: &DeserializeGuard<K>) -> Option<&str> {
    o.0.as_ref().err().map(|e| e.error.as_str())
}

fn never_malformed<K>(_: &K) -> Option<&str> {
    None
}

/// The outcome of one pass.
#[derive(Debug, Default)]
pub struct PassReport {
    pub rendered: RenderedCluster,
    pub plan: Plan,
    pub stats: apply::WriteStats,
    pub errors: Vec<apply::ApplyError>,
    pub render_time: Duration,
    /// When a named Secret is next due to be read again, if any is named.
    pub secrets_due: Option<Duration>,
}

/// State the loop keeps between passes.
pub struct LoopState {
    /// Statuses computed for malformed resources (whose own status cannot be read back).
    pub remembered: BTreeMap<ResourceKey, SelectionStatus>,
    /// Named Secrets as last read, and when.
    pub secrets: BTreeMap<SecretKey, (Instant, Fetched)>,
    /// See `Settings::secret_refresh` and `Settings::secret_retry`.
    pub secret_refresh: Duration,
    pub secret_retry: Duration,
}

impl Default for LoopState {
    fn default() -> Self {
        let s = Settings::default();
        Self {
            remembered: BTreeMap::new(),
            secrets: BTreeMap::new(),
            secret_refresh: s.secret_refresh,
            secret_retry: s.secret_retry,
        }
    }
}

/// One pass: render, read the Secrets outputs name (when writing), diff, and (when `write` is
/// set) write. Rendering and diffing run off the executor.
pub async fn pass(ctx: &Context, snapshot: Snapshot, state: &mut LoopState, write: bool) -> PassReport {
    let now = now();
    let remembered = std::mem::take(&mut state.remembered);
    let joined = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let rendered = render(&snapshot.input);
        let render_time = started.elapsed();
        let refs = secrets::referenced_secrets(&snapshot.input.collections, &rendered);
        (snapshot, rendered, render_time, refs)
    })
    .await;
    let (snapshot, mut rendered, render_time, refs) = match joined {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.error("render");
            tracing::error!(error = %e, "render task failed");
            state.remembered = remembered;
            return PassReport::default();
        }
    };
    // Only the writer reads Secrets: the others' plans are never carried out.
    let secrets_due = if write { read_secrets(ctx, &refs, state).await } else { None };
    let fetched: BTreeMap<SecretKey, Fetched> =
        state.secrets.iter().map(|(k, (_, f))| (k.clone(), f.clone())).collect();
    let namespace = ctx.namespace.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mirrors = secrets::mirrors(&refs, &fetched, &namespace);
        for (key, problems) in &mirrors.problems {
            if let Some(summary) = rendered.resources.get_mut(key) {
                summary.secret_problems = problems.clone();
            }
        }
        for spec in rendered.nodes.values_mut() {
            secrets::rewrite_refs(spec);
        }
        let mut plan = plan(&snapshot.input, &rendered, &snapshot.observed, &remembered, &now);
        (plan.apply_mirrors, plan.delete_mirrors) =
            secrets::plan_mirrors(&mirrors, &snapshot.observed.mirrors);
        let malformed: Vec<ResourceKey> = snapshot
            .input
            .malformed
            .iter()
            .map(|m| crate::render::resource_key(m.kind, &m.metadata))
            .collect();
        (rendered, plan, remembered, malformed)
    })
    .await;
    let (rendered, plan, mut remembered, malformed) = match joined {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.error("render");
            tracing::error!(error = %e, "plan task failed");
            return PassReport::default();
        }
    };
    remembered.retain(|k, _| malformed.contains(k));
    record(&ctx.metrics, &rendered, render_time);
    let mut report = PassReport { rendered, plan, render_time, secrets_due, ..Default::default() };
    if write && !report.plan.is_empty() {
        let (stats, errors) = apply::execute(&ctx.client, &ctx.recorder, &report.plan, &ctx.namespace).await;
        for u in &report.plan.statuses {
            if malformed.contains(&u.key) {
                remembered.insert(u.key.clone(), u.status.clone());
            }
        }
        let m = &ctx.metrics;
        m.write("Secret", "apply", stats.mirrors_applied);
        m.write("Secret", "delete", stats.mirrors_deleted);
        m.write("NodeLogConfig", "apply", stats.node_configs_applied);
        m.write("NodeLogConfig", "delete", stats.node_configs_deleted);
        m.write("LogBackup", "apply", stats.log_backups_applied);
        m.write("LogBackup", "delete", stats.log_backups_deleted);
        m.write("status", "apply", stats.statuses);
        m.write("Event", "create", stats.events);
        for e in &errors {
            m.error(e.category());
            tracing::warn!(error = %e, "write failed");
        }
        report.stats = stats;
        report.errors = errors;
    }
    state.remembered = remembered;
    report
}

/// Reads the named Secrets that are due (new, or last read `secret_refresh` ago; unusable ones
/// after `secret_retry`) into `state.secrets`; returns when the next one is due.
async fn read_secrets(
    ctx: &Context,
    refs: &BTreeMap<SecretKey, std::collections::BTreeSet<ResourceKey>>,
    state: &mut LoopState,
) -> Option<Duration> {
    state.secrets.retain(|k, _| refs.contains_key(k));
    let (refresh, retry) = (state.secret_refresh, state.secret_retry);
    let ttl = |f: &Fetched| if matches!(f, Fetched::Found(_)) { refresh } else { retry };
    for key in refs.keys() {
        if state.secrets.get(key).is_some_and(|(at, f)| at.elapsed() < ttl(f)) {
            continue;
        }
        let got = read_secret(&ctx.client, key).await;
        let entry = match (got, state.secrets.remove(key)) {
            // A failed read keeps the last good copy (and its mirror), and is retried sooner.
            (Fetched::Failed(e), Some((_, Fetched::Found(s)))) => {
                ctx.metrics.error("secret_read");
                tracing::warn!(secret = %key, error = %e, "reading a Secret failed; keeping its last copy");
                let at =
                    Instant::now().checked_sub(refresh.saturating_sub(retry)).unwrap_or_else(Instant::now);
                (at, Fetched::Found(s))
            }
            (got, _) => (Instant::now(), got),
        };
        state.secrets.insert(key.clone(), entry);
    }
    state.secrets.values().map(|(at, f)| ttl(f).saturating_sub(at.elapsed())).min()
}

/// One Secret, trimmed to what mirroring reads (its labels and the keys outputs use).
async fn read_secret(client: &Client, key: &SecretKey) -> Fetched {
    let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
    match api.get_opt(&key.name).await {
        Ok(Some(mut s)) => {
            s.metadata = kube::api::ObjectMeta {
                name: s.metadata.name,
                namespace: s.metadata.namespace,
                labels: s.metadata.labels,
                ..Default::default()
            };
            s.string_data = None;
            if let Some(d) = s.data.as_mut() {
                d.retain(|k, _| tailor_crds::secrets::SECRET_KEYS.contains(&k.as_str()));
            }
            Fetched::Found(Arc::new(s))
        }
        Ok(None) => Fetched::Missing,
        Err(e) => Fetched::Failed(e.to_string()),
    }
}

fn record(m: &Metrics, rendered: &RenderedCluster, render_time: Duration) {
    m.reconciles.inc();
    m.render_seconds.observe(render_time.as_secs_f64());
    let (collection, backup) = rendered.target_counts();
    m.set_targets("collection", collection);
    m.set_targets("backup", backup);
    m.nodes.set(i64::try_from(rendered.nodes.len()).unwrap_or(i64::MAX));
    let invalid = rendered.resources.values().filter(|r| r.invalid.is_some()).count();
    m.invalid_resources.set(i64::try_from(invalid).unwrap_or(i64::MAX));
}

/// Now, to the second: statuses compare equal after a round trip through the API server.
fn now() -> Time {
    let secs = Timestamp::now().as_second();
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Runs the controller until `shutdown` turns true. Writes only while `leader` is true.
pub async fn run(
    ctx: Context,
    settings: Settings,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    let stores = Stores::start(&ctx, &notify);
    tokio::select! {
        r = stores.ready() => if let Err(e) = r { tracing::error!(error = %e, "a watch cache was dropped"); return },
        _ = shutdown.changed() => return,
    }
    ctx.metrics.set_ready(true);
    tracing::info!("caches synced");
    let mut state = LoopState {
        secret_refresh: settings.secret_refresh,
        secret_retry: settings.secret_retry,
        ..LoopState::default()
    };
    let mut retry = settings.retry;
    let mut wait = Duration::ZERO;
    let mut election_running = true;
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            // Becoming leader triggers a pass at once; an ended election stops being polled.
            changed = leader.changed(), if election_running => election_running = changed.is_ok(),
            _ = shutdown.changed() => break,
        }
        // Let a burst of changes (a rollout, a resync of the watches) settle into one pass.
        tokio::select! {
            _ = tokio::time::sleep(settings.debounce) => {}
            _ = shutdown.changed() => break,
        }
        let is_leader = *leader.borrow_and_update();
        let report = pass(&ctx, stores.snapshot(), &mut state, is_leader).await;
        tracing::debug!(
            nodes = report.rendered.nodes.len(),
            writes = ?report.stats,
            render_ms = report.render_time.as_millis() as u64,
            leader = is_leader,
            "pass done"
        );
        if report.errors.is_empty() {
            retry = settings.retry;
            wait = settings.resync;
        } else {
            wait = retry;
            retry = (retry * 2).min(settings.resync);
        }
        // Secrets cannot be watched (no list rights): a pass reads them again when due.
        if let Some(due) = report.secrets_due {
            wait = wait.min(due.max(settings.debounce));
        }
    }
    tracing::info!("controller stopped");
}
