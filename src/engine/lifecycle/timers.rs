//! The core's deadlines in one queue: the startup budget, the shutdown budget, and each
//! restart's backoff. Finding the next deadline is O(1) and arming one is O(log n); an entry
//! that no longer applies (the node moved on) is simply ignored when it comes due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Startup,
    Shutdown,
    /// The restart backoff of a node is over.
    Restart(usize),
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    queue: BinaryHeap<Reverse<(Duration, Timer)>>,
}

impl Timers {
    pub(super) fn arm(&mut self, at: Duration, timer: Timer) {
        self.queue.push(Reverse((at, timer)));
    }

    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the timers due at `now`, earliest first.
    pub(super) fn due(&mut self, now: Duration) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(Reverse((at, timer))) = self.queue.peek().copied() {
            if at > now {
                break;
            }
            self.queue.pop();
            due.push(timer);
        }
        due
    }
}
