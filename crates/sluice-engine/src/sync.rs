//! Group commit: writers commit their batches without waiting for the disk, then call
//! [`GroupSync::sync`]. One fsync covers every batch committed before it started, so
//! partitions that commit together share one fsync.

use sluice_store::{Store, StoreError};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::metrics::Histogram;

#[derive(Default)]
struct State {
    /// Tickets handed out so far; a ticket is taken after the caller's batch committed.
    next_ticket: u64,
    /// Every ticket below this is durable.
    durable_below: u64,
    syncing: bool,
}

#[derive(Default)]
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupSync {
    /// Returns once everything the caller committed before calling is durable.
    pub fn sync(&self, store: &Store, histogram: &Histogram) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        loop {
            if state.durable_below > ticket {
                return Ok(());
            }
            if !state.syncing {
                // Lead a sync. It covers every ticket taken so far, ours included.
                state.syncing = true;
                let covers = state.next_ticket;
                drop(state);
                let started = Instant::now();
                let result = store.sync();
                histogram.observe(started.elapsed().as_secs_f64());
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.syncing = false;
                if result.is_ok() {
                    state.durable_below = state.durable_below.max(covers);
                }
                self.done.notify_all();
                result?;
                continue;
            }
            state = self
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}
