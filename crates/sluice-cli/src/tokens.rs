//! `sluice token create|list|revoke`: a client of the running server's `/v1/tokens`, or,
//! with `--offline`, of the data directory itself (server stopped), to make the first
//! token of a deployment.

use crate::{ConfigArgs, load_config, open_engine, runtime};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sluice_engine::{Role, TokenRecord, TokenSpec};
use std::path::PathBuf;

/// How to reach the server.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// An admin token (not needed on loopback while no token exists).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust for https (a private CA).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints its secret (once) on standard output.
    Create {
        #[arg(long)]
        name: String,
        /// reader, writer or admin.
        #[arg(long)]
        role: String,
        /// Limit the token to these collections (comma-separated); default: all.
        #[arg(long, value_delimiter = ',')]
        collections: Option<Vec<String>>,
        /// Lifetime, e.g. 90d, 12h, 30m, 2w; default: no expiry.
        #[arg(long)]
        expires_in: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Lists tokens: name, role, collections, created, expires, last used.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revokes a token at once.
    Revoke {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A running server, or the data directory with `--offline`.
#[derive(clap::Args, Clone)]
pub struct Target {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Work on the data directory of `--config` directly (the server must be stopped).
    #[arg(long, requires = "config")]
    pub offline: bool,
    /// The config file, for `--offline`.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Parses `90d`, `12h`, `30m`, `45s`, `2w` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("{text:?} needs a unit: s, m, h, d or w"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} must start with a number"))?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => bail!("unknown unit {other:?} in {text:?}: use s, m, h, d or w"),
    };
    number
        .checked_mul(unit_ms)
        .with_context(|| format!("{text:?} is too long"))
}

pub fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create {
            name,
            role,
            collections,
            expires_in,
            target,
        } => {
            let role = Role::parse(&role)?;
            let expires_in_ms = expires_in.as_deref().map(parse_duration_ms).transpose()?;
            let spec = TokenSpec {
                name,
                role,
                collections,
                expires_in_ms,
            };
            let (secret, record) = if target.offline {
                let engine = offline_engine(&target)?;
                engine.create_token(spec)?
            } else {
                create_over_http(&target.server, &spec)?
            };
            println!("{secret}");
            eprintln!(
                "sluice: token {:?} ({}{}) created; the secret above is shown once and stored nowhere in clear",
                record.name,
                record.role.as_str(),
                record
                    .collections
                    .as_ref()
                    .map(|names| format!(", collections {}", names.join(",")))
                    .unwrap_or_default()
            );
            Ok(())
        }
        TokenCommand::List { target } => {
            let tokens = if target.offline {
                offline_engine(&target)?.tokens()
            } else {
                let body = request(&target.server, reqwest::Method::GET, "/v1/tokens", None)?;
                serde_json::from_value(body["tokens"].clone()).context("the server's token list")?
            };
            print_tokens(&tokens);
            Ok(())
        }
        TokenCommand::Revoke { name, target } => {
            if target.offline {
                if !offline_engine(&target)?.revoke_token(&name)? {
                    bail!("no token named {name:?}");
                }
            } else {
                let path = format!("/v1/tokens/{name}");
                request(&target.server, reqwest::Method::DELETE, &path, None)?;
            }
            eprintln!("sluice: token {name:?} revoked");
            Ok(())
        }
    }
}

fn offline_engine(target: &Target) -> Result<sluice_engine::Engine> {
    let config = target.config.clone().context("--offline needs --config")?;
    let (config, data_dir) = load_config(&ConfigArgs {
        config,
        data_dir: None,
    })?;
    open_engine(&config, &data_dir)
}

fn create_over_http(server: &ServerArgs, spec: &TokenSpec) -> Result<(String, TokenRecord)> {
    let body = json!({
        "name": spec.name,
        "role": spec.role,
        "collections": spec.collections,
        "expires_in_ms": spec.expires_in_ms,
    });
    let mut answer = request(server, reqwest::Method::POST, "/v1/tokens", Some(body))?;
    let secret = answer["token"]
        .as_str()
        .context("the server's answer has no token")?
        .to_owned();
    if let Some(object) = answer.as_object_mut() {
        object.remove("token");
    }
    let record: TokenRecord =
        serde_json::from_value(answer).context("the server's token record")?;
    Ok((secret, record))
}

/// One JSON request to the server; errors carry the server's code and message.
pub fn request(
    server: &ServerArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = &server.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    let client = builder.build().context("building the HTTP client")?;
    let url = format!("{}{path}", server.server.trim_end_matches('/'));
    runtime()?.block_on(async move {
        let mut request = client.request(method, &url);
        if let Some(token) = &server.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.with_context(|| {
            format!("calling {url} (is the server running? --server sets where)")
        })?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let code = body["error"]["code"].as_str().unwrap_or("error");
            let message = body["error"]["message"].as_str().unwrap_or("");
            bail!("{status} {code}: {message}");
        }
        Ok(body)
    })
}

fn format_ms(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let Ok(seconds) = i64::try_from(ms / 1000) else {
        return ms.to_string();
    };
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn print_tokens(tokens: &[TokenRecord]) {
    if tokens.is_empty() {
        println!("no tokens (the API is open on loopback until one exists)");
        return;
    }
    println!(
        "{:<24} {:<7} {:<24} {:<21} {:<21} last used",
        "name", "role", "collections", "created", "expires"
    );
    for token in tokens {
        println!(
            "{:<24} {:<7} {:<24} {:<21} {:<21} {}",
            token.name,
            token.role.as_str(),
            token
                .collections
                .as_ref()
                .map_or_else(|| "*".to_owned(), |names| names.join(",")),
            format_ms(Some(token.created_ms)),
            format_ms(token.expires_ms),
            format_ms(token.last_used_ms),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90d").ok(), Some(90 * 86_400_000));
        assert_eq!(parse_duration_ms("12h").ok(), Some(12 * 3_600_000));
        assert_eq!(parse_duration_ms("2w").ok(), Some(14 * 86_400_000));
        assert!(parse_duration_ms("12").is_err());
        assert!(parse_duration_ms("d").is_err());
        assert!(parse_duration_ms("5y").is_err());
    }
}
