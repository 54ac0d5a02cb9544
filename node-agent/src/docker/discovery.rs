//! The docker-mode config provider: keeps an inventory of the engine's containers (list at
//! start, then the events stream, plus a periodic full resync that repairs anything an event
//! missed), renders the spec from it on every change and publishes it. The engine restarting or
//! its socket vanishing is survived with back-off; the last published spec stays in force
//! meanwhile, so nothing is let go just because the engine is briefly unreachable.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tailor_crds::node::NodeLogConfigSpec;
use tokio::time::{Instant, MissedTickBehavior};

use super::client::{ClientError, DockerClient};
use super::config::DockerConfig;
use super::locator::DockerRootfs;
use super::model::{Container, EngineEvent};
use super::translate::render_spec;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the config file is checked for changes and lingering targets are pruned.
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// A removed container stays in the spec (terminated) this long by default, so that the engines
/// see it terminate and drain the files they hold open before the target disappears.
pub const REMOVED_LINGER: Duration = Duration::from_secs(10);

/// Receives each new spec with its generation (1, 2, ...); called only when the spec changed.
pub type Publish = Box<dyn FnMut(i64, NodeLogConfigSpec) + Send>;

pub struct Discovery {
    client: DockerClient,
    config: DockerConfig,
    config_path: Option<PathBuf>,
    config_stamp: Option<(SystemTime, u64)>,
    node: String,
    locator: DockerRootfs,
    publish: Publish,
    containers: BTreeMap<String, Container>,
    /// Removed containers, kept for `REMOVED_LINGER` from their removal.
    removed: BTreeMap<String, (Container, Instant)>,
    removed_linger: Duration,
    published: Option<NodeLogConfigSpec>,
    generation: i64,
}

impl Discovery {
    pub fn new(
        client: DockerClient,
        config: DockerConfig,
        node: &str,
        locator: DockerRootfs,
        publish: Publish,
    ) -> Self {
        Discovery {
            client,
            config,
            config_path: None,
            config_stamp: None,
            node: node.to_string(),
            locator,
            publish,
            containers: BTreeMap::new(),
            removed: BTreeMap::new(),
            removed_linger: REMOVED_LINGER,
            published: None,
            generation: 0,
        }
    }

    /// Reloads the config from this file when it changes (an invalid new version is reported
    /// and the previous one kept).
    pub fn watch_config_file(mut self, path: PathBuf) -> Self {
        self.config_stamp = stamp(&path);
        self.config_path = Some(path);
        self
    }

    /// How long a removed container stays in the spec (`REMOVED_LINGER` by default).
    pub fn removed_linger(mut self, linger: Duration) -> Self {
        self.removed_linger = linger;
        self
    }

    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.session() => r,
                () = &mut shutdown => return,
            };
            let Err(e) = result;
            if started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            tracing::warn!(error = %e, category = e.category(), retry_in = ?backoff, "docker engine unavailable");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = &mut shutdown => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection's worth: subscribe, list, then follow events until something breaks.
    async fn session(&mut self) -> Result<std::convert::Infallible, ClientError> {
        // Subscribe before listing, so that nothing between the list and the stream is missed.
        let mut events = self.client.events().await?;
        self.resync().await?;
        tracing::info!(containers = self.containers.len(), "docker engine connected");
        let mut resync =
            tokio::time::interval_at(Instant::now() + self.config.resync(), self.config.resync());
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval_at(Instant::now() + HOUSEKEEPING, HOUSEKEEPING);
        loop {
            tokio::select! {
                event = events.next() => match event? {
                    Some(event) => self.apply_event(event).await?,
                    None => return Err(ClientError::Status {
                        path: "/events".into(), status: 0, message: "the engine closed the events stream".into(),
                    }),
                },
                _ = resync.tick() => self.resync().await?,
                _ = housekeeping.tick() => {
                    self.reload_config();
                    let linger = self.removed_linger;
                    self.removed.retain(|_, (_, at)| at.elapsed() < linger);
                }
            }
            self.publish_if_changed();
        }
    }

    async fn resync(&mut self) -> Result<(), ClientError> {
        let mut fresh = BTreeMap::new();
        for id in self.client.list_ids().await? {
            match self.client.inspect(&id).await {
                Ok(inspect) => {
                    fresh.insert(id, Container::from_inspect(inspect));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.locator.replace_all(fresh.values());
        let old = std::mem::replace(&mut self.containers, fresh);
        for (id, c) in old {
            // Removed while we were not looking (engine outage, lost event).
            if !self.containers.contains_key(&id) {
                self.mark_removed(id, c);
            }
        }
        for id in self.containers.keys() {
            self.removed.remove(id);
        }
        self.publish_if_changed();
        Ok(())
    }

    async fn apply_event(&mut self, event: EngineEvent) -> Result<(), ClientError> {
        let id = event.actor.id;
        tracing::debug!(action = %event.action, container = %id, "docker event");
        if event.action == "destroy" {
            self.forget(&id);
            return Ok(());
        }
        match self.client.inspect(&id).await {
            Ok(inspect) => {
                let c = Container::from_inspect(inspect);
                self.locator.update(&c);
                self.containers.insert(id, c);
            }
            // Removed before we could look (`docker rm -f` right after exit).
            Err(e) if e.is_not_found() => self.forget(&id),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn forget(&mut self, id: &str) {
        if let Some(c) = self.containers.remove(id) {
            self.mark_removed(id.to_string(), c);
        }
        self.locator.remove(id);
    }

    fn mark_removed(&mut self, id: String, mut c: Container) {
        c.status = "removed".into();
        c.running = false;
        self.removed.insert(id, (c, Instant::now()));
    }

    fn reload_config(&mut self) {
        let Some(path) = &self.config_path else { return };
        let now = stamp(path);
        if now == self.config_stamp {
            return;
        }
        self.config_stamp = now;
        match DockerConfig::load(path) {
            Ok(config) => {
                tracing::info!(path = %path.display(), "docker config reloaded");
                self.config = config;
            }
            Err(e) => tracing::error!(error = %e, "docker config not reloaded; keeping the previous one"),
        }
    }

    fn publish_if_changed(&mut self) {
        let containers: Vec<Container> =
            self.containers.values().chain(self.removed.values().map(|(c, _)| c)).cloned().collect();
        let spec = render_spec(&self.config, &containers, &self.node);
        if self.published.as_ref() == Some(&spec) {
            return;
        }
        self.generation += 1;
        tracing::info!(generation = self.generation, targets = spec.target_count, "docker config rendered");
        (self.publish)(self.generation, spec.clone());
        self.published = Some(spec);
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
