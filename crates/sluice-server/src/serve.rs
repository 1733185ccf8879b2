//! The connection loop: accepts connections up to `connections_max` (more are closed at
//! once and counted), gives each `header_read_timeout_ms` to finish its TLS handshake and
//! to send its request headers (so half-open connections cannot pile up), speaks TLS
//! with rustls when configured (certificates reloadable while serving), and drains on
//! shutdown: requests in flight finish, streams and long polls end.

use crate::{Plugins, ServerOptions, build_router};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sluice_engine::Engine;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tower::ServiceExt;

/// How long a graceful stop waits for connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate file {path}: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("TLS key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS files {cert} and {key}: {message}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The server's TLS identity, reloadable (SIGHUP) without dropping connections.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the PEM files; errors name the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let acceptor = acceptor(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            acceptor: RwLock::new(acceptor),
        })
    }

    /// Reads the files again; new connections use them, a failure keeps the old ones.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.cert, &self.key)?;
        *self
            .acceptor
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn current(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_error = |message: String| TlsError::Certificate {
        path: cert.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|error| cert_error(error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| cert_error(format!("not PEM: {error}")))?;
    if certs.is_empty() {
        return Err(cert_error("no CERTIFICATE section (is it PEM?)".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.to_owned(),
        message: match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY section (is it PEM?)".into()
            }
            other => other.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |error: rustls::Error| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        message: error.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    engine: Engine,
    plugins: Plugins,
    listener: tokio::net::TcpListener,
    options: ServerOptions,
    tls: Option<Arc<Tls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = engine.config().server.clone();
    let connections_max = server.connections_max.clamp(1, Semaphore::MAX_PERMITS);
    let header_timeout = Duration::from_millis(server.header_read_timeout_ms.max(1));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (router, metrics) = build_router(engine, stopping.clone(), plugins, options);
    let connections = Arc::new(Semaphore::new(connections_max));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(%error, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let stopping = stopping.clone();
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            match tls {
                Some(tls) => {
                    let handshake = tls.current().accept(stream);
                    match tokio::time::timeout(header_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            connection(
                                TokioIo::new(stream),
                                peer,
                                router,
                                stopping,
                                header_timeout,
                            )
                            .await;
                        }
                        Ok(Err(error)) => {
                            metrics
                                .tls_handshake_failures
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%error, %peer, "TLS handshake failed.");
                        }
                        Err(_) => {
                            metrics
                                .tls_handshake_failures
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                None => {
                    connection(TokioIo::new(stream), peer, router, stopping, header_timeout).await;
                }
            }
            metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    stop.send_replace(true);
    let all = u32::try_from(connections_max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("Connections still open after the drain timeout; stopping anyway.");
    }
    Ok(())
}

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    stopping: tokio::sync::watch::Receiver<bool>,
    header_timeout: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(Body::new))
        });
    let serving = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(serving);
    tokio::select! {
        result = serving.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "Connection ended with an error.");
            }
        }
        () = crate::routes::stopped(stopping) => {
            serving.as_mut().graceful_shutdown();
            let _ = serving.await;
        }
    }
}
