//! Jittered exponential back-off between retries of a failed request.

use std::time::Duration;

use tokio::sync::watch;

use super::{RetryPolicy, stopped};

/// The delay before retry number `attempt` (0-based): exponential from `initial`, capped at
/// `max`, then "equal jitter" (a uniform draw in the upper half) so that many agents that lost
/// the same destination do not retry in lock-step, while the delay still grows. `unit` is a
/// uniform draw in `[0, 1)`.
pub fn delay(policy: &RetryPolicy, attempt: u32, unit: f64) -> Duration {
    let exp = policy.initial_backoff.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    let cap = exp.min(policy.max_backoff);
    let half = cap / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// Cancelled while waiting: the sink is shutting down.
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

/// Back-off state of one delivery.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Backoff { policy, attempt: 0 }
    }

    /// Sleeps before the next retry, unless `force_stop` turns `true` first.
    pub async fn wait(&mut self, force_stop: &watch::Receiver<bool>) -> Result<(), Cancelled> {
        let d = delay(&self.policy, self.attempt, fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        tokio::select! {
            _ = stopped(force_stop) => Err(Cancelled),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Some progress was made: the next failure starts again from the initial delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let p = policy();
        assert_eq!(delay(&p, 0, 0.0), Duration::from_millis(50));
        assert!(delay(&p, 0, 0.999_999) < Duration::from_millis(100));
        assert_eq!(delay(&p, 3, 0.0), Duration::from_millis(400));
        assert_eq!(delay(&p, 20, 0.0), Duration::from_secs(5));
        assert!(delay(&p, 20, 1.0) <= Duration::from_secs(10));
        assert_eq!(delay(&p, u32::MAX, 0.5), Duration::from_millis(7500));
    }

    #[tokio::test]
    async fn wait_returns_at_once_when_shut_down() {
        let (tx, rx) = watch::channel(false);
        tx.send(true).unwrap();
        let mut b = Backoff::new(RetryPolicy { initial_backoff: Duration::from_secs(3600), ..policy() });
        assert_eq!(b.wait(&rx).await, Err(Cancelled));
    }
}
