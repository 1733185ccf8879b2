//! `sluice index ...` (clients of the running server, which keeps the indexes) and the
//! HTTP API's view of the search runtime.

use crate::client::{ServerArgs, SourceArgs, server_only};
use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;
use sluice_search::{Runtime, RuntimeError};
use sluice_server::search::{SearchError, SearchErrorKind};
use std::sync::Arc;

/// The HTTP API's view of the runtime.
pub struct SearchApi(pub Arc<Runtime>);

fn api_error(error: RuntimeError) -> SearchError {
    let kind = match &error {
        RuntimeError::UnknownIndex(_) => SearchErrorKind::UnknownIndex,
        RuntimeError::NotReady(_) => SearchErrorKind::NotReady,
        RuntimeError::Invalid(_) => SearchErrorKind::InvalidQuery,
        RuntimeError::Shard(_) | RuntimeError::Io(_) | RuntimeError::Engine(_) => {
            SearchErrorKind::Internal
        }
    };
    SearchError {
        kind,
        message: error.to_string(),
    }
}

impl sluice_server::Search for SearchApi {
    fn list(&self) -> Value {
        self.0.list()
    }

    fn search(&self, name: &str, request: &Value) -> Result<Value, SearchError> {
        self.0.search(name, request).map_err(api_error)
    }

    fn autocomplete(
        &self,
        name: &str,
        field: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Value, SearchError> {
        self.0
            .autocomplete(name, field, prefix, limit)
            .map_err(api_error)
    }

    fn errors(
        &self,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Value, Option<u64>), SearchError> {
        let (errors, next) = self.0.errors(name, after, limit).map_err(api_error)?;
        let errors = serde_json::to_value(errors).map_err(|error| SearchError {
            kind: SearchErrorKind::Internal,
            message: error.to_string(),
        })?;
        Ok((errors, next))
    }

    fn rebuild(&self, name: &str) -> Result<Value, SearchError> {
        self.0.rebuild(name).map_err(api_error)
    }

    fn render_metrics(&self, out: &mut String) {
        self.0.render_metrics(out);
    }
}

#[derive(clap::Subcommand)]
pub enum IndexCommand {
    /// Each index: status, documents, records behind, lanes with their lag.
    List,
    /// Runs a search: the request's JSON (see `POST /v1/indexes/{name}/search`), or `-`
    /// for standard input. Prints the answer.
    Search { name: String, request: String },
    /// Completes every word of PREFIX in an autocomplete field.
    Autocomplete {
        name: String,
        field: String,
        prefix: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Source values that did not fit their field.
    Errors {
        name: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Builds the index again into a new generation, swapped in once caught up; shows
    /// a progress bar until then.
    Rebuild {
        name: String,
        /// Start it and return.
        #[arg(long)]
        no_wait: bool,
    },
}

pub fn run(source: &SourceArgs, server: &ServerArgs, command: IndexCommand) -> Result<()> {
    let client = server_only(source, server)?;
    match command {
        IndexCommand::List => {
            let list = client
                .call(Method::GET, client.url(&["v1", "indexes"], &[]), None)?
                .json()?;
            let indexes = list["indexes"]
                .as_array()
                .context("the server's answer has no indexes")?;
            if indexes.is_empty() {
                println!("no indexes");
                return Ok(());
            }
            println!(
                "{:<20} {:<11} {:<26} {:>10} {:>8} {:>7}  lanes (pending, lag)",
                "name", "status", "generation", "documents", "behind", "errors"
            );
            for index in indexes {
                let active = &index["active"];
                let lanes: Vec<String> = active["lanes"]
                    .as_array()
                    .map(|lanes| {
                        lanes
                            .iter()
                            .map(|lane| {
                                format!(
                                    "{} {} {:.1}s",
                                    lane["name"].as_str().unwrap_or("?"),
                                    lane["pending"].as_u64().unwrap_or_default(),
                                    lane["lag_s"].as_f64().unwrap_or_default()
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<20} {:<11} {:<26} {:>10} {:>8} {:>7}  {}",
                    index["name"].as_str().unwrap_or("?"),
                    index["status"].as_str().unwrap_or("?"),
                    active["generation"].as_str().unwrap_or("-"),
                    active["documents"].as_u64().unwrap_or_default(),
                    active["behind_records"].as_u64().unwrap_or_default(),
                    index["errors"].as_u64().unwrap_or_default(),
                    lanes.join(", ")
                );
            }
            Ok(())
        }
        IndexCommand::Search { name, request } => {
            let text = if request == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the request")?
            } else {
                request
            };
            let body: Value = serde_json::from_str(&text).context("the request is not JSON")?;
            let url = client.url(&["v1", "indexes", &name, "search"], &[]);
            let answer = client.call(Method::POST, url, Some(&body))?.json()?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        IndexCommand::Autocomplete {
            name,
            field,
            prefix,
            limit,
        } => {
            let limit = limit.to_string();
            let url = client.url(
                &["v1", "indexes", &name, "autocomplete"],
                &[("field", &field), ("prefix", &prefix), ("limit", &limit)],
            );
            let answer = client.call(Method::GET, url, None)?.json()?;
            for suggestion in answer["suggestions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                println!("{}", suggestion.as_str().unwrap_or_default());
            }
            Ok(())
        }
        IndexCommand::Errors { name, limit } => {
            let limit = limit.to_string();
            let url = client.url(&["v1", "indexes", &name, "errors"], &[("limit", &limit)]);
            let page = client.call(Method::GET, url, None)?.json()?;
            let errors = page["errors"].as_array().cloned().unwrap_or_default();
            if errors.is_empty() {
                println!("no index errors");
            }
            for error in errors {
                println!(
                    "{}  {}: {}",
                    error["key"],
                    error["field"].as_str().unwrap_or(""),
                    error["message"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        IndexCommand::Rebuild { name, no_wait } => {
            let url = client.url(&["v1", "indexes", &name, "rebuild"], &[]);
            let started = client.call(Method::POST, url, None)?.json()?;
            let building = started["building"].as_str().unwrap_or("?").to_owned();
            println!("{name}: building {building}");
            if no_wait {
                return Ok(());
            }
            follow_rebuild(&client, &name, &building)
        }
    }
}

/// Shows the rebuild of `name` into `building` until that generation is searched.
fn follow_rebuild(client: &crate::client::Client, name: &str, building: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} documents ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{name} {building}"));
    loop {
        let list = client
            .call(Method::GET, client.url(&["v1", "indexes"], &[]), None)?
            .json()?;
        let Some(index) = list["indexes"]
            .as_array()
            .and_then(|all| all.iter().find(|index| index["name"] == name))
        else {
            bail!("no index {name:?} on {}", client.base());
        };
        if index["active"]["generation"] == building {
            bar.finish();
            println!(
                "{name}: {} ({} documents)",
                index["status"].as_str().unwrap_or("?"),
                index["active"]["documents"].as_u64().unwrap_or_default()
            );
            return Ok(());
        }
        let expected = index["active"]["documents"].as_u64().unwrap_or_default();
        let scanned = index["building"]["scanned"].as_u64().unwrap_or_default();
        bar.set_length(expected.max(scanned));
        bar.set_position(scanned);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
