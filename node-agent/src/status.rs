//! The agent's acknowledgement in its NodeLogConfig's status: computed by a pure function from
//! the engine's report and written (server-side apply, status subresource) only when it changed,
//! so that an idle node never churns its object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tailor_crds::common::{condition, make_condition};
use tailor_crds::node::{NodeLogConfig, NodeLogConfigStatus};
use tokio::sync::watch;

use crate::engine::EngineStatus;

/// Field manager of every write of the agent.
pub const FIELD_MANAGER: &str = "tailor-agent";

/// The status for `report`. `checkpoint_interval_secs` decides when checkpoints count as stale.
pub fn build_status(
    previous: &NodeLogConfigStatus,
    report: &EngineStatus,
    now_unix: i64,
    checkpoint_interval_secs: u64,
    now: Time,
) -> NodeLogConfigStatus {
    let generation = report.observed_generation;
    let age = report.last_checkpoint.map(|t| now_unix.saturating_sub(t).max(0) as u64);
    let stale = age.is_none_or(|a| a > 3 * checkpoint_interval_secs.max(1) + 5);
    let ready = report.errors.is_empty() && generation.is_some();
    let ready_msg = if ready {
        format!("{} targets, {} files", report.active_targets, report.active_files)
    } else if generation.is_none() {
        "no configuration applied yet".into()
    } else {
        format!("{} targets with errors", report.errors.len())
    };
    let conditions = vec![
        make_condition(
            &previous.conditions,
            condition::READY,
            ready,
            if ready {
                "Applied"
            } else if generation.is_none() {
                "Pending"
            } else {
                "TargetErrors"
            },
            ready_msg,
            generation,
            now.clone(),
        ),
        make_condition(
            &previous.conditions,
            "CheckpointsHealthy",
            report.checkpoint_problem.is_none() && !stale,
            match (&report.checkpoint_problem, stale) {
                (Some(_), _) => "CheckpointProblem",
                (None, true) => "CheckpointStale",
                (None, false) => "Current",
            },
            report.checkpoint_problem.clone().unwrap_or_else(|| {
                if stale {
                    "no recent checkpoint write".into()
                } else {
                    "checkpoints written on schedule".into()
                }
            }),
            generation,
            now,
        ),
    ];
    NodeLogConfigStatus {
        observed_generation: generation,
        active_targets: report.active_targets,
        active_files: report.active_files,
        checkpoint_age_seconds: age,
        errors: report.errors.clone(),
        conditions,
    }
}

/// Whether `new` says something `old` does not (the checkpoint age alone is no reason to write).
pub fn differs(old: &NodeLogConfigStatus, new: &NodeLogConfigStatus) -> bool {
    let strip = |s: &NodeLogConfigStatus| {
        let mut s = s.clone();
        s.checkpoint_age_seconds = None;
        s
    };
    strip(old) != strip(new)
}

/// Writes the status of the node's NodeLogConfig whenever the engine's report changes it.
pub async fn write_status(
    client: Client,
    node: String,
    mut reports: watch::Receiver<EngineStatus>,
    interval: u64,
) {
    let api: Api<NodeLogConfig> = Api::all(client);
    let mut last = match api.get_status(&node).await {
        Ok(o) => o.status.unwrap_or_default(),
        Err(_) => NodeLogConfigStatus::default(),
    };
    let mut written_once = false;
    loop {
        let report = reports.borrow_and_update().clone();
        let now = chrono::Utc::now();
        let new = build_status(
            &last,
            &report,
            now.timestamp(),
            interval,
            Time(k8s_openapi::jiff::Timestamp::now()),
        );
        if report.observed_generation.is_some() && (!written_once || differs(&last, &new)) {
            let patch = serde_json::json!({
                "apiVersion": "logging.tailor.dev/v1alpha1",
                "kind": "NodeLogConfig",
                "status": new,
            });
            match api
                .patch_status(&node, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
                .await
            {
                Ok(_) => {
                    last = new;
                    written_once = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing NodeLogConfig status failed; retrying on next change")
                }
            }
        }
        tokio::select! {
            r = reports.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn recomputing_an_unchanged_report_changes_nothing() {
        let report = EngineStatus {
            observed_generation: Some(4),
            active_targets: 2,
            active_files: 3,
            errors: vec![],
            last_checkpoint: Some(1000),
            checkpoint_problem: None,
        };
        let a = build_status(&NodeLogConfigStatus::default(), &report, 1002, 5, t(1002));
        assert_eq!(a.observed_generation, Some(4));
        assert_eq!(a.conditions[0].status, "True");
        // Later, with an older checkpoint age but nothing else new: no write, no new timestamps.
        let b = build_status(
            &a,
            &EngineStatus { last_checkpoint: Some(1003), ..report.clone() },
            1007,
            5,
            t(1007),
        );
        assert!(!differs(&a, &b));
        assert_eq!(a.conditions, b.conditions);
        // A target error is a change.
        let mut bad = report.clone();
        bad.errors.push(tailor_crds::node::TargetError { target: "x".into(), message: "boom".into() });
        let c = build_status(&a, &bad, 1008, 5, t(1008));
        assert!(differs(&a, &c));
        assert_eq!(c.conditions[0].status, "False");
        assert_eq!(c.conditions[0].last_transition_time, t(1008));
        // Stale checkpoints flip the checkpoint condition.
        let d = build_status(&a, &report, 1100, 5, t(1100));
        assert_eq!(d.conditions[1].status, "False");
    }
}
