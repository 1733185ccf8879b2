//! The NATS JetStream connector, in Vector's connector layout: `config.rs` (connection
//! options from `[nats]`), `outbound.rs` (the change log published to a stream),
//! `inbound.rs` (events read from streams and applied through the processor), `tests.rs`
//! (unit tests) and `tests/integration_tests.rs` (against a real server).
//!
//! Delivery guarantees:
//!
//! | direction | guarantee | how |
//! |-----------|-----------|-----|
//! | outbound  | every change record, exactly once in the stream | the publisher is a consumer of the change log; the message id is the data directory's id and the record's cursor, so JetStream drops retries inside its duplicate window, and after a longer outage the publisher resumes after the stream's last message |
//! | inbound   | every message applied once | a message is acknowledged only after its event is durable; a redelivery is stale or a no-op by version, or, without a version, by its CloudEvents `id` or stream sequence |
//!
//! Every connector retries NATS with backoff while it is unreachable and reports its
//! state as a component (`/healthz`, `sluice_component_up`).

mod config;
mod inbound;
mod outbound;

pub use config::redact_url;
pub use inbound::inbound_input;
pub use outbound::message_id;

use sluice_core::config::NatsConfig;
use sluice_engine::{Backoff, Engine};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("NATS connection: {0}")]
    Connect(String),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error(transparent)]
    Engine(#[from] sluice_engine::EngineError),
}

impl NatsError {
    fn jetstream(error: impl std::fmt::Display) -> Self {
        NatsError::JetStream(error.to_string())
    }
}

/// The running connector tasks.
pub struct Connectors {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Connectors {
    /// Asks every task to stop after its current batch and waits for them.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Connects (in the background: an unreachable server is retried, not an error) and
/// starts the configured publisher and inbound readers.
pub async fn start(engine: Engine, config: NatsConfig) -> Result<Connectors, NatsError> {
    let client = config::connect(&engine, &config).await?;
    let (stop, stopping) = watch::channel(false);
    let mut tasks = Vec::new();
    let backoff = Backoff::new(config.retry_delay_max_ms);
    let request_timeout = Duration::from_millis(config.request_timeout_ms);
    if let Some(outbound) = config.outbound.clone() {
        let jetstream = async_nats::jetstream::new(client.clone());
        tasks.push(tokio::spawn(outbound::run(
            engine.clone(),
            jetstream,
            outbound,
            backoff,
            request_timeout,
            stopping.clone(),
        )));
    }
    for inbound in config.inbound.clone() {
        let jetstream = async_nats::jetstream::new(client.clone());
        tasks.push(tokio::spawn(inbound::run(
            engine.clone(),
            jetstream,
            inbound,
            backoff,
            stopping.clone(),
        )));
    }
    Ok(Connectors { stop, tasks })
}

/// Resolves once a stop is asked for (or the sender is gone).
pub(crate) async fn stop_requested(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the caller's awaits.
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

/// Waits until the client is connected, saying so on `component` meanwhile; `false` when
/// asked to stop first. JetStream requests made while disconnected would only time out.
pub(crate) async fn wait_connected(
    jetstream: &async_nats::jetstream::Context,
    component: &sluice_engine::Component,
    stopping: &mut watch::Receiver<bool>,
) -> bool {
    const POLL: Duration = Duration::from_millis(50);
    let client = jetstream.client();
    let mut reported = false;
    while client.connection_state() != async_nats::connection::State::Connected {
        if !reported {
            component.set_down("waiting for the NATS connection");
            reported = true;
        }
        let stopped = tokio::select! {
            _ = tokio::time::sleep(POLL) => false,
            _ = stopping.wait_for(|stop| *stop) => true,
        };
        if stopped {
            return false;
        }
    }
    true
}

/// A connector task: one attempt runs until asked to stop, or fails when NATS does.
pub(crate) trait Attempt {
    /// What the logs call it.
    fn what(&self) -> &str;
    fn component(&self) -> &sluice_engine::Component;
    async fn attempt(&self, stopping: &mut watch::Receiver<bool>) -> Result<(), NatsError>;
}

/// Runs attempt after attempt with backoff between failures, reporting each failure on
/// the task's component, until asked to stop. An engine error ends the task: the engine
/// is shutting down or refusing writes, and retrying cannot help.
pub(crate) async fn supervise(
    task: &impl Attempt,
    backoff: Backoff,
    stopping: &mut watch::Receiver<bool>,
) {
    let mut failures = 0;
    loop {
        match task.attempt(stopping).await {
            Ok(()) => return,
            Err(NatsError::Engine(error)) => {
                tracing::error!(%error, task = task.what(), "NATS task stops.");
                task.component().set_down(format!("stopped: {error}"));
                return;
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, failures, task = task.what(), "NATS task failed; retrying with backoff.");
                task.component().set_down(error.to_string());
                if !sleep(backoff, failures, stopping).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps for the backoff's delay, or less if asked to stop; returns whether to go on.
pub(crate) async fn sleep(
    backoff: Backoff,
    failures: u32,
    stopping: &mut watch::Receiver<bool>,
) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(backoff.delay(failures)) => false,
        _ = stopping.wait_for(|stop| *stop) => true,
    };
    !stopped && !*stopping.borrow()
}

#[cfg(test)]
mod tests;
