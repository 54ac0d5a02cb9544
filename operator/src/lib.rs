//! Tailor's operator: turns `LogCollectionConfig` and `LogBackupPolicy` resources into one
//! rendered `NodeLogConfig` per node (and one `LogBackup` per policy and node).
//!
//! The decisions are pure functions over plain data (`selection`, `workload`, `mapping`,
//! `layout`, `validate`, `render`, `status`, `plan`); `apply`, `controller` and `leader` are
//! thin shells around the API server. `render -f` (offline) and the controller share
//! `render` + `plan`.

pub mod apply;
pub mod bench;
pub mod controller;
pub mod files;
pub mod layout;
pub mod leader;
pub mod mapping;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod secrets;
pub mod selection;
pub mod status;
pub mod trim;
pub mod validate;
pub mod workload;

/// The one field manager of every write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "tailor-operator";

/// Label on every object the operator creates, so that it only ever watches and deletes its own.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "tailor-operator";
/// Label naming the policy of a `LogBackup` (set when the name fits a label value).
pub const POLICY_LABEL: &str = "logging.tailor.dev/policy";
