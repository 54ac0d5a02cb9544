//! Tailor's API, group `logging.tailor.dev`, version `v1alpha1`.
//!
//! Plain data types only (no tokio, no client): the operator, the node agent and the tests all
//! share them. The CRD YAML committed under `crds/` is generated from these types
//! (`tailor-operator crds`) and a test fails when it drifts.

pub mod backup;
pub mod collection;
pub mod common;
pub mod generate;
pub mod node;
pub mod secrets;
pub mod select;
pub mod units;

pub use backup::{LogBackup, LogBackupPolicy, LogBackupPolicySpec, LogBackupSpec, LogBackupStatus};
pub use collection::{LogCollectionConfig, LogCollectionConfigSpec};
pub use common::*;
pub use node::{NodeLogConfig, NodeLogConfigSpec, NodeLogConfigStatus};

/// API group of every Tailor resource.
pub const GROUP: &str = "logging.tailor.dev";
/// API version of every Tailor resource.
pub const VERSION: &str = "v1alpha1";
