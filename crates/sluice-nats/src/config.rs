//! Connection options from `[nats]`.

use crate::NatsError;
use sluice_core::config::NatsConfig;
use sluice_engine::Backoff;
use sluice_engine::Engine;
use std::time::Duration;

/// The component that reports the connection's state.
pub(crate) const CONNECTION_COMPONENT: &str = "nats-connection";

pub(crate) async fn connect(
    engine: &Engine,
    config: &NatsConfig,
) -> Result<async_nats::Client, NatsError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("sluice")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)));
    if let Some(variable) = &config.token_env {
        let token = std::env::var(variable).map_err(|_| {
            NatsError::Connect(format!("nats.token_env names {variable}, which is not set"))
        })?;
        options = options.token(token);
    }
    let backoff = Backoff::new(config.retry_delay_max_ms);
    let shown_url = redact_url(&config.url);
    let component = engine.component(CONNECTION_COMPONENT);
    component.set_down(format!("connecting to {shown_url}"));
    let events_url = shown_url.clone();
    let events_component = component.clone();
    options = options
        .reconnect_delay_callback(move |attempts| {
            backoff.delay(u32::try_from(attempts).unwrap_or(u32::MAX))
        })
        .event_callback(move |event| {
            let component = events_component.clone();
            let url = events_url.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(%url, "Connected to NATS.");
                        component.set_up(format!("connected to {url}"));
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(%url, "NATS is unreachable; reconnecting with backoff.");
                        component.set_down(format!("{url} is unreachable; reconnecting"));
                    }
                    other => tracing::warn!(%url, event = %other, "NATS connection event."),
                }
            }
        });
    options
        .connect(config.url.as_str())
        .await
        .map_err(|error| NatsError::Connect(format!("{shown_url}: {error}")))
}

/// The URL without credentials, for logs and health (`nats://user:secret@host` becomes
/// `nats://***@host`).
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &one[..scheme + 3], &one[at..])
            }
            (None, Some(at)) => format!("***{}", &one[at..]),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
