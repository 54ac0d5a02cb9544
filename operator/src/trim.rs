//! Trimming of cached objects: the caches of a 30,000-pod cluster hold only what rendering reads.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, EnvVar, Pod, PodSpec, PodStatus,
    Volume,
};
use kube::api::ObjectMeta;

/// Drops what no decision reads from any object's metadata.
pub fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Keeps of a pod: metadata (labels, annotations, owners), node, containers' names, images,
/// literal env values and mounts, emptyDir/hostPath volumes, phase and container statuses.
pub fn trim_pod(pod: &mut Pod) {
    trim_meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            containers: spec.containers.into_iter().map(trim_container).collect(),
            init_containers: spec.init_containers.map(|cs| cs.into_iter().map(trim_container).collect()),
            volumes: spec.volumes.map(|vs| {
                vs.into_iter()
                    .map(|v| Volume {
                        name: v.name,
                        empty_dir: v.empty_dir,
                        host_path: v.host_path,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.take() {
        let statuses = |s: Option<Vec<ContainerStatus>>| s.map(|v| v.into_iter().map(trim_status).collect());
        pod.status = Some(PodStatus {
            phase: status.phase,
            container_statuses: statuses(status.container_statuses),
            init_container_statuses: statuses(status.init_container_statuses),
            ..Default::default()
        });
    }
}

fn trim_container(c: Container) -> Container {
    Container {
        name: c.name,
        image: c.image,
        // Values from Secrets or ConfigMaps are never attached, so they are not kept either.
        env: c.env.map(|env| {
            env.into_iter()
                .filter(|e| e.value_from.is_none() && e.value.is_some())
                .map(|e| EnvVar { name: e.name, value: e.value, value_from: None })
                .collect()
        }),
        volume_mounts: c.volume_mounts,
        ..Default::default()
    }
}

fn trim_status(s: ContainerStatus) -> ContainerStatus {
    let terminated = s.state.and_then(|st| st.terminated);
    ContainerStatus {
        name: s.name,
        container_id: s.container_id,
        restart_count: s.restart_count,
        state: terminated.map(|t| ContainerState {
            terminated: Some(ContainerStateTerminated { exit_code: t.exit_code, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{ClusterInput, render};
    use std::sync::Arc;

    /// Trimming never changes what is rendered.
    #[test]
    fn trimming_keeps_what_rendering_reads() {
        let input = crate::files::parse_objects(crate::files::tests::FIXTURE, "fixture").unwrap();
        let before = render(&input);
        let pods = input
            .pods
            .iter()
            .map(|p| {
                let mut p = (**p).clone();
                trim_pod(&mut p);
                Arc::new(p)
            })
            .collect();
        let trimmed = ClusterInput { pods, ..input.clone() };
        assert_eq!(render(&trimmed), before);
        assert!(!before.nodes.is_empty());
    }
}
