//! `sluice token create|list|revoke`: a client of the running server's `/v1/tokens`, or,
//! when no server holds the config's data directory, of the directory itself (to make
//! the first token of a deployment).

use crate::client::{Client, Reach, ServerArgs, SourceArgs, Unreachable, reach, server_only};
use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::json;
use sluice_engine::{Engine, Role, TokenRecord, TokenSpec};
use std::path::PathBuf;

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

/// The server holding the data directory of `--config` (or at `--server`), or that
/// directory itself when no server runs.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Insist on the data directory of `--config` (fails while a server holds it).
    #[arg(long, requires = "config")]
    pub offline: bool,
    /// The config file: its data directory, or the server that holds it.
    #[arg(long, short, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `server.data_dir`.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Where token commands act.
enum Tokens {
    Server(Box<Client>),
    Local(Engine),
}

fn tokens_at(target: &Target, server: &ServerArgs) -> Result<Tokens> {
    let source = SourceArgs {
        config: target.config.clone(),
        data_dir: target.data_dir.clone(),
    };
    if target.config.is_none() || (server.server.is_some() && !target.offline) {
        return Ok(Tokens::Server(Box::new(server_only(&source, server)?)));
    }
    let server = if target.offline {
        ServerArgs {
            server: None,
            ..server.clone()
        }
    } else {
        server.clone()
    };
    match reach(&source, &server)? {
        Reach::Local { engine, .. } => Ok(Tokens::Local(engine)),
        Reach::Server(client) if target.offline => Err(Unreachable(format!(
            "--offline needs the data directory to itself, and the server at {} holds it: drop --offline, or stop the server",
            client.base()
        ))
        .into()),
        Reach::Server(client) => Ok(Tokens::Server(Box::new(client))),
    }
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

pub fn run(command: TokenCommand, server: &ServerArgs) -> Result<()> {
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
            let (secret, record) = match tokens_at(&target, server)? {
                Tokens::Local(engine) => engine.create_token(spec)?,
                Tokens::Server(client) => create_over_http(&client, &spec)?,
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
            let tokens = match tokens_at(&target, server)? {
                Tokens::Local(engine) => engine.tokens(),
                Tokens::Server(client) => {
                    let url = client.url(&["v1", "tokens"], &[]);
                    let body = client.call(Method::GET, url, None)?.json()?;
                    serde_json::from_value(body["tokens"].clone())
                        .context("the server's token list")?
                }
            };
            print_tokens(&tokens);
            Ok(())
        }
        TokenCommand::Revoke { name, target } => {
            match tokens_at(&target, server)? {
                Tokens::Local(engine) => {
                    if !engine.revoke_token(&name)? {
                        bail!("no token named {name:?}");
                    }
                }
                Tokens::Server(client) => {
                    let url = client.url(&["v1", "tokens", &name], &[]);
                    client.call(Method::DELETE, url, None)?;
                }
            }
            eprintln!("sluice: token {name:?} revoked");
            Ok(())
        }
    }
}

fn create_over_http(client: &Client, spec: &TokenSpec) -> Result<(String, TokenRecord)> {
    let body = json!({
        "name": spec.name,
        "role": spec.role,
        "collections": spec.collections,
        "expires_in_ms": spec.expires_in_ms,
    });
    let url = client.url(&["v1", "tokens"], &[]);
    let mut answer = client.call(Method::POST, url, Some(&body))?.json()?;
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
