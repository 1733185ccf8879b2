//! How a command reaches the data. A server holds its data directory locked while it
//! runs, so a command first tries to open the directory: when that works no server is
//! running and the command works on the directory itself; when the directory is locked,
//! the command becomes a client of the server that holds it, found from the
//! `server.json` the server leaves in the directory, or the config's `listen`.
//! `--server URL` skips the search.

use crate::{ConfigArgs, load_config};
use anyhow::{Context, Result};
use serde_json::Value;
use sluice_core::Config;
use sluice_engine::Engine;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file a running server writes into its data directory: where it listens.
pub const ADDRESS_FILE: &str = "server.json";

/// How long connecting to a server may take before it counts as not answering.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Exit code 2: the command could not reach what it works on (a server that does not
/// answer, a refused token, a data directory held by a server it cannot find). The
/// message names the problem and the fix, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// How to reach a server; global, so every command takes them.
#[derive(clap::Args, Clone, Default)]
pub struct ServerArgs {
    /// The server's base URL (default: the server that holds the config's data
    /// directory).
    #[arg(long, env = "SLUICE_SERVER", global = true)]
    pub server: Option<String>,
    /// The token to send (not needed on loopback while no token exists).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A file holding the token (its first line).
    #[arg(long, env = "SLUICE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for https (a private CA).
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Say how the command reached the data (server or data directory) on stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

/// The config whose data a command works on; optional where `--server` suffices.
#[derive(clap::Args, Clone)]
pub struct SourceArgs {
    /// The config file (sluice.toml).
    #[arg(long, short, env = "SLUICE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Overrides `server.data_dir`.
    #[arg(long, env = "SLUICE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// Where a command's data is.
pub enum Reach {
    /// A running server holds the data directory.
    Server(Client),
    /// No server runs: the data directory, opened by this process.
    Local { data_dir: PathBuf, engine: Engine },
}

/// Finds the data of `source`: the server holding its data directory, or the directory.
pub fn reach(source: &SourceArgs, server: &ServerArgs) -> Result<Reach> {
    if let Some(url) = &server.server {
        let client = Client::new(url, server, Found::Flag)?;
        client.say(&format!("using the server at {url} (--server)"));
        return Ok(Reach::Server(client));
    }
    let Some(config_path) = &source.config else {
        return Err(Unreachable(
            "no data to work on: pass --config FILE (its data directory, or the server holding it) or --server URL"
                .to_owned(),
        )
        .into());
    };
    let args = ConfigArgs {
        config: config_path.clone(),
        data_dir: source.data_dir.clone(),
    };
    let (config, data_dir) = load_config(&args)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    match Engine::open(&config, &data_dir) {
        Ok(engine) => {
            if server.verbose {
                eprintln!(
                    "sluice: no server holds {}; working on it directly",
                    data_dir.display()
                );
            }
            Ok(Reach::Local { data_dir, engine })
        }
        Err(error) if error.is_locked() => {
            let url = server_url(&config, &data_dir);
            let client = Client::new(&url, server, Found::Holder(data_dir.clone()))?;
            client.say(&format!(
                "using the server at {url}, which holds {}",
                data_dir.display()
            ));
            Ok(Reach::Server(client))
        }
        Err(error) => Err(anyhow::Error::new(error)
            .context(format!("opening the data directory {}", data_dir.display()))),
    }
}

/// A client of a server only (`status`, `tap`, `top`): `--server`, else the server of
/// the config's data directory, else the default address.
pub fn server_only(source: &SourceArgs, server: &ServerArgs) -> Result<Client> {
    if let Some(url) = &server.server {
        return Client::new(url, server, Found::Flag);
    }
    let Some(config_path) = &source.config else {
        return Client::new("http://127.0.0.1:7070", server, Found::Default);
    };
    let (config, data_dir) = load_config(&ConfigArgs {
        config: config_path.clone(),
        data_dir: source.data_dir.clone(),
    })?;
    let url = server_url(&config, &data_dir);
    Client::new(&url, server, Found::Config)
}

/// The URL of the server holding `data_dir`: from its address file, else the config.
fn server_url(config: &Config, data_dir: &Path) -> String {
    let written = std::fs::read(data_dir.join(ADDRESS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|file| file["url"].as_str().map(str::to_owned));
    written.unwrap_or_else(|| {
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", reachable(config.server.listen))
    })
}

/// An address a client can connect to: an unspecified bind address (0.0.0.0, ::) means
/// this machine's loopback.
pub fn reachable(address: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut address = address;
    if address.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        address.set_ip(loopback);
    }
    address
}

/// How the server's URL was found: what to suggest when it does not answer.
#[derive(Clone, Debug)]
enum Found {
    Flag,
    /// The data directory is locked, so a server (or another command) holds it.
    Holder(PathBuf),
    /// The config's `listen`, without checking that a server runs.
    Config,
    Default,
}

/// A client of one server.
pub struct Client {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    found: Found,
    verbose: bool,
}

/// A successful answer.
pub struct Answer {
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("the server's answer is not JSON")
    }
}

impl Client {
    fn new(url: &str, args: &ServerArgs, found: Found) -> Result<Self> {
        let base = reqwest::Url::parse(url)
            .map_err(|error| Unreachable(format!("--server {url:?} is not a URL: {error}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Unreachable(format!(
                "--server {url:?} must be an http:// or https:// URL"
            ))
            .into());
        }
        let token = match (&args.token, &args.token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading the token file {}", file.display()))?;
                Some(text.lines().next().unwrap_or_default().trim().to_owned())
            }
            (None, None) => None,
        };
        let mut builder =
            reqwest::Client::builder().connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
        if let Some(ca) = &args.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().context("building the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Self {
            base,
            token,
            http,
            runtime,
            found,
            verbose: args.verbose,
        })
    }

    /// Writes what `-v` shows.
    pub fn say(&self, line: &str) {
        if self.verbose {
            eprintln!("sluice: {line}");
        }
    }

    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `segments` (each percent-encoded) with `query` pairs.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// One request, its whole answer read; errors as in [`Client::send`].
    pub fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
    ) -> Result<Answer> {
        self.block_on(async {
            let response = self.send(method, url, body).await?;
            let body = response
                .bytes()
                .await
                .with_context(|| format!("reading the answer of {}", self.base()))?
                .to_vec();
            Ok(Answer { body })
        })
    }

    /// Sends a request and checks its status: a server that does not answer, or that
    /// refuses the token, is [`Unreachable`]; another error status is an error with the
    /// server's code and message.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let response = self.send_unchecked(method, url, body).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(self.refused(status, &text))
    }

    /// Sends a request; only a server that does not answer is an error.
    pub async fn send_unchecked(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        request
            .send()
            .await
            .map_err(|error| self.not_answering(&error))
    }

    /// The error for an answer with an error status.
    fn refused(&self, status: reqwest::StatusCode, text: &str) -> anyhow::Error {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"]
            .as_str()
            .map_or_else(|| text.trim().to_owned(), str::to_owned);
        let base = self.base();
        match (status.as_u16(), &self.token) {
            (401, None) => Unreachable(format!(
                "server at {base} needs a token ({code}: {message}): pass --token, SLUICE_TOKEN or --token-file"
            ))
            .into(),
            (401, Some(_)) => Unreachable(format!(
                "server at {base} refused the token ({code}: {message}): create one with `sluice token create`"
            ))
            .into(),
            (403, _) => Unreachable(format!(
                "server at {base} does not let this token do that ({code}: {message}): use a token with the role and collections it needs"
            ))
            .into(),
            _ => anyhow::anyhow!("{status} {code}: {message}"),
        }
    }

    fn not_answering(&self, error: &reqwest::Error) -> anyhow::Error {
        let base = self.base();
        // The innermost cause says what went wrong (refused, timed out, bad certificate).
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let fix = match &self.found {
            Found::Flag => "check --server, or start the server with `sluice serve`".to_owned(),
            Found::Holder(dir) => format!(
                "{} is locked by another process: pass --server with the URL of the server that holds it",
                dir.display()
            ),
            Found::Config => {
                "start it with `sluice serve --config FILE`, or pass --server URL".to_owned()
            }
            Found::Default => "pass --config FILE or --server URL to say which server".to_owned(),
        };
        Unreachable(format!("server at {base} does not answer ({cause}): {fix}")).into()
    }
}

/// The exit code of an error: 2 when the command could not reach its data.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|cause| cause.is::<Unreachable>()) {
        2
    } else {
        1
    }
}
