//! Harness for the end-to-end suites (see `tests/`): a real control plane (the cluster in
//! `KUBECONFIG`, else a fresh one from `shared/k8s/up`), the install's CRDs and RBAC, the operator
//! and one agent per node as processes acting as their ServiceAccounts, and node filesystems laid
//! out as the kubelet would.

pub mod cluster;
pub mod control_plane;
pub mod fixtures;
pub mod install;
pub mod kubeconfig;
pub mod kubectl;
pub mod metrics;
pub mod node_fs;
pub mod observe;
pub mod operator;
pub mod paths;
pub mod process;
pub mod scene;
pub mod teardown;

pub use cluster::{Cluster, cluster};
pub use scene::{Scene, eventually};
