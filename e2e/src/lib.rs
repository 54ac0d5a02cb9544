//! Harness for the end-to-end suites (see `tests/`): a real control plane (the cluster in
//! `KUBECONFIG`, else a fresh one from `shared/k8s/up`), the install's CRDs and RBAC, the operator
//! and one agent per node as processes acting as their ServiceAccounts, and node filesystems laid
//! out as the kubelet would.
//!
//! Run: `cargo test -p tailor-e2e` (part of `cargo test --workspace`). Each test binary
//! (`api`, `ha`, `system`) starts one control plane, shares it between its tests and stops it
//! with `down` at exit, also after failures; a watchdog stops it if the test process is killed.
//! Needs `kubectl`, `python3`, `openssl`, `zstd` (and etcd, which `up` installs on first use).
//!
//! Knobs (environment):
//! - `KUBECONFIG`: use this cluster instead of starting one (scenes clean up after themselves).
//! - `TAILOR_K8S_DIR`: where `up`/`down` are (default `<repo>/../shared/k8s`, then `/work/shared/k8s`).
//! - `TAILOR_OPERATOR_BIN`, `TAILOR_AGENT_BIN`: binaries to test instead of building them.
//! - `TAILOR_E2E_RBAC_DIR`: a kustomize folder to take the RBAC from instead of `config/default`.
//! - `TAILOR_E2E_LOG`: `RUST_LOG` of the processes under test (default `info`).
//!
//! On failure a test prints the objects involved as YAML, the events, the leases and the tails
//! of the operator's and agents' logs.

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
