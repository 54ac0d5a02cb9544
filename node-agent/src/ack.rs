//! Acknowledgements: how far each file may be committed.
//!
//! Every group of events of one file that goes to the sinks is registered with the file's
//! ledger, with its end offset and the number of sinks that must acknowledge it. The committed
//! offset moves past a group only when every sink acknowledged it *and* every earlier group,
//! so it stays correct when sinks (or batches of one sink) complete out of order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// The pure bookkeeping of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Groups not yet fully acknowledged, oldest first; `seq` of the front is `first_seq`.
    pending: VecDeque<Pending>,
    first_seq: u64,
    committed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    end_offset: u64,
    remaining: u32,
}

impl LedgerState {
    pub fn new(committed: u64) -> Self {
        Self { pending: VecDeque::new(), first_seq: 0, committed }
    }

    /// Registers a group that ends at `end_offset` and that `sinks` sinks must acknowledge;
    /// returns its sequence number.
    pub fn register(&mut self, end_offset: u64, sinks: u32) -> u64 {
        let seq = self.first_seq + self.pending.len() as u64;
        self.pending.push_back(Pending { end_offset, remaining: sinks });
        self.advance();
        seq
    }

    /// One sink acknowledged group `seq`.
    pub fn ack(&mut self, seq: u64) {
        if let Some(i) = seq.checked_sub(self.first_seq)
            && let Some(p) = self.pending.get_mut(i as usize)
        {
            p.remaining = p.remaining.saturating_sub(1);
        }
        self.advance();
    }

    fn advance(&mut self) {
        while let Some(p) = self.pending.front() {
            if p.remaining > 0 {
                break;
            }
            self.committed = self.committed.max(p.end_offset);
            self.pending.pop_front();
            self.first_seq += 1;
        }
    }

    /// The offset up to which every event is acknowledged by every sink.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Groups still waiting for an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Moves the committed offset without events (a file re-read from another point).
    pub fn reset(&mut self, committed: u64) {
        self.pending.clear();
        self.committed = committed;
    }
}

/// A file's ledger, shared between the tailer and the sink runners.
#[derive(Clone, Debug, Default)]
pub struct Ledger(Arc<Mutex<LedgerState>>);

impl Ledger {
    pub fn new(committed: u64) -> Self {
        Self(Arc::new(Mutex::new(LedgerState::new(committed))))
    }

    /// The state; a panic while holding the lock cannot leave it inconsistent (every method
    /// is a few arithmetic steps), so a poisoned lock is used as is.
    pub fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn committed(&self) -> u64 {
        self.lock().committed()
    }
}

/// What a sink acknowledges once it delivered a chunk: one group per file in the chunk.
#[derive(Clone, Debug, Default)]
pub struct AckSet {
    groups: Vec<(Ledger, u64)>,
}

impl AckSet {
    pub fn push(&mut self, ledger: Ledger, seq: u64) {
        self.groups.push((ledger, seq));
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Called once per sink that delivered the chunk.
    pub fn ack(&self) {
        for (ledger, seq) in &self.groups {
            ledger.lock().ack(*seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commits_only_when_every_sink_acked_in_order() {
        let mut l = LedgerState::new(5);
        let a = l.register(10, 2);
        let b = l.register(20, 2);
        let c = l.register(30, 2);
        l.ack(b);
        l.ack(b);
        assert_eq!(l.committed(), 5, "b is done but a is not");
        l.ack(a);
        assert_eq!(l.committed(), 5, "one sink of a is missing");
        l.ack(a);
        assert_eq!(l.committed(), 20);
        l.ack(c);
        assert_eq!(l.committed(), 20);
        l.ack(c);
        assert_eq!(l.committed(), 30);
        assert_eq!(l.in_flight(), 0);
        l.ack(c); // a late duplicate changes nothing
        assert_eq!(l.committed(), 30);
    }

    proptest! {
        /// Whatever order the acknowledgements come in, the committed offset is the end of the
        /// longest fully acknowledged prefix of groups.
        #[test]
        fn committed_is_the_fully_acked_prefix(
            sinks in 1u32..4,
            n in 1usize..20,
            order in proptest::collection::vec(any::<u32>(), 0..200),
        ) {
            let mut l = LedgerState::new(0);
            let seqs: Vec<u64> = (0..n).map(|i| l.register((i as u64 + 1) * 10, sinks)).collect();
            let mut acks: Vec<u32> = vec![0; n];
            for o in order {
                let i = o as usize % n;
                if acks[i] < sinks {
                    acks[i] += 1;
                    l.ack(seqs[i]);
                }
                let prefix = acks.iter().take_while(|a| **a == sinks).count();
                prop_assert_eq!(l.committed(), prefix as u64 * 10);
            }
        }
    }
}
