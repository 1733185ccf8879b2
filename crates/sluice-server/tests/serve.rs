//! The connection loop over real sockets: TLS with a test CA, plain HTTP to the TLS port,
//! bad TLS files, `connections_max` and `header_read_timeout_ms`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sluice_core::Config;
use sluice_engine::Engine;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

struct Server {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &str, tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(&format!(
            "{extra}\n[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n"
        ))
        .unwrap();
        let engine = Engine::open(&config, dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let tls = tls.then(|| {
            Arc::new(
                sluice_server::Tls::load(&fixture("server.pem"), &fixture("server.key")).unwrap(),
            )
        });
        let options = sluice_server::ServerOptions::for_address(address, false, tls.is_some());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sluice_server::serve(
            engine,
            sluice_server::Plugins::default(),
            listener,
            options,
            tls,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

async fn read_all(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn tls_with_the_test_ca_and_plain_http_refused() {
    let server = Server::start("", true).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake with the test CA succeeds");
    tls.write_all(HEALTH).await.unwrap();
    let answer = read_all(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");

    // Plain HTTP to the TLS port: no HTTP answer, the connection just ends.
    let mut plain = TcpStream::connect(server.address).await.unwrap();
    plain.write_all(HEALTH).await.unwrap();
    let answer = read_all(&mut plain).await;
    assert!(!answer.contains("HTTP/1.1 200"), "{answer}");
    // The server is still fine afterwards.
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(HEALTH).await.unwrap();
    assert!(read_all(&mut tls).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[test]
fn bad_tls_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("cert.txt");
    std::fs::write(&not_pem, "hello, I am not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (missing.clone(), fixture("server.key"), "missing.pem"),
        (not_pem.clone(), fixture("server.key"), "cert.txt"),
        (fixture("server.pem"), not_pem.clone(), "cert.txt"),
        (fixture("server.pem"), fixture("ca.pem"), "ca.pem"),
    ];
    for (cert, key, named) in cases {
        let error = sluice_server::Tls::load(&cert, &key)
            .unwrap_err()
            .to_string();
        assert!(error.contains(named), "{error}");
    }
}

#[tokio::test]
async fn connections_are_bounded_and_slow_headers_time_out() {
    let server = Server::start(
        "[server]\nconnections_max = 4\nheader_read_timeout_ms = 1500\n",
        false,
    )
    .await;
    // Four connections that send half a request and stop.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        idle.push(stream);
    }
    // A fifth is closed while they are open ... (wait until the four are counted, by
    // retrying: the accept loop may not have seen them all yet)
    let started = Instant::now();
    loop {
        let mut extra = TcpStream::connect(server.address).await.unwrap();
        let _ = extra.write_all(HEALTH).await;
        let answer = read_all(&mut extra).await;
        if answer.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a fifth connection kept being served"
        );
    }
    // ... and the half-sent ones are closed by the header timeout.
    for mut stream in idle {
        let started = Instant::now();
        let answer = read_all(&mut stream).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    // With them gone, requests are served again.
    let started = Instant::now();
    loop {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(HEALTH).await.unwrap();
        if read_all(&mut stream).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never served again"
        );
    }
    server.stop().await;
}
