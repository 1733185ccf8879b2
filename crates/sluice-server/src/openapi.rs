//! The OpenAPI 3.1 spec, generated from the route modules' `#[utoipa::path]` entries
//! (utoipa-axum registers a route and its entry together), then completed here with what
//! every operation shares: the security schemes, the error body as every operation's
//! `default` response, the browser session as an alternative credential on `GET`s, and
//! the table of error codes.

use crate::error::ErrorKind;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// `{"error": {"code": "...", "message": "..."}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: see the table in the spec's description.
    pub code: String,
    pub message: String,
}

/// The answer to an ingest request: counts and one result per event, in order.
#[derive(Serialize, ToSchema)]
pub struct IngestAnswer {
    pub applied: u64,
    pub noop: u64,
    pub stale: u64,
    pub rejected: u64,
    pub results: Vec<ItemResultBody>,
}

/// What happened to one event.
#[derive(Serialize, ToSchema)]
pub struct ItemResultBody {
    /// `applied`, `noop`, `stale` or `rejected`.
    pub status: String,
    /// The document's key (a string, an integer, or an array for composite keys).
    pub key: Option<Value>,
    /// Why it was rejected.
    pub error: Option<String>,
}

/// One document.
#[derive(Serialize, ToSchema)]
pub struct DocBody {
    pub key: Value,
    /// An integer, an RFC 3339 time, or null.
    pub version: Value,
    pub doc: Value,
}

#[derive(Serialize, ToSchema)]
pub struct DocsPage {
    pub docs: Vec<DocBody>,
    /// The `after` of the next page; null at the end.
    pub next: Option<String>,
}

/// A change record.
#[derive(Serialize, ToSchema)]
pub struct ChangeRecord {
    pub cursor: String,
    pub collection: String,
    pub key: Value,
    /// `upsert` or `delete`.
    pub op: String,
    pub version: Value,
    pub doc: Value,
    pub changed: Vec<String>,
    pub ts_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ChangesPage {
    pub changes: Vec<ChangeRecord>,
    /// The cursor to read on from.
    pub next: String,
}

#[derive(Serialize, ToSchema)]
pub struct RejectedPage {
    /// Rejected events with `seq`, `reason`, `origin`, `text` and `ts_ms`.
    pub rejected: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct StatsBody {
    pub collection: String,
    pub applied: u64,
    pub noop: u64,
    pub stale: u64,
    pub rejected: u64,
    pub documents: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionBody {
    pub name: String,
    pub collection: Option<String>,
    pub changed_path: Option<String>,
    /// The acknowledged position.
    pub position: String,
    pub lag_records: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionsList {
    pub subscriptions: Vec<SubscriptionBody>,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
}

/// One projection: the version readers read and the one being built to replace it.
#[derive(Serialize, ToSchema)]
pub struct ProjectionBody {
    pub name: String,
    /// The source collection.
    pub source: String,
    /// `embedded` or `redis`.
    pub target: String,
    /// `live`, `building` (no version ready yet), `stale` (the active version's script
    /// changed; its replacement is being built) or `failed`.
    pub status: String,
    pub version: Option<ProjectionVersionBody>,
    pub building: Option<ProjectionVersionBody>,
    pub calls: u64,
    pub errors_total: u64,
    /// Source documents re-run because a document they read changed.
    pub reruns: u64,
    /// With `target = "redis"`: partitions rebuilt in Redis (it lost the keys, or a new
    /// version became active); null for the embedded target.
    pub redis_rebuilds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionVersionBody {
    pub id: String,
    pub script_hash: String,
    /// `backfill` or `live`.
    pub phase: String,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub entries: i64,
    /// Source documents whose last call failed.
    pub errors: i64,
    /// Source documents the backfill projected so far.
    pub backfilled: u64,
    pub source_documents: u64,
    /// Change records committed through the cursors, all partitions' consumers summed.
    pub records_committed: u64,
    /// Change records in the log now.
    pub log_records: u64,
    /// With `target = "redis"`: commits with writes for Redis (each applied there once).
    pub redis_commits: u64,
    pub failures: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionsList {
    pub projections: Vec<ProjectionBody>,
}

/// One entry of a projection.
#[derive(Serialize, ToSchema)]
pub struct ProjectionEntry {
    pub key: String,
    /// What the projection function returned for this key.
    pub value: Value,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionEntries {
    /// In the order of the request's keys; `value` is null where there is no entry.
    pub results: Vec<ProjectionEntry>,
}

/// A source document whose last call failed.
#[derive(Serialize, ToSchema)]
pub struct ProjectionErrorBody {
    /// The source document's key.
    pub key: Value,
    pub error: String,
    pub script_hash: String,
    pub ts_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionErrors {
    pub errors: Vec<ProjectionErrorBody>,
    /// The `after` of the next page; null at the end.
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionReload {
    /// `unchanged`, `building` or `already_building`.
    pub outcome: String,
    /// The version of the script as it is now.
    pub version: String,
    pub script_hash: String,
}

/// One lane of an index.
#[derive(Serialize, ToSchema)]
pub struct IndexLaneBody {
    pub name: String,
    pub max_delay_ms: u64,
    pub batch_size: usize,
    /// Documents waiting in this lane.
    pub pending: u64,
    /// Age of the oldest change waiting, in seconds.
    pub lag_s: f64,
}

/// A generation of an index (its shards, one per partition).
#[derive(Serialize, ToSchema)]
pub struct IndexGenerationBody {
    pub generation: String,
    /// Every partition's backfill is done.
    pub live: bool,
    pub documents: u64,
    /// Source documents the backfill wrote so far.
    pub scanned: u64,
    /// Change records not yet read.
    pub behind_records: u64,
    /// Change records after the oldest one not yet committed to the index (a slow
    /// lane's waiting documents hold this back): what a restart reads again.
    pub uncommitted_records: u64,
    pub segments: usize,
    pub last_commit_ms: Option<u64>,
    pub lanes: Vec<IndexLaneBody>,
    pub failures: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IndexBody {
    pub name: String,
    pub source: String,
    /// `live`, `building` (nothing searchable yet), `rebuilding` or `stale` (the fields
    /// changed; the old generation answers).
    pub status: String,
    /// Source values that did not fit their field.
    pub errors: u64,
    pub active: Option<IndexGenerationBody>,
    pub building: Option<IndexGenerationBody>,
}

#[derive(Serialize, ToSchema)]
pub struct IndexesList {
    pub indexes: Vec<IndexBody>,
}

/// A search request (see the route's description for each member).
#[derive(Serialize, ToSchema)]
pub struct SearchRequestBody {
    pub q: Option<String>,
    /// `and` (default) or `or`.
    pub q_operator: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub sort: Option<Value>,
    pub facets: Option<Vec<String>>,
    pub fields: Option<Vec<String>>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchHit {
    pub key: Value,
    /// With relevance order.
    pub score: Option<f32>,
    /// With a geo sort or a geo_distance filter.
    pub distance_m: Option<f64>,
    /// The requested fields of the source document.
    #[schema(value_type = Object)]
    pub doc: Value,
}

#[derive(Serialize, ToSchema)]
pub struct SearchAnswer {
    /// Every matching document.
    pub total: u64,
    pub hits: Vec<SearchHit>,
    /// Per requested facet: counts by value over every match (the 100 most frequent).
    #[schema(value_type = Object)]
    pub facets: Value,
}

#[derive(Serialize, ToSchema)]
pub struct Suggestions {
    pub suggestions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IndexErrorBody {
    pub seq: u64,
    pub key: Value,
    pub field: String,
    pub message: String,
    pub at_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub struct IndexErrors {
    pub errors: Vec<IndexErrorBody>,
    /// The `after` of the next page; null at the end.
    pub next: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct IndexRebuild {
    pub index: String,
    /// The generation being built.
    pub building: String,
}

/// A role: `reader` < `writer` < `admin`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Reader,
    Writer,
    Admin,
}

/// A token as listed (never its secret or hash).
#[derive(Serialize, ToSchema)]
pub struct TokenBody {
    pub name: String,
    pub role: RoleName,
    /// The collections it is limited to; null means all.
    pub collections: Option<Vec<String>>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
}

/// A new token: `token` is its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    pub token: String,
    pub name: String,
    pub role: RoleName,
    pub collections: Option<Vec<String>>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct TokensList {
    pub tokens: Vec<TokenBody>,
}

#[derive(Serialize, ToSchema)]
pub struct SignedIn {
    pub name: String,
    pub role: RoleName,
    pub expires_in_s: u64,
}

#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok` or `degraded`.
    pub status: String,
    /// Whether requests need a token.
    pub auth: String,
    /// Every connector's state.
    pub components: Value,
}

/// One server-sent event of `/v1/changes/stream` as an SSE parser reads it (on the wire:
/// `event:`, `id:` and `data:` lines; heartbeats are comments, not events).
#[derive(Serialize, ToSchema)]
pub struct ChangeStreamEvent {
    /// Always `change`.
    pub event: String,
    /// The record's cursor: a client that reconnects sends it as `Last-Event-ID`.
    pub id: String,
    /// The change record's JSON, as `GET /v1/changes` returns each record.
    pub data: String,
}

/// The generated spec, completed (see the module comment).
pub fn spec(generated: utoipa::openapi::OpenApi) -> Value {
    let mut spec = serde_json::to_value(&generated).unwrap_or_else(|_| json!({}));
    spec["openapi"] = json!("3.1.0");
    spec["info"] = json!({
        "title": "Sluice",
        "version": env!("CARGO_PKG_VERSION"),
        "description": description(),
    });
    let error_schema = serde_json::to_value(<ErrorBody as utoipa::PartialSchema>::schema())
        .unwrap_or_else(|_| json!({}));
    let detail_schema = serde_json::to_value(<ErrorDetail as utoipa::PartialSchema>::schema())
        .unwrap_or_else(|_| json!({}));
    let components = &mut spec["components"];
    if !components.is_object() {
        *components = json!({});
    }
    components["schemas"]["ErrorBody"] = error_schema;
    components["schemas"]["ErrorDetail"] = detail_schema;
    components["securitySchemes"] = json!({
        "token": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`sluice token create`). The scope names the role the route needs (reader < writer < admin); `all_collections` marks routes a token limited to some collections may not use."
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": crate::auth::SESSION_COOKIE,
            "description": "A browser session from POST /v1/login; accepted on GET routes."
        }
    });
    components["responses"]["Error"] = json!({
        "description": "An error: see the table of codes in the description.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    });
    if let Some(paths) = spec["paths"].as_object_mut() {
        for (_, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                operation["responses"]["default"] = json!({"$ref": "#/components/responses/Error"});
                if method != "get" {
                    continue;
                }
                let Some(security) = operation["security"].as_array_mut() else {
                    continue;
                };
                let session: Vec<Value> = security
                    .iter()
                    .filter_map(|requirement| requirement.get("token"))
                    .map(|scopes| json!({"session": scopes}))
                    .collect();
                security.extend(session);
            }
        }
    }
    spec
}

fn description() -> String {
    let mut text = String::from(
        "Partial change events in, always-fresh documents and a change log out.\n\n\
         Every error is `{\"error\": {\"code\", \"message\"}}` with one of these codes; 429 and 503 \
         carry `Retry-After`, 401 carries `WWW-Authenticate: Bearer`.\n\n| code | status |\n|---|---|\n",
    );
    for kind in ErrorKind::ALL {
        let (code, status) = kind.code_and_status();
        text.push_str(&format!("| `{code}` | {} |\n", status.as_u16()));
    }
    text
}
