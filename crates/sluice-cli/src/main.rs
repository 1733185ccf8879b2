//! The `sluice` binary: a thin layer of flags over the engine and the server.

mod analytics;
mod audit;
mod client;
mod demo;
mod documents;
mod generator;
mod indexes;
mod ingest;
mod projections;
mod tokens;
mod validate;
mod watch;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sluice_core::Config;
use sluice_engine::Engine;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The engine allocates many small, short-lived JSON values across threads; mimalloc
/// measured 25-40% faster than the system allocator on the ingest benchmark. It is built
/// without transparent huge pages: with them, page zeroing made run times vary 2x. Its
/// v2 line, not v3: in the soak, v3 held 60-70 MB more resident memory for the same heap
/// (BENCHMARKS.md, "Soak with memory by owner"). `Counting` keeps the heap bytes in use
/// for `/metrics` (a thread-local add per call).
#[global_allocator]
static ALLOCATOR: sluice_alloc::Counting<mimalloc::MiMalloc> =
    sluice_alloc::Counting::new(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: partial change events in, always-fresh documents and a change log out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    server: client::ServerArgs,
}

/// Where the config comes from, shared by every command that opens the store.
#[derive(clap::Args, Clone)]
struct ConfigArgs {
    /// The config file (sluice.toml).
    #[arg(long, short, env = "SLUICE_CONFIG")]
    config: PathBuf,
    /// Overrides `server.data_dir`.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP API.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Overrides `server.listen`.
        #[arg(long, env = "SLUICE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Serves every request without a token, even beyond loopback and even when
        /// tokens exist. Only behind a network boundary you trust.
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// Loads an NDJSON file through the processor, durably, in this process.
    Ingest {
        #[command(flatten)]
        config: ConfigArgs,
        /// The collection the events belong to.
        #[arg(long)]
        collection: String,
        /// The NDJSON file (`-` for standard input).
        file: PathBuf,
        /// Bytes of whole lines parsed and submitted to the processor at once.
        #[arg(long, default_value_t = 1 << 20)]
        chunk_bytes: usize,
        /// Events a writer commits together (overrides `engine.batch_events_max`: bulk
        /// loads commit fewer, larger batches, so each key is written once per batch).
        #[arg(long, default_value_t = 8_192)]
        batch_events: usize,
    },
    /// Prints one document.
    Get {
        #[command(flatten)]
        source: client::SourceArgs,
        #[arg(long)]
        collection: String,
        /// One value per key field.
        key: Vec<String>,
    },
    /// Writes every document of a collection as NDJSON to standard output.
    Export {
        #[command(flatten)]
        source: client::SourceArgs,
        #[arg(long)]
        collection: String,
    },
    /// Projections: list, get an entry, errors, reload a script, follow a backfill.
    Projections {
        #[command(flatten)]
        source: client::SourceArgs,
        #[command(subcommand)]
        command: projections::ProjectionsCommand,
    },
    /// Search indexes: list, search, autocomplete, errors, rebuild with a progress bar.
    #[command(alias = "indexes")]
    Index {
        #[command(flatten)]
        source: client::SourceArgs,
        #[command(subcommand)]
        command: indexes::IndexCommand,
    },
    /// Lists the subscriptions with their position and lag.
    Subscriptions {
        #[command(flatten)]
        source: client::SourceArgs,
    },
    /// Archives what is durable and compacts a new Parquet snapshot of a collection.
    Snapshot {
        #[command(flatten)]
        source: client::SourceArgs,
        collection: String,
        /// Only archive the change log into segments; compact later (data directory
        /// only: a running server archives on its own).
        #[arg(long)]
        archive_only: bool,
    },
    /// Runs read-only SQL over the snapshots; every collection is a table.
    Query {
        #[command(flatten)]
        source: client::SourceArgs,
        /// e.g. "SELECT specialty, count(*) FROM doctor GROUP BY 1"
        sql: String,
        /// Read each table from its newest snapshot with an id not above this one.
        #[arg(long)]
        as_of: Option<String>,
        /// table, json or csv.
        #[arg(long, default_value = "table")]
        format: sluice_snapshot::Format,
        /// Print the query's own time to standard error.
        #[arg(long)]
        timing: bool,
    },
    /// Rebuilds the documents of an empty data directory from the latest snapshots and
    /// the segments after them, and verifies the result (no server may be using it).
    Restore {
        #[command(flatten)]
        source: client::SourceArgs,
    },
    /// Health of the server and every component; exits 0 when ok, 1 when degraded, 2
    /// when failed or no server answers.
    Status {
        #[command(flatten)]
        source: client::SourceArgs,
    },
    /// Follows the change stream: one line per change.
    Tap {
        #[command(flatten)]
        source: client::SourceArgs,
        /// Only this collection's changes.
        #[arg(long)]
        collection: Option<String>,
        /// A cursor, or `now`.
        #[arg(long, default_value = "now")]
        after: String,
        /// Print each change record as JSON.
        #[arg(long)]
        json: bool,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
        /// CPU priority (nice, 0 to 19): a viewer yields to the server it watches when
        /// they share a busy host, falling behind and catching up rather than slowing
        /// it. 0 keeps the shell's priority.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=19))]
        nice: u8,
    },
    /// A live view of events per second, lags, queues and HTTP load.
    Top {
        #[command(flatten)]
        source: client::SourceArgs,
        /// Refresh interval.
        #[arg(long, default_value_t = 1_000)]
        interval_ms: u64,
        /// Stop after this many views (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        iterations: u64,
    },
    /// Compares a collection with its source of truth, a PostgreSQL query: documents
    /// missing, extra and differing, with samples; exits 1 when anything differs.
    Audit {
        #[command(flatten)]
        source: client::SourceArgs,
        #[arg(long)]
        collection: String,
        /// The source database: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
        #[arg(long = "source", env = "SLUICE_AUDIT_SOURCE", hide_env_values = true)]
        source_url: String,
        /// The rows to compare, e.g. "SELECT doctor_id, name, specialty FROM doctors";
        /// its key columns are named like the collection's key fields.
        #[arg(long)]
        query: String,
        /// Compare only these fields (names or JSON pointers, comma-separated).
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// Keys shown per kind of difference.
        #[arg(long, default_value_t = 5)]
        sample: usize,
        /// text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Checks a config without starting anything: every problem with its line; exits 1
    /// on any.
    Validate {
        /// The config file (sluice.toml).
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Prints a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions { shell: clap_complete::Shell },
    /// Prints the man page (roff).
    Man,
    /// Manages API tokens (over HTTP with an admin token, or `--offline`).
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Prints the OpenAPI 3.1 spec of the HTTP API.
    Openapi,
    /// Generates synthetic healthcare events as NDJSON.
    Gen {
        /// Which collection's events to write.
        #[arg(long, default_value = "doctor", value_parser = clap::builder::PossibleValuesParser::new(generator::COLLECTIONS))]
        collection: String,
        /// How many events (0: until interrupted).
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Events per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Number of doctors; the other collections scale with it.
        #[arg(long, default_value_t = 1_000)]
        doctors: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Starts a server on a fresh data directory with the healthcare example and feeds it.
    Demo {
        /// Where to keep the demo's data (default: a new temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Generated events per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Also publish every change to NATS JetStream at this URL (stream
        /// SLUICE_CHANGES, subjects sluice.changes.<collection>).
        #[arg(long)]
        nats: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(
        cli.command,
        Command::Serve { .. } | Command::Demo { .. }
    ));
    let server = cli.server;
    let outcome = match cli.command {
        Command::Status { source } => {
            watch::status(&source, &server).map(|health| ExitCode::from(health as u8))
        }
        Command::Audit {
            source,
            collection,
            source_url,
            query,
            fields,
            sample,
            format,
        } => audit::run(
            &source,
            &server,
            &audit::AuditOptions {
                collection: &collection,
                source_url: &source_url,
                query: &query,
                fields: fields.as_deref(),
                sample_max: sample,
                json: format == "json",
            },
        )
        .map(|clean| {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::Validate { config } => validate::run(&config).map(|valid| {
            if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        command => run(command, &server).map(|()| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("sluice: error: {error:#}");
            ExitCode::from(client::exit_code(&error))
        }
    }
}

fn run(command: Command, server: &client::ServerArgs) -> Result<()> {
    match command {
        Command::Serve {
            config,
            listen,
            insecure_no_auth,
        } => serve(&config, listen, insecure_no_auth),
        Command::Ingest {
            config,
            collection,
            file,
            chunk_bytes,
            batch_events,
        } => {
            let (mut config, data_dir) = load_config(&config)?;
            config.engine.batch_events_max = batch_events.max(1);
            ingest::run(&config, &data_dir, &collection, &file, chunk_bytes)
        }
        Command::Get {
            source,
            collection,
            key,
        } => documents::get(&source, server, &collection, &key),
        Command::Export { source, collection } => documents::export(&source, server, &collection),
        Command::Subscriptions { source } => documents::subscriptions(&source, server),
        Command::Projections { source, command } => projections::run(&source, server, command),
        Command::Index { source, command } => indexes::run(&source, server, command),
        Command::Snapshot {
            source,
            collection,
            archive_only,
        } => analytics::snapshot(&source, server, &collection, archive_only),
        Command::Query {
            source,
            sql,
            as_of,
            format,
            timing,
        } => analytics::query(&source, server, &sql, as_of.as_deref(), format, timing),
        Command::Restore { source } => analytics::restore(&source, server),
        // Answered in `main`, for their exit codes.
        Command::Status { .. } | Command::Validate { .. } | Command::Audit { .. } => Ok(()),
        Command::Tap {
            source,
            collection,
            after,
            json,
            count,
            nice,
        } => watch::tap(
            &source,
            server,
            &watch::TapOptions {
                collection: collection.as_deref(),
                after: &after,
                json,
                count,
                nice,
            },
        ),
        Command::Top {
            source,
            interval_ms,
            iterations,
        } => watch::top(
            &source,
            server,
            &watch::TopOptions {
                interval_ms,
                iterations,
            },
        ),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "sluice", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Token { command } => tokens::run(command, server),
        Command::Openapi => {
            let spec = sluice_server::openapi_spec();
            println!("{}", serde_json::to_string_pretty(&spec)?);
            Ok(())
        }
        Command::Gen {
            collection,
            count,
            rate,
            doctors,
            seed,
        } => generate(&collection, count, rate, doctors, seed),
        Command::Demo {
            data_dir,
            listen,
            rate,
            nats,
        } => demo::run(data_dir, listen, rate, nats),
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "info" } else { "warn" };
    let level = std::env::var("SLUICE_LOG").unwrap_or_else(|_| default.to_owned());
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
}

/// Reads and validates the config; the data directory is resolved against the config
/// file's directory unless overridden.
fn load_config(args: &ConfigArgs) -> Result<(Config, PathBuf)> {
    let path = &args.config;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let config =
        Config::from_toml(&text).with_context(|| format!("invalid config {}", path.display()))?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None if config.server.data_dir.is_absolute() => config.server.data_dir.clone(),
        None => path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&config.server.data_dir),
    };
    Ok((config, data_dir))
}

fn open_engine(config: &Config, data_dir: &Path) -> Result<Engine> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    match Engine::open(config, data_dir) {
        Ok(engine) => Ok(engine),
        Err(error) if error.is_locked() => Err(client::Unreachable(format!(
            "{} is in use by another process (a running server?): stop it, or give this command its own data directory",
            data_dir.display()
        ))
        .into()),
        Err(error) => Err(anyhow::Error::new(error)
            .context(format!("opening the store in {}", data_dir.display()))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(args: &ConfigArgs, listen: Option<SocketAddr>, insecure_no_auth: bool) -> Result<()> {
    let (config, data_dir) = load_config(args)?;
    let address = listen.unwrap_or(config.server.listen);
    let config_dir = args.config.parent().unwrap_or(Path::new(".")).to_owned();
    let tls = match &config.server.tls {
        Some(tls) => Some(std::sync::Arc::new(sluice_server::Tls::load(
            &config_dir.join(&tls.cert),
            &config_dir.join(&tls.key),
        )?)),
        None => None,
    };
    let engine = open_engine(&config, &data_dir)?;
    add_bootstrap_token(&engine, &config, &config_dir)?;
    if let Err(message) = sluice_server::check_listen_address(&engine, address, insecure_no_auth) {
        bail!(message);
    }
    let options =
        sluice_server::ServerOptions::for_address(address, insecure_no_auth, tls.is_some());
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("sluice: listening on {scheme}://{local}");
        std::io::stdout().flush()?;
        tracing::info!(%local, data_dir = %data_dir.display(), "Serving.");
        let serving = Serving {
            listener,
            options,
            tls,
        };
        serve_with_connectors(engine, serving, config.nats, &data_dir, &config_dir).await
    })
}

/// The bootstrap admin token, from `SLUICE_ADMIN_TOKEN` or `server.admin_token_file`:
/// kept in memory only, for automated deployments.
fn add_bootstrap_token(engine: &Engine, config: &Config, config_dir: &Path) -> Result<()> {
    let secret = match std::env::var("SLUICE_ADMIN_TOKEN") {
        Ok(secret) if !secret.trim().is_empty() => Some(secret.trim().to_owned()),
        _ => match &config.server.admin_token_file {
            Some(file) => {
                let path = config_dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the admin token file {}", path.display()))?;
                Some(text.trim().to_owned())
            }
            None => None,
        },
    };
    if let Some(secret) = secret {
        engine
            .add_bootstrap_token(&secret)
            .context("the bootstrap admin token")?;
        tracing::info!("Bootstrap admin token loaded (kept in memory only).");
    }
    Ok(())
}

/// Where and how the HTTP API is served.
pub(crate) struct Serving {
    pub listener: tokio::net::TcpListener,
    pub options: sluice_server::ServerOptions,
    pub tls: Option<std::sync::Arc<sluice_server::Tls>>,
}

/// Serves HTTP, with the NATS connector and the snapshot archiver beside it when
/// configured, until a signal; they stop after the server, each after its current batch.
pub(crate) async fn serve_with_connectors(
    engine: Engine,
    serving: Serving,
    nats: Option<sluice_core::config::NatsConfig>,
    data_dir: &Path,
    config_dir: &Path,
) -> Result<()> {
    let connectors = match nats {
        Some(nats) => Some(
            sluice_nats::start(engine.clone(), nats)
                .await
                .context("starting the NATS connector")?,
        ),
        None => None,
    };
    let snapshots = analytics::open(&engine, data_dir)?;
    let archiving = snapshots
        .as_ref()
        .map(sluice_snapshot::Snapshots::start)
        .transpose()
        .context("starting the snapshot archiver")?;
    let projections = if engine.config().projections.is_empty() {
        None
    } else {
        Some(
            sluice_projections::Runtime::start(engine.clone(), config_dir)
                .map_err(anyhow::Error::msg)
                .context("starting the projections")?,
        )
    };
    let search = if engine.config().indexes.is_empty() {
        None
    } else {
        Some(
            sluice_search::Runtime::start(engine.clone(), data_dir)
                .map_err(anyhow::Error::msg)
                .context("starting the search indexes")?,
        )
    };
    let plugins = sluice_server::Plugins {
        analytics: snapshots
            .map(|snapshots| std::sync::Arc::new(analytics::SnapshotApi(snapshots)) as _),
        projections: projections
            .clone()
            .map(|runtime| std::sync::Arc::new(projections::ProjectionsApi(runtime)) as _),
        search: search
            .clone()
            .map(|runtime| std::sync::Arc::new(indexes::SearchApi(runtime)) as _),
    };
    if serving.options.auth_required && serving.tls.is_none() && !serving.options.insecure_no_auth {
        tracing::warn!(
            "Serving plain HTTP beyond loopback: tokens travel in clear. Configure [server.tls]."
        );
    }
    let address_file = AddressFile::write(data_dir, &serving)?;
    let background = tokio::spawn(background_tasks(engine.clone(), serving.tls.clone()));
    tracing::info!(auth = serving.options.auth_mode(&engine), "Access control.");
    sluice_server::serve(
        engine.clone(),
        plugins,
        serving.listener,
        serving.options,
        serving.tls,
        shutdown_signal(),
    )
    .await?;
    background.abort();
    if let Err(error) = engine.persist_token_usage() {
        tracing::warn!(%error, "Could not record when tokens were last used.");
    }
    if let Some(runtime) = projections {
        let _ = tokio::task::spawn_blocking(move || runtime.shutdown()).await;
    }
    if let Some(runtime) = search {
        let _ = tokio::task::spawn_blocking(move || runtime.shutdown()).await;
    }
    if let Some(archiving) = archiving {
        archiving.stop().await;
    }
    if let Some(connectors) = connectors {
        connectors.stop().await;
    }
    drop(address_file);
    tracing::info!("Stopped.");
    Ok(())
}

/// `server.json` in the data directory while the server runs: where commands that find
/// the directory locked reach the server holding it. Removed on a clean stop; one left
/// by a killed server is never read while the directory is unlocked.
struct AddressFile(PathBuf);

impl AddressFile {
    fn write(data_dir: &Path, serving: &Serving) -> Result<Self> {
        let local = client::reachable(serving.listener.local_addr()?);
        let scheme = if serving.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let path = data_dir.join(client::ADDRESS_FILE);
        let partial = data_dir.join(format!("{}.partial", client::ADDRESS_FILE));
        let body =
            serde_json::json!({"url": format!("{scheme}://{local}"), "pid": std::process::id()});
        std::fs::write(&partial, body.to_string())
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for AddressFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes tokens' last use back every minute, and reloads the TLS files on SIGHUP.
async fn background_tasks(engine: Engine, tls: Option<std::sync::Arc<sluice_server::Tls>>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        #[cfg(unix)]
        let reload = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = engine.persist_token_usage() {
                    tracing::warn!(%error, "Could not record when tokens were last used.");
                }
            }
            _ = reload => match &tls {
                Some(tls) => match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded."),
                    Err(error) => tracing::error!(%error, "TLS reload failed; keeping the old certificate."),
                },
                None => tracing::info!("SIGHUP: no TLS configured, nothing to reload."),
            },
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: the server's accept loop may not poll it before a
/// signal arrives, and an uninstalled SIGTERM would kill the process outright.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn generate(collection: &str, count: u64, rate: u64, doctors: u64, seed: u64) -> Result<()> {
    let mut generator = generator::Generator::new(seed, doctors);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let started = std::time::Instant::now();
    let mut written = 0u64;
    while count == 0 || written < count {
        let event = generator.next_of(collection);
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
        written += 1;
        if rate > 0 {
            out.flush()?;
            let due = std::time::Duration::from_secs_f64(written as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|json| json.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
