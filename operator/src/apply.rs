//! Carries out a `Plan` against the API server: server-side apply with the operator's one field
//! manager, deletes that tolerate "already gone", status through the status subresource.

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;
use tailor_crds::node::NodeLogConfig;
use tailor_crds::{LogBackup, LogBackupPolicy, LogCollectionConfig};

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::runtime::events::{Event, EventType, Recorder};

use crate::FIELD_MANAGER;
use crate::plan::{EventNote, Plan, StatusUpdate};
use crate::render::ResourceKind;

/// A write that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{op} {object}: {source}")]
    Write {
        op: &'static str,
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl ApplyError {
    /// Metric label of the error.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Write { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 403 => "forbidden",
                kube::Error::Api(s) if s.code == 422 => "rejected",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
        }
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub mirrors_applied: u32,
    pub mirrors_deleted: u32,
    pub node_configs_applied: u32,
    pub node_configs_deleted: u32,
    pub log_backups_applied: u32,
    pub log_backups_deleted: u32,
    pub statuses: u32,
    pub events: u32,
}

/// Executes every write of the plan in order. A failed write does not stop the others (each
/// is independent and the next render retries it); the failures are returned. Mirrors live in
/// `namespace` (the operator's own).
pub async fn execute(
    client: &Client,
    recorder: &Recorder,
    plan: &Plan,
    namespace: &str,
) -> (WriteStats, Vec<ApplyError>) {
    let mut stats = WriteStats::default();
    let mut errors = Vec::new();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let nlcs: Api<NodeLogConfig> = Api::all(client.clone());
    let mirrors: Api<Secret> = Api::namespaced(client.clone(), namespace);

    // Mirrors first: an agent that sees its new NodeLogConfig finds the Secrets it names.
    for m in &plan.apply_mirrors {
        let name = m.0.metadata.name.clone().unwrap_or_default();
        match mirrors.patch(&name, &pp, &Patch::Apply(&m.0)).await {
            Ok(_) => stats.mirrors_applied += 1,
            Err(e) => errors.push(write_err("apply", format!("Secret/{namespace}/{name}"), e)),
        }
    }

    for nlc in &plan.apply_node_configs {
        let name = nlc.metadata.name.clone().unwrap_or_default();
        match nlcs.patch(&name, &pp, &Patch::Apply(nlc)).await {
            Ok(_) => stats.node_configs_applied += 1,
            Err(e) => errors.push(write_err("apply", format!("NodeLogConfig/{name}"), e)),
        }
    }
    for lb in &plan.apply_log_backups {
        let ns = lb.metadata.namespace.clone().unwrap_or_default();
        let name = lb.metadata.name.clone().unwrap_or_default();
        let api: Api<LogBackup> = Api::namespaced(client.clone(), &ns);
        match api.patch(&name, &pp, &Patch::Apply(lb)).await {
            Ok(_) => stats.log_backups_applied += 1,
            Err(e) => errors.push(write_err("apply", format!("LogBackup/{ns}/{name}"), e)),
        }
    }
    for (ns, name) in &plan.delete_log_backups {
        let api: Api<LogBackup> = Api::namespaced(client.clone(), ns);
        match delete(&api, name).await {
            Ok(()) => stats.log_backups_deleted += 1,
            Err(e) => errors.push(write_err("delete", format!("LogBackup/{ns}/{name}"), e)),
        }
    }
    for name in &plan.delete_node_configs {
        match delete(&nlcs, name).await {
            Ok(()) => stats.node_configs_deleted += 1,
            Err(e) => errors.push(write_err("delete", format!("NodeLogConfig/{name}"), e)),
        }
    }
    // Last: a NodeLogConfig that still named a mirror was rewritten above.
    for name in &plan.delete_mirrors {
        match delete(&mirrors, name).await {
            Ok(()) => stats.mirrors_deleted += 1,
            Err(e) => errors.push(write_err("delete", format!("Secret/{namespace}/{name}"), e)),
        }
    }
    for update in &plan.statuses {
        let result = match update.key.kind {
            ResourceKind::Collection => write_status::<LogCollectionConfig>(client, update, &pp).await,
            ResourceKind::Backup => write_status::<LogBackupPolicy>(client, update, &pp).await,
        };
        match result {
            Ok(()) => stats.statuses += 1,
            // The resource was deleted since the render: nothing to report.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => errors.push(write_err("status", update.key.to_string(), e)),
        }
    }
    for e in &plan.events {
        match publish(recorder, e).await {
            Ok(()) => stats.events += 1,
            Err(err) => errors.push(write_err("event", e.key.to_string(), err)),
        }
    }
    (stats, errors)
}

async fn publish(recorder: &Recorder, e: &EventNote) -> Result<(), kube::Error> {
    let kind = e.key.kind.kind();
    let reference = ObjectReference {
        api_version: Some(format!("{}/{}", tailor_crds::GROUP, tailor_crds::VERSION)),
        kind: Some(kind.to_string()),
        name: Some(e.key.name.clone()),
        namespace: Some(e.key.namespace.clone()),
        uid: e.uid.clone(),
        ..Default::default()
    };
    // Event notes are limited to 1 kB.
    let note: String = e.note.chars().take(1000).collect();
    let event = Event {
        type_: EventType::Warning,
        reason: e.reason.clone(),
        note: Some(note),
        action: "Render".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await
}

async fn write_status<K>(client: &Client, update: &StatusUpdate, pp: &PatchParams) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &update.key.namespace);
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": update.status,
    });
    api.patch_status(&update.key.name, pp, &Patch::Apply(body)).await.map(|_| ())
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn write_err(op: &'static str, object: String, source: kube::Error) -> ApplyError {
    ApplyError::Write { op, object, source: Box::new(source) }
}
