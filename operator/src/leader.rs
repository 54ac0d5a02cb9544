//! Leader election with a `coordination.k8s.io/v1` Lease, so that two replicas are safe: only
//! the holder writes. Expiry is judged by how long the lease record has stayed unchanged on
//! this replica's own clock (as client-go does), not by comparing clocks across machines.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// How the lease is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (pod name).
    pub identity: String,
    /// A holder that has not renewed for this long is replaced.
    pub duration: Duration,
    /// How often the holder renews and followers look.
    pub renew_every: Duration,
}

/// A failed lease call.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// What to do with the lease as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or its holder stopped renewing: take it.
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// The pure decision. `unchanged_for` is how long this replica has seen the same lease record.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration, default: Duration) -> Decision {
    let holder = spec.and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty());
    match holder {
        Some(h) if h == me => Decision::Renew,
        None => Decision::Acquire,
        Some(_) => {
            let secs = spec.and_then(|s| s.lease_duration_seconds).and_then(|d| u64::try_from(d).ok());
            let duration = secs.map_or(default, Duration::from_secs);
            if unchanged_for >= duration { Decision::Acquire } else { Decision::Follow }
        }
    }
}

/// The election loop: publishes `true` on `leader` while this replica holds the lease; on
/// shutdown it releases the lease so that another replica takes over at once.
pub async fn run(
    client: Client,
    s: LeaseSettings,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let mut seen: Option<(String, Instant)> = None;
    let mut last_renewal: Option<Instant> = None;
    loop {
        match attempt(&api, &s, &mut seen).await {
            Ok(true) => {
                last_renewal = Some(Instant::now());
                if !*leader.borrow() {
                    tracing::info!(identity = %s.identity, lease = %s.name, "became leader");
                }
                leader.send_replace(true);
            }
            Ok(false) => {
                if *leader.borrow() {
                    tracing::warn!(identity = %s.identity, "lost the lease");
                }
                leader.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                // Step down before anybody else may take over.
                if last_renewal.is_none_or(|t| t.elapsed() >= s.duration.mul_f32(0.8)) {
                    leader.send_replace(false);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(s.renew_every) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        match release(&api, &s).await {
            Ok(()) => tracing::info!(identity = %s.identity, "released the lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease"),
        }
    }
}

/// One look at the lease; `Ok(true)` when we hold it afterwards.
async fn attempt(
    api: &Api<Lease>,
    s: &LeaseSettings,
    seen: &mut Option<(String, Instant)>,
) -> Result<bool, LeaderError> {
    let err = |source| LeaderError::Api {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        source: Box::new(source),
    };
    let now = MicroTime(Timestamp::now());
    let Some(mut lease) = api.get_opt(&s.name).await.map_err(err)? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(s.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(duration_secs(s.duration)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(err(e)),
        };
    };
    // The record's identity: it changes on every renewal of whoever holds it.
    let record = lease.metadata.resource_version.clone().unwrap_or_default();
    let unchanged_for = match seen {
        Some((r, since)) if *r == record => since.elapsed(),
        _ => {
            *seen = Some((record, Instant::now()));
            Duration::ZERO
        }
    };
    let decision = decide(lease.spec.as_ref(), &s.identity, unchanged_for, s.duration);
    let spec = lease.spec.get_or_insert_with(Default::default);
    match decision {
        Decision::Follow => return Ok(false),
        Decision::Renew => spec.renew_time = Some(now),
        Decision::Acquire => {
            spec.holder_identity = Some(s.identity.clone());
            spec.lease_duration_seconds = Some(duration_secs(s.duration));
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
    }
    // `replace` carries the resourceVersion we read: if anybody wrote in between, it fails
    // with a conflict and we do not hold the lease.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(err(e)),
    }
}

async fn release(api: &Api<Lease>, s: &LeaseSettings) -> Result<(), LeaderError> {
    let err = |source| LeaderError::Api {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        source: Box::new(source),
    };
    let Some(mut lease) = api.get_opt(&s.name).await.map_err(err)? else { return Ok(()) };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(err(e)),
    }
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: secs,
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "me", Duration::ZERO, d), Decision::Acquire);
        assert_eq!(decide(Some(&spec(Some(""), None)), "me", Duration::ZERO, d), Decision::Acquire);
        assert_eq!(
            decide(Some(&spec(Some("me"), Some(15))), "me", Duration::from_secs(99), d),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), Some(15))), "me", Duration::from_secs(14), d),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), Some(15))), "me", Duration::from_secs(15), d),
            Decision::Acquire
        );
        // The holder's own duration counts, not ours.
        assert_eq!(
            decide(Some(&spec(Some("other"), Some(60))), "me", Duration::from_secs(30), d),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), None)), "me", Duration::from_secs(30), d),
            Decision::Acquire
        );
    }
}
