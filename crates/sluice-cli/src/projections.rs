//! `sluice projections ...` (clients of the running server, which runs the projections)
//! and the HTTP API's view of the projection runtime.

use crate::client::{ServerArgs, SourceArgs, server_only};
use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;
use sluice_projections::{Runtime, RuntimeError};
use sluice_server::analytics::BoxFuture;
use sluice_server::projections::{ProjectionsError, ProjectionsErrorKind};
use std::sync::Arc;

/// The HTTP API's view of the runtime.
pub struct ProjectionsApi(pub Arc<Runtime>);

fn api_error(error: RuntimeError) -> ProjectionsError {
    let kind = match &error {
        RuntimeError::UnknownProjection(_) => ProjectionsErrorKind::UnknownProjection,
        RuntimeError::NotReady(_) => ProjectionsErrorKind::NotReady,
        RuntimeError::Script(_) => ProjectionsErrorKind::ScriptRefused,
        RuntimeError::Engine(sluice_engine::EngineError::Invalid(_)) => {
            ProjectionsErrorKind::InvalidParameter
        }
        RuntimeError::Engine(_) => ProjectionsErrorKind::Internal,
    };
    ProjectionsError {
        kind,
        message: error.to_string(),
    }
}

fn to_json(value: impl serde::Serialize) -> Result<Value, ProjectionsError> {
    serde_json::to_value(value).map_err(|error| ProjectionsError {
        kind: ProjectionsErrorKind::Internal,
        message: error.to_string(),
    })
}

impl sluice_server::Projections for ProjectionsApi {
    fn list(&self) -> Value {
        to_json(self.0.list()).unwrap_or(Value::Array(Vec::new()))
    }

    fn get(&self, name: &str, key: &str) -> Result<Option<String>, ProjectionsError> {
        self.0.get(name, key).map_err(api_error)
    }

    fn get_many(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, ProjectionsError> {
        self.0.get_many(name, keys).map_err(api_error)
    }

    fn errors(
        &self,
        name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Value, Option<String>), ProjectionsError> {
        let (errors, next) = self.0.errors(name, after, limit).map_err(api_error)?;
        Ok((to_json(errors)?, next))
    }

    fn reload(&self, name: String) -> BoxFuture<Result<Value, ProjectionsError>> {
        let runtime = Arc::clone(&self.0);
        Box::pin(async move {
            let outcome = runtime.reload(&name).await.map_err(api_error)?;
            to_json(outcome)
        })
    }

    fn render_metrics(&self, out: &mut String) {
        self.0.render_metrics(out);
    }
}

#[derive(clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection: status, version, lag, entries, errors.
    List,
    /// Prints one entry (its value, as JSON).
    Get { name: String, key: String },
    /// The source documents whose last call failed.
    Errors {
        name: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-reads the script; a changed one is built as a new version in the background.
    Reload { name: String },
    /// Shows the build of a projection's newest version until it is live, with a
    /// progress bar.
    Backfill {
        name: String,
        /// Only print the state once.
        #[arg(long)]
        no_wait: bool,
    },
}

pub fn run(source: &SourceArgs, server: &ServerArgs, command: ProjectionsCommand) -> Result<()> {
    let client = server_only(source, server)?;
    match command {
        ProjectionsCommand::List => {
            let list = client
                .call(Method::GET, client.url(&["v1", "projections"], &[]), None)?
                .json()?;
            let projections = list["projections"]
                .as_array()
                .context("the server's answer has no projections")?;
            if projections.is_empty() {
                println!("no projections");
                return Ok(());
            }
            println!(
                "{:<24} {:<10} {:<32} {:>10} {:>9} {:>10} {:>7}",
                "name", "status", "version", "lag_rec", "lag_s", "entries", "errors"
            );
            for projection in projections {
                let version = &projection["version"];
                println!(
                    "{:<24} {:<10} {:<32} {:>10} {:>9.3} {:>10} {:>7}",
                    projection["name"].as_str().unwrap_or("?"),
                    projection["status"].as_str().unwrap_or("?"),
                    version["id"].as_str().unwrap_or("-"),
                    version["lag_records"].as_u64().unwrap_or_default(),
                    version["lag_seconds"].as_f64().unwrap_or_default(),
                    version["entries"].as_i64().unwrap_or_default(),
                    version["errors"].as_i64().unwrap_or_default(),
                );
                if let Some(building) = projection["building"].as_object() {
                    println!(
                        "{:<24} building {} ({} of {} documents backfilled)",
                        "",
                        building["id"].as_str().unwrap_or("?"),
                        building["backfilled"].as_u64().unwrap_or_default(),
                        building["source_documents"].as_u64().unwrap_or_default(),
                    );
                }
            }
            Ok(())
        }
        ProjectionsCommand::Get { name, key } => {
            let url = client.url(&["v1", "projections", &name, &key], &[]);
            let entry = client.call(Method::GET, url, None)?.json()?;
            println!("{}", serde_json::to_string_pretty(&entry["value"])?);
            Ok(())
        }
        ProjectionsCommand::Errors { name, limit } => {
            let limit = limit.to_string();
            let url = client.url(
                &["v1", "projections", &name, "errors"],
                &[("limit", &limit)],
            );
            let page = client.call(Method::GET, url, None)?.json()?;
            let errors = page["errors"].as_array().cloned().unwrap_or_default();
            if errors.is_empty() {
                println!("no projection errors");
            }
            for error in errors {
                println!(
                    "{}  {}  ({})",
                    error["key"],
                    error["error"].as_str().unwrap_or(""),
                    error["script_hash"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        ProjectionsCommand::Reload { name } => {
            let url = client.url(&["v1", "projections", &name, "reload"], &[]);
            let outcome = client.call(Method::POST, url, None)?.json()?;
            println!(
                "{}: {} (version {})",
                name,
                outcome["outcome"].as_str().unwrap_or("?"),
                outcome["version"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        ProjectionsCommand::Backfill { name, no_wait } => backfill(&client, &name, no_wait),
    }
}

/// Follows the newest version of `name` until it is live.
fn backfill(client: &crate::client::Client, name: &str, no_wait: bool) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} documents ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let list = client
            .call(Method::GET, client.url(&["v1", "projections"], &[]), None)?
            .json()?;
        let Some(projection) = list["projections"]
            .as_array()
            .and_then(|all| all.iter().find(|projection| projection["name"] == name))
        else {
            bail!("no projection {name:?} on {}", client.base());
        };
        let version = if projection["building"].is_object() {
            &projection["building"]
        } else {
            &projection["version"]
        };
        let total = version["source_documents"].as_u64().unwrap_or_default();
        let done = version["backfilled"].as_u64().unwrap_or_default();
        let phase = version["phase"].as_str().unwrap_or("?");
        bar.set_length(total.max(done));
        bar.set_position(done);
        bar.set_message(format!("{name} {}", version["id"].as_str().unwrap_or("?")));
        let building = projection["building"].is_object() || phase == "backfill";
        if !building || no_wait {
            bar.finish();
            println!(
                "{name}: {} (version {}, {} entries, {} errors)",
                projection["status"].as_str().unwrap_or("?"),
                projection["version"]["id"].as_str().unwrap_or("-"),
                projection["version"]["entries"]
                    .as_i64()
                    .unwrap_or_default(),
                projection["version"]["errors"].as_i64().unwrap_or_default(),
            );
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
