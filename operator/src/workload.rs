//! The workload that owns a pod, for metadata and backup layouts.

use k8s_openapi::api::core::v1::Pod;
use tailor_crds::node::WorkloadRef;

/// The owning Deployment, StatefulSet, DaemonSet or Job of a pod, else `None`.
///
/// A ReplicaSet is followed to its Deployment by name (`<deployment>-<pod-template-hash>`)
/// rather than by reading the ReplicaSet, so the operator needs no access to ReplicaSets; a
/// ReplicaSet whose name does not end with the pod's template hash is reported as itself.
pub fn owner_workload(pod: &Pod) -> Option<WorkloadRef> {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let owner = owners.iter().find(|o| o.controller == Some(true)).or_else(|| owners.first())?;
    let workload =
        |kind: &str, name: &str| Some(WorkloadRef { kind: kind.to_string(), name: name.to_string() });
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
            match hash.and_then(|h| owner.name.strip_suffix(h.as_str())).and_then(|n| n.strip_suffix('-')) {
                Some(deployment) if !deployment.is_empty() => workload("Deployment", deployment),
                _ => workload("ReplicaSet", &owner.name),
            }
        }
        "StatefulSet" | "DaemonSet" | "Job" => workload(&owner.kind, &owner.name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn owned(kind: &str, name: &str, hash: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                owner_references: Some(vec![OwnerReference {
                    kind: kind.into(),
                    name: name.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                labels: hash.map(|h| [("pod-template-hash".to_string(), h.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn w(kind: &str, name: &str) -> Option<WorkloadRef> {
        Some(WorkloadRef { kind: kind.into(), name: name.into() })
    }

    #[test]
    fn replica_set_is_followed_to_its_deployment() {
        assert_eq!(
            owner_workload(&owned("ReplicaSet", "web-api-7d4b9c8f6", Some("7d4b9c8f6"))),
            w("Deployment", "web-api")
        );
        assert_eq!(owner_workload(&owned("ReplicaSet", "lonely", None)), w("ReplicaSet", "lonely"));
        assert_eq!(owner_workload(&owned("ReplicaSet", "web-abc", Some("zzz"))), w("ReplicaSet", "web-abc"));
    }

    #[test]
    fn direct_owners_and_none() {
        assert_eq!(owner_workload(&owned("StatefulSet", "db", None)), w("StatefulSet", "db"));
        assert_eq!(owner_workload(&owned("DaemonSet", "agent", None)), w("DaemonSet", "agent"));
        assert_eq!(owner_workload(&owned("Job", "migrate-123", None)), w("Job", "migrate-123"));
        assert_eq!(owner_workload(&owned("Node", "n1", None)), None);
        assert_eq!(owner_workload(&Pod::default()), None);
    }
}
