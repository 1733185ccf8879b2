//! `[[indexes]]`: live search indexes over a collection (the `sluice-search` crate), fed
//! by priority lanes.

use crate::pointer::Pointer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Names the index in URLs, metrics and its directory.
    pub name: String,
    /// The collection whose documents are indexed, one search document per source
    /// document.
    pub source: String,
    /// Indexed fields by name; a field reads the source's top-level member of that name
    /// unless `path` says otherwise.
    pub fields: BTreeMap<String, FieldConfig>,
    /// Lanes by name. Absent: one lane, `default`, for every change.
    #[serde(default)]
    pub lanes: BTreeMap<String, LaneConfig>,
    /// Memory of each partition's index writer before it writes a segment.
    #[serde(default = "defaults::writer_memory_bytes")]
    pub writer_memory_bytes: usize,
    /// Segments a partition's index may have before commits wait for merges
    /// (backpressure: a burst of small commits cannot pile up segments without bound).
    #[serde(default = "defaults::segments_max")]
    pub segments_max: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// A JSON pointer into the source document; default `/NAME`.
    #[serde(default)]
    pub path: Option<String>,
    /// `text` only: match each query word as a prefix too, and answer autocomplete.
    #[serde(default)]
    pub autocomplete: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Tokenized, searched by `q`.
    Text,
    /// Exact, facetable, multi-valued (an array gives several values).
    Keyword,
    Integer,
    Float,
    /// RFC 3339 text.
    Date,
    Bool,
    /// `{"lat": .., "lon": ..}` or `[lat, lon]`.
    Geo,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Keyword => "keyword",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Date => "date",
            FieldType::Bool => "bool",
            FieldType::Geo => "geo",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    /// Changes to any of these paths (or below them) take this lane; a lane with no
    /// paths takes every other change.
    #[serde(default)]
    pub paths: Vec<String>,
    /// A change is searchable at most this long after it was read.
    #[serde(default = "defaults::max_delay_ms")]
    pub max_delay_ms: u64,
    /// A lane with this many waiting documents writes them at once.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
}

/// The lane of an index without `[indexes.lanes]`.
pub const DEFAULT_LANE: &str = "default";
const MAX_DELAY_MS_LIMIT: u64 = 24 * 3_600_000;
const BATCH_SIZE_LIMIT: usize = 100_000;
const FIELDS_MAX: usize = 256;
const LANES_MAX: usize = 8;

mod defaults {
    pub fn writer_memory_bytes() -> usize {
        32 << 20
    }
    pub fn segments_max() -> usize {
        32
    }
    /// The low lane's default window, as in the original system.
    pub fn max_delay_ms() -> u64 {
        900_000
    }
    pub fn batch_size() -> usize {
        10_000
    }
}

impl FieldConfig {
    /// The pointer this field reads (`/NAME` unless `path` is set); valid after
    /// [`IndexConfig::problems`] found nothing.
    pub fn pointer(&self, name: &str) -> Pointer {
        match &self.path {
            Some(path) => Pointer::parse(path).unwrap_or_else(|_| Pointer::from_tokens([name])),
            None => Pointer::from_tokens([name]),
        }
    }
}

impl IndexConfig {
    /// The lanes as configured, or the one default lane (every change, within 1 s).
    pub fn lanes(&self) -> Vec<(String, LaneConfig)> {
        if self.lanes.is_empty() {
            return vec![(
                DEFAULT_LANE.to_owned(),
                LaneConfig {
                    paths: Vec::new(),
                    max_delay_ms: 1_000,
                    batch_size: 1_000,
                },
            )];
        }
        self.lanes
            .iter()
            .map(|(name, lane)| (name.clone(), lane.clone()))
            .collect()
    }

    /// Every problem of this index, by field; `collections` are the configured ones.
    pub(crate) fn problems(&self, collections: &[&str]) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let name = &self.name;
        let mut problem = |at: &str, message: String| problems.push((at.to_owned(), message));
        if !super::is_valid_name(name) {
            problem(
                "name",
                format!(
                    "index name {name:?} must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'"
                ),
            );
        }
        if !collections.contains(&self.source.as_str()) {
            problem(
                "source",
                format!(
                    "index {name:?}: unknown source collection {:?} (collections: {})",
                    self.source,
                    collections.join(", ")
                ),
            );
        }
        if self.fields.is_empty() || self.fields.len() > FIELDS_MAX {
            problem(
                "fields",
                format!("index {name:?}: declare 1 to {FIELDS_MAX} fields"),
            );
        }
        for (field, config) in &self.fields {
            let at = format!("fields.{field}");
            if !super::is_valid_name(field) || field.starts_with('_') || field.contains('-') {
                problem(
                    &at,
                    format!(
                        "index {name:?}: field name {field:?} must be 1 to 64 characters of \
                         a-z, A-Z, 0-9 or '_', not starting with '_'"
                    ),
                );
            }
            if let Some(path) = &config.path
                && let Err(error) = Pointer::parse(path)
            {
                problem(&at, format!("index {name:?}: field {field:?}: {error}"));
            }
            if config.autocomplete && config.field_type != FieldType::Text {
                problem(
                    &at,
                    format!("index {name:?}: field {field:?}: autocomplete needs type \"text\""),
                );
            }
        }
        if self.lanes.len() > LANES_MAX {
            problem(
                "lanes",
                format!("index {name:?}: at most {LANES_MAX} lanes"),
            );
        }
        if !self.lanes.is_empty() {
            let catch_all = self
                .lanes
                .values()
                .filter(|lane| lane.paths.is_empty())
                .count();
            if catch_all != 1 {
                problem(
                    "lanes",
                    format!(
                        "index {name:?}: exactly one lane must have no paths (it takes every \
                         other change); {catch_all} have none"
                    ),
                );
            }
        }
        for (lane_name, lane) in &self.lanes {
            let at = format!("lanes.{lane_name}");
            if !super::is_valid_name(lane_name) {
                problem(
                    &at,
                    format!("index {name:?}: lane name {lane_name:?} is not a valid name"),
                );
            }
            for path in &lane.paths {
                if path.is_empty() || Pointer::parse(path).is_err() {
                    problem(
                        &at,
                        format!(
                            "index {name:?}: lane {lane_name:?}: path {path:?} must be a JSON \
                             pointer such as \"/active\""
                        ),
                    );
                }
            }
            if lane.max_delay_ms == 0 || lane.max_delay_ms > MAX_DELAY_MS_LIMIT {
                problem(
                    &at,
                    format!(
                        "index {name:?}: lane {lane_name:?}: max_delay_ms must be \
                         1..={MAX_DELAY_MS_LIMIT}"
                    ),
                );
            }
            if lane.batch_size == 0 || lane.batch_size > BATCH_SIZE_LIMIT {
                problem(
                    &at,
                    format!(
                        "index {name:?}: lane {lane_name:?}: batch_size must be \
                         1..={BATCH_SIZE_LIMIT}"
                    ),
                );
            }
        }
        // tantivy wants at least 15 MB per writer thread.
        if !(15 << 20..=(4 << 30)).contains(&self.writer_memory_bytes) {
            problem(
                "writer_memory_bytes",
                format!("index {name:?}: writer_memory_bytes must be 15 MiB..=4 GiB"),
            );
        }
        if !(2..=1_000).contains(&self.segments_max) {
            problem(
                "segments_max",
                format!("index {name:?}: segments_max must be 2..=1000"),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const BASE: &str = "[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n";

    fn problems(index: &str) -> Vec<String> {
        // Parsed without `from_toml`, which stops at the first problem.
        let config: Config = toml::from_str(&format!("{BASE}{index}")).expect("parses");
        config
            .problems()
            .into_iter()
            .map(|problem| format!("{}: {}", problem.at, problem.message))
            .collect()
    }

    #[test]
    fn indexes_parse_with_defaults() {
        let config = Config::from_toml(&format!(
            "{BASE}[[indexes]]\nname = \"doctors\"\nsource = \"doctor\"\n[indexes.fields]\n\
             name = {{ type = \"text\", autocomplete = true }}\nloc = {{ type = \"geo\", path = \"/geo\" }}\n"
        ))
        .expect("parses");
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let index = &config.indexes[0];
        let lanes = index.lanes();
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].0, super::DEFAULT_LANE);
        assert_eq!(index.fields["loc"].pointer("loc").as_str(), "/geo");
        assert_eq!(index.fields["name"].pointer("name").as_str(), "/name");
        assert_eq!(
            (index.writer_memory_bytes, index.segments_max),
            (32 << 20, 32)
        );
    }

    #[test]
    fn every_index_problem_is_named() {
        let one = "[[indexes]]\nname = \"i\"\nsource = \"doctor\"\n[indexes.fields]\nname = { type = \"text\" }\n";
        assert!(problems(one).is_empty());
        for (index, expected) in [
            (
                one.replace("source = \"doctor\"", "source = \"nurse\""),
                "indexes[0].source",
            ),
            (
                one.replace("name = \"i\"", "name = \"a b\""),
                "indexes[0].name",
            ),
            (
                one.replace("name = { type = \"text\" }", "_x = { type = \"text\" }"),
                "indexes[0].fields._x",
            ),
            (
                one.replace(
                    "{ type = \"text\" }",
                    "{ type = \"keyword\", autocomplete = true }",
                ),
                "autocomplete needs type",
            ),
            (
                one.replace(
                    "{ type = \"text\" }",
                    "{ type = \"text\", path = \"name\" }",
                ),
                "starts with '/'",
            ),
            (
                format!("{one}[indexes.lanes.high]\npaths = [\"/active\"]\n"),
                "exactly one lane must have no paths",
            ),
            (
                format!("{one}[indexes.lanes.low]\nmax_delay_ms = 0\n"),
                "max_delay_ms must be",
            ),
            (
                format!("{one}[indexes.lanes.low]\nbatch_size = 1000000\n"),
                "batch_size must be",
            ),
            (
                format!("{one}[indexes.lanes.low]\n[indexes.lanes.high]\npaths = [\"active\"]\n"),
                "must be a JSON pointer",
            ),
            (format!("{one}{one}"), "defined twice"),
        ] {
            let found = problems(&index);
            assert!(
                found.iter().any(|problem| problem.contains(expected)),
                "{index}: {found:?} should mention {expected:?}"
            );
        }
    }
}
