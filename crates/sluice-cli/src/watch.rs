//! `sluice status`, `sluice tap` and `sluice top`: clients of a running server only
//! (`/healthz`, `/v1/changes/stream`, `/metrics`).

use crate::client::{ServerArgs, SourceArgs, Unreachable, server_only};
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// `tap` refuses a line longer than this (the server's records are far smaller).
const TAP_LINE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// `tap` writes its output in pieces of about this size.
const TAP_BUFFER_BYTES: usize = 64 * 1024;
/// `top` refreshes at most this often.
const TOP_INTERVAL_MS_MIN: u64 = 100;

/// What `sluice status` exits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok = 0,
    Degraded = 1,
    Failed = 2,
}

/// `sluice status`: every component's health as `/healthz` says it; exit 0 when ok, 1
/// when degraded (a connector is down), 2 when failed or no server answers.
pub fn status(source: &SourceArgs, server: &ServerArgs) -> Result<Health> {
    let client = server_only(source, server)?;
    let url = client.url(&["healthz"], &[]);
    let answer = client.block_on(async {
        let response = client.send_unchecked(Method::GET, url, None).await?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        Ok::<_, anyhow::Error>((status, body))
    })?;
    let (status, body) = answer;
    let health: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = health["error"]["message"]
            .as_str()
            .unwrap_or("no reason given");
        println!(
            "failed: the server at {} answers {status}: {message}",
            client.base()
        );
        return Ok(Health::Failed);
    }
    let overall = health["status"].as_str().unwrap_or("unknown");
    println!(
        "{overall}: the server at {} (access: {})",
        client.base(),
        health["auth"].as_str().unwrap_or("?")
    );
    if let Some(components) = health["components"].as_object() {
        for (name, component) in components {
            let up = if component["up"] == Value::Bool(true) {
                "up"
            } else {
                "down"
            };
            println!(
                "  {name:<24} {up:<5} {}",
                component["detail"].as_str().unwrap_or("")
            );
        }
    }
    Ok(match overall {
        "ok" => Health::Ok,
        "degraded" => Health::Degraded,
        _ => Health::Failed,
    })
}

/// A change record as `tap`'s fallback parses it, for a record of another shape than the
/// engine writes (see `print`): everything but the document, in one pass.
#[derive(serde::Deserialize)]
struct TapRecord<'a> {
    #[serde(borrow)]
    cursor: Cow<'a, str>,
    #[serde(borrow)]
    collection: Cow<'a, str>,
    #[serde(borrow)]
    key: &'a RawValue,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    changed: Vec<Cow<'a, str>>,
    ts_ms: u64,
}

/// What one `tap` line shows.
struct TapLine<'a> {
    cursor: &'a [u8],
    collection: &'a [u8],
    op: &'a [u8],
    /// JSON, as the record has it.
    key: &'a [u8],
    version: &'a [u8],
    changed: ChangedPaths<'a>,
    ts_ms: u64,
}

enum ChangedPaths<'a> {
    /// The array's contents without escapes (`"/a","/b"`): printed without the quotes.
    Plain(&'a [u8]),
    Parsed(&'a [Cow<'a, str>]),
}

/// Prints change records as `tap` lines: a busy server sends tens of thousands of
/// records a second, and `tap` runs next to it, so a record the engine wrote is read by
/// position (`RecordParts::members`) and only another shape is parsed.
#[derive(Default)]
struct TapPrinter {
    /// The last second printed, formatted (`2026-12-03T08:00:00`).
    second: Option<(u64, String)>,
}

impl TapPrinter {
    /// Prints a line of the event stream if it is a record (`data:`); true when it was.
    fn line(&mut self, out: &mut impl Write, line: &[u8], raw: bool) -> Result<bool> {
        let Some(data) = line.strip_prefix(b"data:") else {
            return Ok(false);
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        self.print(out, data, raw)?;
        Ok(true)
    }

    fn print(&mut self, out: &mut impl Write, data: &[u8], raw: bool) -> Result<()> {
        if raw {
            out.write_all(data)?;
            out.write_all(b"\n")?;
            return Ok(());
        }
        if let Some(line) = plain_line(data) {
            return self.write(out, &line);
        }
        let record: TapRecord<'_> =
            serde_json::from_slice(data).context("a change record the server sent")?;
        let line = TapLine {
            cursor: record.cursor.as_bytes(),
            collection: record.collection.as_bytes(),
            op: record.op.as_bytes(),
            key: record.key.get().as_bytes(),
            version: record.version.map_or("null", RawValue::get).as_bytes(),
            changed: ChangedPaths::Parsed(&record.changed),
            ts_ms: record.ts_ms,
        };
        self.write(out, &line)
    }

    fn write(&mut self, out: &mut impl Write, line: &TapLine<'_>) -> Result<()> {
        let seconds = line.ts_ms / 1000;
        let second = match &self.second {
            Some((cached, text)) if *cached == seconds => text,
            _ => &self.second.insert((seconds, format_second(seconds))).1,
        };
        out.write_all(second.as_bytes())?;
        let millis = line.ts_ms % 1000;
        // `.mmmZ `: three digits, without a formatter.
        let digits = [
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
            b' ',
        ];
        out.write_all(&digits)?;
        let parts: [(&[u8], &[u8]); 4] = [
            (line.collection, b" "),
            (line.op, b" "),
            (line.key, b" v="),
            (line.version, b" changed="),
        ];
        for (part, separator) in parts {
            out.write_all(part)?;
            out.write_all(separator)?;
        }
        match line.changed {
            ChangedPaths::Plain(b"") => out.write_all(b"-")?,
            ChangedPaths::Plain(paths) => {
                for piece in paths.split(|byte| *byte == b'"') {
                    out.write_all(piece)?;
                }
            }
            ChangedPaths::Parsed([]) => out.write_all(b"-")?,
            ChangedPaths::Parsed(paths) => {
                for (index, path) in paths.iter().enumerate() {
                    if index > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(path.as_bytes())?;
                }
            }
        }
        out.write_all(b" cursor=")?;
        out.write_all(line.cursor)?;
        out.write_all(b"\n")?;
        Ok(())
    }
}

/// The line of a record the engine wrote, read by position, when its strings need no
/// unescaping; `None` otherwise (the caller parses it).
fn plain_line(data: &[u8]) -> Option<TapLine<'_>> {
    use sluice_core::change::{plain_json_str, split_record};
    let members = split_record(data)?.members()?;
    let changed = members.changed.strip_prefix(b"[")?.strip_suffix(b"]")?;
    if memchr::memchr(b'\\', changed).is_some() {
        return None;
    }
    Some(TapLine {
        cursor: members.cursor,
        collection: plain_json_str(members.collection)?,
        op: plain_json_str(members.op)?,
        key: members.key,
        version: members.version,
        changed: ChangedPaths::Plain(changed),
        ts_ms: members.ts_ms,
    })
}

/// Lowers this process's CPU priority to `nice` (see `sluice tap --nice`); a failure
/// only says so with `-v`.
fn lower_priority(nice: u8, client: &crate::client::Client) {
    if nice == 0 {
        return;
    }
    #[cfg(unix)]
    match rustix::process::setpriority_process(None, i32::from(nice)) {
        Ok(()) => client.say(&format!("running at nice {nice}")),
        Err(error) => client.say(&format!("could not lower the CPU priority: {error}")),
    }
    #[cfg(not(unix))]
    client.say("CPU priority left as it is on this platform");
}

/// `2026-12-03T08:00:00` for seconds since the epoch (UTC).
fn format_second(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
        .map_or_else(
            || seconds.to_string(),
            |at| {
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                    at.year(),
                    u8::from(at.month()),
                    at.day(),
                    at.hour(),
                    at.minute(),
                    at.second()
                )
            },
        )
}

pub struct TapOptions<'a> {
    pub collection: Option<&'a str>,
    pub after: &'a str,
    pub json: bool,
    /// Stop after this many records.
    pub count: Option<u64>,
    /// The nice value to run at (0: unchanged).
    pub nice: u8,
}

/// `sluice tap`: follows the change stream, one line per change (`--json`: the record).
/// Ends with exit code 2 when the server ends the stream (it stopped).
pub fn tap(source: &SourceArgs, server: &ServerArgs, options: &TapOptions<'_>) -> Result<()> {
    let client = server_only(source, server)?;
    let mut query = vec![("after", options.after)];
    if let Some(collection) = options.collection {
        query.push(("collection", collection));
    }
    let url = client.url(&["v1", "changes", "stream"], &query);
    client.say(&format!("following {url}"));
    lower_priority(options.nice, &client);
    // Written through a buffer flushed once per chunk the server sends (a page of
    // records): stdout alone is line-buffered, a write(2) per change.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(TAP_BUFFER_BYTES, stdout.lock());
    let mut printer = TapPrinter::default();
    client.block_on(async {
        let mut response = client.send(Method::GET, url, None).await?;
        let mut pending: Vec<u8> = Vec::new();
        let mut printed = 0u64;
        if options.count == Some(0) {
            return Ok(());
        }
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(error) => {
                    return Err(Unreachable(format!(
                        "the change stream from {} broke ({error}): is the server still running?",
                        client.base()
                    ))
                    .into());
                }
            };
            // Lines are read straight from the chunk; only a line cut at the chunk's end
            // waits in `pending` for the rest.
            let mut rest: &[u8] = &chunk;
            if !pending.is_empty() {
                let Some(end) = memchr::memchr(b'\n', rest) else {
                    if pending.len() + rest.len() > TAP_LINE_BYTES_MAX {
                        anyhow::bail!(
                            "a line of the change stream exceeds {TAP_LINE_BYTES_MAX} bytes"
                        );
                    }
                    pending.extend_from_slice(rest);
                    continue;
                };
                pending.extend_from_slice(&rest[..end]);
                rest = &rest[end + 1..];
                if printer.line(&mut out, &pending, options.json)? {
                    printed += 1;
                }
                pending.clear();
                if options.count.is_some_and(|count| printed >= count) {
                    return Ok(out.flush()?);
                }
            }
            while let Some(end) = memchr::memchr(b'\n', rest) {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                if printer.line(&mut out, line, options.json)? {
                    printed += 1;
                    if options.count.is_some_and(|count| printed >= count) {
                        return Ok(out.flush()?);
                    }
                }
            }
            pending.extend_from_slice(rest);
            if pending.len() > TAP_LINE_BYTES_MAX {
                anyhow::bail!("a line of the change stream exceeds {TAP_LINE_BYTES_MAX} bytes");
            }
            out.flush()?;
        }
        Err(Unreachable(format!(
            "the server at {} ended the change stream (it is stopping?)",
            client.base()
        ))
        .into())
    })
}

/// Prometheus samples by metric name, then label set.
type Samples = BTreeMap<String, BTreeMap<String, f64>>;

/// Parses Prometheus text (what `/metrics` answers): `name{labels} value` lines.
fn parse_metrics(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        samples
            .entry(name.to_owned())
            .or_default()
            .insert(labels.to_owned(), value);
    }
    samples
}

/// The value of label `name` in a label set (`a="x",b="y"`).
fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map_or("", |(_, value)| value.trim_matches('"'))
}

pub struct TopOptions {
    pub interval_ms: u64,
    /// Stop after this many views (0: until interrupted).
    pub iterations: u64,
}

/// `sluice top`: a live view of events per second by collection and outcome, documents,
/// consumer and subscription lags, queue depths and HTTP load, from `/metrics`.
pub fn top(source: &SourceArgs, server: &ServerArgs, options: &TopOptions) -> Result<()> {
    let client = server_only(source, server)?;
    let interval = Duration::from_millis(options.interval_ms.max(TOP_INTERVAL_MS_MIN));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut previous: Option<(Instant, Samples)> = None;
    let mut shown = 0u64;
    loop {
        let url = client.url(&["metrics"], &[]);
        let answer = client.call(Method::GET, url, None)?;
        let now = Instant::now();
        let samples = parse_metrics(&String::from_utf8_lossy(&answer.body));
        let view = render_top(client.base(), &samples, previous.as_ref(), now);
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if terminal {
            out.write_all(b"\x1b[H\x1b[2J")?;
        }
        out.write_all(view.as_bytes())?;
        out.flush()?;
        drop(out);
        shown += 1;
        if options.iterations > 0 && shown >= options.iterations {
            return Ok(());
        }
        previous = Some((now, samples));
        std::thread::sleep(interval);
    }
}

fn render_top(
    base: &str,
    samples: &Samples,
    previous: Option<&(Instant, Samples)>,
    now: Instant,
) -> String {
    use std::fmt::Write as _;
    let empty = BTreeMap::new();
    let series = |name: &str| samples.get(name).unwrap_or(&empty);
    // Per-second rate of a counter since the last view (blank on the first).
    let rate = |name: &str, labels: &str| -> String {
        let Some((at, before)) = previous else {
            return "-".to_owned();
        };
        let seconds = now.duration_since(*at).as_secs_f64().max(1e-3);
        let current = series(name).get(labels).copied().unwrap_or_default();
        let old = before
            .get(name)
            .and_then(|values| values.get(labels))
            .copied()
            .unwrap_or(current);
        format!("{:.0}", ((current - old) / seconds).max(0.0))
    };
    let mut out = String::new();
    let _ = writeln!(out, "sluice top: {base}\n");
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>14} {:>12}",
        "collection", "applied/s", "noop/s", "stale/s", "rejected/s", "rejected", "documents"
    );
    let mut collections: Vec<&str> = series("sluice_events_total")
        .keys()
        .map(|labels| label(labels, "collection"))
        .collect();
    collections.dedup();
    for collection in collections {
        let labels = |outcome: &str| format!("collection=\"{collection}\",outcome=\"{outcome}\"");
        let documents = series("sluice_documents")
            .get(&format!("collection=\"{collection}\""))
            .copied()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>10} {:>14} {:>12}",
            collection,
            rate("sluice_events_total", &labels("applied")),
            rate("sluice_events_total", &labels("noop")),
            rate("sluice_events_total", &labels("stale")),
            rate("sluice_events_total", &labels("rejected")),
            series("sluice_events_total")
                .get(&labels("rejected"))
                .copied()
                .unwrap_or_default(),
            documents,
        );
    }
    let _ = writeln!(out, "\n{:<41} {:>12}", "consumer", "lag_records");
    for (labels, lag) in series("sluice_consumer_lag_records") {
        let _ = writeln!(out, "{:<41} {:>12}", label(labels, "consumer"), lag);
    }
    let queued: f64 = series("sluice_queue_submissions").values().sum();
    let in_flight: f64 = series("sluice_http_requests_in_flight").values().sum();
    let requests: f64 = series("sluice_http_requests_total").values().sum();
    let requests_rate = previous.map_or_else(
        || "-".to_owned(),
        |(at, before)| {
            let old: f64 = before
                .get("sluice_http_requests_total")
                .map_or(requests, |values| values.values().sum());
            let seconds = now.duration_since(*at).as_secs_f64().max(1e-3);
            format!("{:.0}", ((requests - old) / seconds).max(0.0))
        },
    );
    let _ = writeln!(
        out,
        "\nqueued submissions {queued}   http requests/s {requests_rate}   in flight {in_flight}   connections {}",
        series("sluice_http_connections_open")
            .get("")
            .copied()
            .unwrap_or_default()
    );
    let down: Vec<&str> = series("sluice_component_up")
        .iter()
        .filter(|(_, up)| **up < 1.0)
        .map(|(labels, _)| label(labels, "component"))
        .collect();
    if !down.is_empty() {
        let _ = writeln!(out, "components down: {}", down.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_parses_into_series_by_labels() {
        let samples = parse_metrics(
            "# TYPE sluice_events_total counter\nsluice_events_total{collection=\"doctor\",outcome=\"applied\"} 12\nsluice_poisoned 0\nbroken line\n",
        );
        assert_eq!(
            samples["sluice_events_total"]["collection=\"doctor\",outcome=\"applied\""],
            12.0
        );
        assert_eq!(samples["sluice_poisoned"][""], 0.0);
        assert_eq!(samples.len(), 2);
        assert_eq!(
            label("collection=\"doctor\",outcome=\"applied\"", "outcome"),
            "applied"
        );
    }

    #[test]
    fn top_shows_rates_from_two_views() {
        let first = parse_metrics(
            "sluice_events_total{collection=\"doctor\",outcome=\"applied\"} 100\nsluice_documents{collection=\"doctor\"} 7\n",
        );
        let second = parse_metrics(
            "sluice_events_total{collection=\"doctor\",outcome=\"applied\"} 300\nsluice_documents{collection=\"doctor\"} 9\n",
        );
        let start = Instant::now();
        let later = start + Duration::from_secs(2);
        let view = render_top("http://x", &second, Some(&(start, first)), later);
        let row = view
            .lines()
            .find(|line| line.starts_with("doctor"))
            .unwrap_or_default();
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(columns, ["doctor", "100", "0", "0", "0", "0", "9"]);
    }

    #[test]
    fn tap_prints_one_line_per_change() {
        let mut out = Vec::new();
        let record = br#"{"cursor":"0.1.0","collection":"doctor","key":17,"op":"upsert","version":3,"doc":{"name":"Ross"},"changed":["/name"],"ts_ms":1764000000000}"#;
        let mut printer = TapPrinter::default();
        printer
            .print(&mut out, record, false)
            .unwrap_or_else(|error| panic!("{error}"));
        let later = br#"{"cursor":"0.2.0","collection":"doctor","key":[1,"a"],"op":"delete","version":null,"doc":null,"changed":[],"ts_ms":1764000001007}"#;
        printer
            .print(&mut out, later, false)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2025-11-24T16:00:00.000Z doctor upsert 17 v=3 changed=/name cursor=0.1.0\n\
             2025-11-24T16:00:01.007Z doctor delete [1,\"a\"] v=null changed=- cursor=0.2.0\n"
        );
        assert!(printer.print(&mut Vec::new(), b"{not json", false).is_err());
    }

    #[test]
    fn tap_skips_the_document_even_when_it_quotes_the_record_s_own_fields() {
        // The document's strings hold `,"doc":` and `,"changed":[` (escaped): the
        // line must still show the record's own fields.
        let record = br#"{"cursor":"0.2","collection":"doctor","key":"a,\"doc\":1","op":"upsert","version":null,"doc":{"note":"x,\"changed\":[\"/y\"],\"ts_ms\":1}"},"changed":["/note"],"ts_ms":1764000000000}"#;
        let mut out = Vec::new();
        let mut printer = TapPrinter::default();
        printer
            .print(&mut out, record, false)
            .unwrap_or_else(|error| panic!("{error:#}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2025-11-24T16:00:00.000Z doctor upsert \"a,\\\"doc\\\":1\" v=null changed=/note cursor=0.2\n"
        );
    }

    #[test]
    fn tap_parses_records_of_another_shape_or_with_escapes() {
        let mut printer = TapPrinter::default();
        let mut lines = Vec::new();
        // Members reordered: not the engine's shape, so the fallback parse.
        let reordered = br#"{"ts_ms":5,"changed":[],"doc":null,"version":1,"op":"delete","key":3,"collection":"doctor","cursor":"0.1"}"#;
        // An escaped path: printed unescaped, as the fallback does.
        let escaped = br#"{"cursor":"0.3","collection":"doctor","key":3,"op":"upsert","version":1,"doc":{},"changed":["/a\"b","/c"],"ts_ms":1764000000000}"#;
        assert!(plain_line(reordered).is_none());
        assert!(plain_line(escaped).is_none());
        for record in [&reordered[..], &escaped[..]] {
            printer
                .print(&mut lines, record, false)
                .unwrap_or_else(|error| panic!("{error:#}"));
        }
        assert_eq!(
            String::from_utf8_lossy(&lines),
            "1970-01-01T00:00:00.005Z doctor delete 3 v=1 changed=- cursor=0.1\n\
             2025-11-24T16:00:00.000Z doctor upsert 3 v=1 changed=/a\"b,/c cursor=0.3\n"
        );
    }
}
