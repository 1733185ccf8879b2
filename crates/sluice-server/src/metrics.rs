//! The HTTP side's metrics, appended to the engine's in `/metrics`: requests and their
//! latency per route, failed authentications, and connections.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

#[derive(Default)]
struct RouteStats {
    /// Requests whose handler has not answered yet (a long poll counts while it waits).
    in_flight: i64,
    /// By status code.
    requests: BTreeMap<u16, u64>,
    buckets: [u64; LATENCY_BUCKETS_S.len()],
    seconds_sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct HttpMetrics {
    /// By (method, route).
    routes: Mutex<BTreeMap<(String, String), RouteStats>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    pub connections_open: AtomicI64,
    pub connections_refused: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("HttpMetrics")
    }
}

impl HttpMetrics {
    pub fn auth_failure(&self, reason: &'static str) {
        *self
            .auth_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    fn add_in_flight(&self, method: &str, route: &str, delta: i64) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes
            .entry((method.to_owned(), route.to_owned()))
            .or_default()
            .in_flight += delta;
    }

    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = routes
            .entry((method.to_owned(), route.to_owned()))
            .or_default();
        *stats.requests.entry(status).or_default() += 1;
        if let Some(bucket) = LATENCY_BUCKETS_S.iter().position(|bound| seconds <= *bound) {
            stats.buckets[bucket] += 1;
        }
        stats.seconds_sum += seconds;
        stats.count += 1;
    }

    pub fn render(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        out.push_str("# TYPE sluice_http_requests_total counter\n");
        for ((method, route), stats) in routes.iter() {
            for (status, count) in &stats.requests {
                let _ = writeln!(
                    out,
                    "sluice_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# TYPE sluice_http_requests_in_flight gauge\n");
        for ((method, route), stats) in routes.iter() {
            let _ = writeln!(
                out,
                "sluice_http_requests_in_flight{{method=\"{method}\",route=\"{route}\"}} {}",
                stats.in_flight
            );
        }
        out.push_str("# TYPE sluice_http_request_seconds histogram\n");
        for ((method, route), stats) in routes.iter() {
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS_S.iter().zip(stats.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "sluice_http_request_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            let _ = writeln!(
                out,
                "sluice_http_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                stats.count
            );
            let _ = writeln!(
                out,
                "sluice_http_request_seconds_sum{{{labels}}} {}",
                stats.seconds_sum
            );
            let _ = writeln!(
                out,
                "sluice_http_request_seconds_count{{{labels}}} {}",
                stats.count
            );
        }
        drop(routes);
        out.push_str("# TYPE sluice_auth_failures_total counter\n");
        for (reason, count) in self
            .auth_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "sluice_auth_failures_total{{reason=\"{reason}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# TYPE sluice_http_connections_open gauge\nsluice_http_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE sluice_http_connections_refused_total counter\nsluice_http_connections_refused_total {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE sluice_tls_handshake_failures_total counter\nsluice_tls_handshake_failures_total {}",
            self.tls_handshake_failures.load(Ordering::Relaxed)
        );
    }
}

/// Counts every routed request by its route template (never its concrete path, so that
/// keys and names do not become label values).
pub async fn track(State(state): State<crate::AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let in_flight = InFlight::new(&state.metrics, &method, &route);
    let response = next.run(request).await;
    drop(in_flight);
    state.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Counts a request in `sluice_http_requests_in_flight` until its handler answers or is
/// dropped (a client that leaves mid long poll must not leave the gauge raised).
struct InFlight<'a> {
    metrics: &'a HttpMetrics,
    method: &'a str,
    route: &'a str,
}

impl<'a> InFlight<'a> {
    fn new(metrics: &'a HttpMetrics, method: &'a str, route: &'a str) -> Self {
        metrics.add_in_flight(method, route, 1);
        Self {
            metrics,
            method,
            route,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.add_in_flight(self.method, self.route, -1);
    }
}
