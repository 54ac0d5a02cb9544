//! `LogBackup` status: computed by a pure function from a pass' report, written through the
//! `StatusSink` seam (server-side apply on the status subresource in a cluster, a log line in
//! standalone mode), only when it changed and at most once per `min_interval`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tailor_crds::backup::{BackupPhase, LogBackupStatus};
use tailor_crds::common::{condition, make_condition};
use tailor_crds::units::human_bytes;

use super::engine::PolicyReport;
use super::error::BackupError;

/// Field manager of every status write of the agent.
pub const FIELD_MANAGER: &str = "tailor-agent";

/// Computes the status of one LogBackup from a pass' report. `previous` keeps condition
/// transition times and the last sync time stable.
pub fn compute_status(
    report: &PolicyReport,
    previous: Option<&LogBackupStatus>,
    generation: Option<i64>,
    now: Time,
) -> LogBackupStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let phase = match &report.error {
        Some(e) if e.permanent => BackupPhase::Failed,
        // A full or read-only root, a path that does not resolve, a state that cannot be
        // written: copying goes on where it can and retries the rest by itself.
        Some(_) => BackupPhase::Degraded,
        _ if report.sources == 0 && report.files == 0 => BackupPhase::Pending,
        _ if report.lag_bytes > 0 => BackupPhase::Syncing,
        _ => BackupPhase::Synced,
    };
    let synced_now = report.lag_bytes == 0 && report.error.is_none() && report.sources > 0;
    let last_sync_time =
        if synced_now { Some(now.clone()) } else { previous.and_then(|p| p.last_sync_time.clone()) };
    let (ready, ready_reason, ready_msg) = match (&phase, &report.error) {
        (BackupPhase::Synced, _) => (true, "Synced", "the copy caught up with its sources".to_string()),
        (BackupPhase::Syncing, None) => (true, "Syncing", format!("{} bytes to copy", report.lag_bytes)),
        (BackupPhase::Pending, None) => (false, "Pending", "no source file found yet".to_string()),
        (_, Some(e)) => (false, e.category, e.message.clone()),
        (_, None) => (false, "Pending", String::new()),
    };
    let (degraded, degraded_reason, degraded_msg) = match &report.error {
        Some(e) if phase == BackupPhase::Degraded || phase == BackupPhase::Failed => {
            (true, e.category, e.message.clone())
        }
        _ => (false, "AsExpected", String::new()),
    };
    LogBackupStatus {
        observed_generation: generation,
        phase,
        pods: report.pods,
        files: report.files,
        bytes: report.bytes,
        size: Some(human_bytes(report.bytes)),
        lag_bytes: report.lag_bytes,
        last_sync_time,
        destination: report.destination.clone(),
        last_error: report.error.as_ref().map(|e| e.message.clone()),
        conditions: vec![
            make_condition(
                prev_conditions,
                condition::READY,
                ready,
                ready_reason,
                ready_msg,
                generation,
                now.clone(),
            ),
            make_condition(
                prev_conditions,
                condition::DEGRADED,
                degraded,
                degraded_reason,
                degraded_msg,
                generation,
                now,
            ),
        ],
    }
}

/// Equal but for timestamps (a status is rewritten only when something real changed).
pub fn same_but_time(a: &LogBackupStatus, b: &LogBackupStatus) -> bool {
    let strip = |s: &LogBackupStatus| {
        let mut s = s.clone();
        s.last_sync_time = None;
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// Where statuses go.
pub trait StatusSink: Send + Sync + 'static {
    fn publish<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        status: &'a LogBackupStatus,
    ) -> BoxFuture<'a, Result<(), BackupError>>;
}

/// Standalone mode: statuses are logged.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogStatusSink;

impl StatusSink for LogStatusSink {
    fn publish<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        status: &'a LogBackupStatus,
    ) -> BoxFuture<'a, Result<(), BackupError>> {
        Box::pin(async move {
            tracing::info!(
                namespace,
                name,
                phase = ?status.phase,
                files = status.files,
                bytes = status.bytes,
                lag = status.lag_bytes,
                error = status.last_error.as_deref().unwrap_or(""),
                "LogBackup status"
            );
            Ok(())
        })
    }
}

/// In a cluster: server-side apply of the status subresource with the agent's field manager.
#[derive(Clone)]
pub struct KubeStatusSink {
    pub client: kube::Client,
}

impl StatusSink for KubeStatusSink {
    fn publish<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        status: &'a LogBackupStatus,
    ) -> BoxFuture<'a, Result<(), BackupError>> {
        Box::pin(async move {
            use kube::api::{Patch, PatchParams};
            let api: kube::Api<tailor_crds::LogBackup> =
                kube::Api::namespaced(self.client.clone(), namespace);
            let body = serde_json::json!({
                "apiVersion": format!("{}/{}", tailor_crds::GROUP, tailor_crds::VERSION),
                "kind": "LogBackup",
                "status": status,
            });
            api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
                .await
                .map(|_| ())
                .map_err(|e| BackupError::Status {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    message: e.to_string(),
                })
        })
    }
}

/// Rate-limited, change-only publishing of many LogBackups' statuses.
pub struct StatusPublisher {
    sink: Box<dyn StatusSink>,
    min_interval: Duration,
    last: HashMap<(String, String), (LogBackupStatus, Instant)>,
}

impl StatusPublisher {
    pub fn new(sink: Box<dyn StatusSink>, min_interval: Duration) -> Self {
        StatusPublisher { sink, min_interval, last: HashMap::new() }
    }

    /// Publishes the statuses of a pass' reports. A phase change goes out at once; other
    /// changes wait for `min_interval` since the last write of that LogBackup.
    pub async fn publish(&mut self, reports: &[PolicyReport], generation: Option<i64>) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for r in reports {
            let key = (r.namespace.clone(), r.log_backup.clone());
            let prev = self.last.get(&key);
            let status = compute_status(r, prev.map(|(s, _)| s), generation, now.clone());
            let due = match prev {
                None => true,
                Some((p, at)) => {
                    !same_but_time(p, &status)
                        && (p.phase != status.phase || at.elapsed() >= self.min_interval)
                }
            };
            if !due {
                continue;
            }
            match self.sink.publish(&r.namespace, &r.log_backup, &status).await {
                Ok(()) => {
                    self.last.insert(key, (status, Instant::now()));
                }
                Err(e) => tracing::warn!(error = %e, "LogBackup status not written"),
            }
        }
    }

    /// The status last written of a LogBackup.
    pub fn last(&self, namespace: &str, name: &str) -> Option<&LogBackupStatus> {
        self.last.get(&(namespace.to_string(), name.to_string())).map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::engine::ReportedError;

    fn report() -> PolicyReport {
        PolicyReport {
            namespace: "ns".into(),
            log_backup: "p-node1".into(),
            pods: 2,
            sources: 3,
            files: 4,
            bytes: 2048,
            lag_bytes: 0,
            destination: Some("/var/log/tailor-backup/ns/web".into()),
            error: None,
        }
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn phases() {
        let s = compute_status(&report(), None, Some(3), t(100));
        assert_eq!(s.phase, BackupPhase::Synced);
        assert_eq!(s.size.as_deref(), Some("2.0Ki"));
        assert_eq!(s.last_sync_time, Some(t(100)));
        assert_eq!(s.observed_generation, Some(3));

        let lagging = PolicyReport { lag_bytes: 10, ..report() };
        let s2 = compute_status(&lagging, Some(&s), Some(3), t(200));
        assert_eq!(s2.phase, BackupPhase::Syncing);
        assert_eq!(s2.last_sync_time, Some(t(100)));

        let full = PolicyReport {
            error: Some(ReportedError {
                category: "NoSpace",
                message: "copy /b/x: No space left on device".into(),
                permanent: false,
                destination_unavailable: true,
            }),
            lag_bytes: 10,
            ..report()
        };
        let s3 = compute_status(&full, Some(&s2), Some(3), t(300));
        assert_eq!(s3.phase, BackupPhase::Degraded);
        let degraded = s3.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "NoSpace"));
        assert!(s3.last_error.as_deref().unwrap().contains("No space"));

        let bad = PolicyReport {
            error: Some(ReportedError {
                category: "InvalidDestination",
                message: "x".into(),
                permanent: true,
                destination_unavailable: false,
            }),
            ..report()
        };
        assert_eq!(compute_status(&bad, None, None, t(1)).phase, BackupPhase::Failed);
        let empty = PolicyReport { sources: 0, files: 0, pods: 0, ..report() };
        assert_eq!(compute_status(&empty, None, None, t(1)).phase, BackupPhase::Pending);
    }

    #[test]
    fn recomputing_does_not_flap() {
        let s = compute_status(&report(), None, Some(1), t(100));
        let again = compute_status(&report(), Some(&s), Some(1), t(500));
        assert!(same_but_time(&s, &again));
        assert_eq!(s.conditions, again.conditions);
    }

    #[tokio::test]
    async fn kube_sink_applies_the_status_subresource() {
        let (svc, mut handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let sink = KubeStatusSink { client: kube::Client::new(svc, "default") };
        let status = compute_status(&report(), None, Some(3), t(100));
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), http::Method::PATCH);
            assert_eq!(
                req.uri().to_string(),
                "/apis/logging.tailor.dev/v1alpha1/namespaces/ns/logbackups/p-node1/status?&force=true&fieldManager=tailor-agent"
            );
            assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
            let body = req.into_body().collect_bytes().await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["apiVersion"], "logging.tailor.dev/v1alpha1");
            assert_eq!(v["kind"], "LogBackup");
            assert_eq!(v["status"]["phase"], "Synced");
            assert_eq!(v["status"]["destination"], "/var/log/tailor-backup/ns/web");
            assert!(v.get("spec").is_none(), "the agent must not own spec fields");
            let obj = serde_json::json!({
                "apiVersion": "logging.tailor.dev/v1alpha1", "kind": "LogBackup",
                "metadata": {"name": "p-node1", "namespace": "ns"},
                "spec": {"policy": "p", "nodeName": "node1"},
                "status": v["status"],
            });
            send.send_response(
                http::Response::builder()
                    .body(kube::client::Body::from(serde_json::to_vec(&obj).unwrap()))
                    .unwrap(),
            );
        });
        sink.publish("ns", "p-node1", &status).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn publisher_writes_changes_only() {
        #[derive(Clone, Default)]
        struct Count(std::sync::Arc<std::sync::Mutex<Vec<LogBackupStatus>>>);
        impl StatusSink for Count {
            fn publish<'a>(
                &'a self,
                _: &'a str,
                _: &'a str,
                s: &'a LogBackupStatus,
            ) -> BoxFuture<'a, Result<(), BackupError>> {
                self.0.lock().unwrap().push(s.clone());
                Box::pin(async { Ok(()) })
            }
        }
        let c = Count::default();
        let mut p = StatusPublisher::new(Box::new(c.clone()), Duration::from_secs(3600));
        p.publish(&[report()], Some(1)).await;
        p.publish(&[report()], Some(1)).await;
        // A byte count change waits for the interval; a phase change goes out at once.
        p.publish(&[PolicyReport { bytes: 4096, ..report() }], Some(1)).await;
        assert_eq!(c.0.lock().unwrap().len(), 1);
        p.publish(&[PolicyReport { lag_bytes: 5, ..report() }], Some(1)).await;
        assert_eq!(c.0.lock().unwrap().len(), 2);
        assert_eq!(p.last("ns", "p-node1").unwrap().phase, BackupPhase::Syncing);
    }
}
