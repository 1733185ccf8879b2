//! `[[projections]]`: read models computed per source document by a JavaScript function
//! (or a native one), kept in the embedded store or in Redis (the `sluice-projections`
//! crate).

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionConfig {
    /// Names the projection in URLs, metrics and store keys.
    pub name: String,
    /// The collection whose documents are projected, one call per document.
    pub source: String,
    /// The JavaScript module, relative to the config file; or `native:NAME` for a
    /// projection compiled into the binary.
    pub script: String,
    #[serde(default)]
    pub target: ProjectionTarget,
    /// With `target = "redis"`.
    #[serde(default)]
    pub redis: Option<ProjectionRedisConfig>,
    /// Caps on one call of the script.
    #[serde(default = "defaults::call_time_ms_max")]
    pub call_time_ms_max: u64,
    #[serde(default = "defaults::call_memory_bytes_max")]
    pub call_memory_bytes_max: usize,
    #[serde(default = "defaults::call_stack_bytes_max")]
    pub call_stack_bytes_max: usize,
    #[serde(default = "defaults::lookups_per_call_max")]
    pub lookups_per_call_max: usize,
    /// Entries one source document may produce.
    #[serde(default = "defaults::projection_entries_max")]
    pub projection_entries_max: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectionTarget {
    #[default]
    Embedded,
    Redis,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionRedisConfig {
    /// `redis://host:port` (a password in it is never logged).
    pub url: String,
    /// Keys are `{key_prefix}{projection}:{key}`.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
}

/// Largest cap on one call's memory (the script's whole heap).
const CALL_MEMORY_BYTES_LIMIT: usize = 1 << 30;
/// Largest cap on one call's stack: the script runs on a thread whose stack is larger.
pub const CALL_STACK_BYTES_LIMIT: usize = 4 << 20;

mod defaults {
    pub fn call_time_ms_max() -> u64 {
        100
    }
    pub fn call_memory_bytes_max() -> usize {
        32 << 20
    }
    pub fn call_stack_bytes_max() -> usize {
        256 << 10
    }
    pub fn lookups_per_call_max() -> usize {
        1_000
    }
    pub fn projection_entries_max() -> usize {
        1_000
    }
    pub fn key_prefix() -> String {
        "sluice:".to_owned()
    }
}

impl ProjectionConfig {
    /// Every problem of this projection, by field; `collections` are the configured ones.
    pub(crate) fn problems(&self, collections: &[&str]) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let name = &self.name;
        if !super::is_valid_name(name) {
            problems.push((
                "name",
                format!(
                    "projection name {name:?} must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'"
                ),
            ));
        }
        if !collections.contains(&self.source.as_str()) {
            problems.push((
                "source",
                format!(
                    "projection {name:?}: unknown source collection {:?} (collections: {})",
                    self.source,
                    collections.join(", ")
                ),
            ));
        }
        if self.script.trim().is_empty() {
            problems.push((
                "script",
                format!("projection {name:?}: script names no file"),
            ));
        }
        match (self.target, &self.redis) {
            (ProjectionTarget::Redis, None) => problems.push((
                "redis",
                format!(
                    "projection {name:?}: target = \"redis\" needs [projections.redis] with a url"
                ),
            )),
            (ProjectionTarget::Embedded, Some(_)) => problems.push((
                "redis",
                format!(
                    "projection {name:?}: [projections.redis] is set but target is \"embedded\""
                ),
            )),
            (ProjectionTarget::Redis, Some(redis)) if !redis.url.starts_with("redis://") => {
                problems.push((
                    "redis",
                    format!("projection {name:?}: redis.url must start with redis://"),
                ))
            }
            _ => {}
        }
        let caps: [(&'static str, u64, u64); 5] = [
            ("call_time_ms_max", self.call_time_ms_max, 60_000),
            (
                "call_memory_bytes_max",
                self.call_memory_bytes_max as u64,
                CALL_MEMORY_BYTES_LIMIT as u64,
            ),
            (
                "call_stack_bytes_max",
                self.call_stack_bytes_max as u64,
                CALL_STACK_BYTES_LIMIT as u64,
            ),
            (
                "lookups_per_call_max",
                self.lookups_per_call_max as u64,
                1_000_000,
            ),
            (
                "projection_entries_max",
                self.projection_entries_max as u64,
                1_000_000,
            ),
        ];
        for (field, value, limit) in caps {
            if value == 0 || value > limit {
                problems.push((
                    field,
                    format!("projection {name:?}: {field} must be 1..={limit}"),
                ));
            }
        }
        problems
    }
}
