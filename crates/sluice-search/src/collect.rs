//! One pass over a shard's matching documents: the total, facet counts over all of them
//! (not only the page), and the best `top_n` by the request's order.

use crate::request::Sort;
use crate::schema::{self, IndexSchema};
use sluice_core::config::FieldType;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

/// A hit before its document is read: `rank` orders hits (smaller first), ties by shard,
/// segment and document, so that pages are stable while the index is.
#[derive(Clone, Debug)]
pub(crate) struct RankedHit {
    pub rank: f64,
    pub score: Score,
    pub distance_m: Option<f64>,
    pub shard: u32,
    pub segment: SegmentOrdinal,
    pub doc: DocId,
}

impl RankedHit {
    pub fn order(&self, other: &Self) -> Ordering {
        self.rank
            .total_cmp(&other.rank)
            .then(self.shard.cmp(&other.shard))
            .then(self.segment.cmp(&other.segment))
            .then(self.doc.cmp(&other.doc))
    }
}

struct HeapHit(RankedHit);

impl PartialEq for HeapHit {
    fn eq(&self, other: &Self) -> bool {
        self.0.order(&other.0) == Ordering::Equal
    }
}
impl Eq for HeapHit {}
impl PartialOrd for HeapHit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapHit {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.order(&other.0)
    }
}

/// The best `top_n` seen so far: a max-heap whose top is the worst kept.
struct TopN {
    top_n: usize,
    heap: BinaryHeap<HeapHit>,
}

impl TopN {
    fn new(top_n: usize) -> Self {
        Self {
            top_n,
            heap: BinaryHeap::with_capacity(top_n.min(1_024)),
        }
    }

    fn push(&mut self, hit: RankedHit) {
        if self.top_n == 0 {
            return;
        }
        if self.heap.len() < self.top_n {
            self.heap.push(HeapHit(hit));
        } else if let Some(worst) = self.heap.peek()
            && hit.order(&worst.0) == Ordering::Less
        {
            self.heap.pop();
            self.heap.push(HeapHit(hit));
        }
    }

    fn into_sorted(self) -> Vec<RankedHit> {
        let mut hits: Vec<RankedHit> = self.heap.into_iter().map(|hit| hit.0).collect();
        hits.sort_by(RankedHit::order);
        hits
    }
}

/// What one shard found.
#[derive(Debug, Default)]
pub(crate) struct ShardFound {
    pub total: u64,
    pub hits: Vec<RankedHit>,
    /// Per requested facet: counts by value.
    pub facets: Vec<HashMap<String, u64>>,
}

#[derive(Clone, Debug)]
enum SortKey {
    None,
    Score,
    Integer { column: String, descending: bool },
    Float { column: String, descending: bool },
    Distance { descending: bool },
}

pub(crate) struct SearchCollector {
    shard: u32,
    top_n: usize,
    key: SortKey,
    /// Columns and point of the distance reported per hit (a geo sort, else the first
    /// geo_distance filter).
    distance: Option<(String, String, f64, f64)>,
    facets: Vec<String>,
}

impl SearchCollector {
    pub fn new(
        schema: &IndexSchema,
        shard: u32,
        top_n: usize,
        sort: &Sort,
        distance_from: Option<(&str, f64, f64)>,
        facets: &[String],
    ) -> Self {
        let key = match sort {
            Sort::None => SortKey::None,
            Sort::Relevance => SortKey::Score,
            Sort::Field { field, descending } => match schema.field(field).map(|f| f.field_type) {
                Some(FieldType::Float) => SortKey::Float {
                    column: field.clone(),
                    descending: *descending,
                },
                _ => SortKey::Integer {
                    column: field.clone(),
                    descending: *descending,
                },
            },
            Sort::GeoDistance { descending, .. } => SortKey::Distance {
                descending: *descending,
            },
        };
        let distance = distance_from.and_then(|(field, lat, lon)| {
            let spec = schema.field(field)?;
            Some((spec.column(), schema::geo_lon_name(field), lat, lon))
        });
        Self {
            shard,
            top_n,
            key,
            distance,
            facets: facets.to_vec(),
        }
    }
}

enum SortColumn {
    None,
    Integer(Column<i64>),
    Float(Column<f64>),
}

pub(crate) struct SegmentSearch {
    shard: u32,
    segment: SegmentOrdinal,
    key: SortKey,
    column: SortColumn,
    geo: Option<(Column<f64>, Column<f64>, f64, f64)>,
    facets: Vec<(Option<StrColumn>, Vec<u64>)>,
    total: u64,
    top: TopN,
}

impl Collector for SearchCollector {
    type Fruit = ShardFound;
    type Child = SegmentSearch;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentSearch> {
        let fast = reader.fast_fields();
        let column = match &self.key {
            SortKey::Integer { column, .. } => SortColumn::Integer(fast.i64(column)?),
            SortKey::Float { column, .. } => SortColumn::Float(fast.f64(column)?),
            _ => SortColumn::None,
        };
        let geo = match &self.distance {
            Some((lat, lon, center_lat, center_lon)) => {
                Some((fast.f64(lat)?, fast.f64(lon)?, *center_lat, *center_lon))
            }
            None => None,
        };
        let mut facets = Vec::with_capacity(self.facets.len());
        for name in &self.facets {
            let column = fast.str(name)?;
            let counts = vec![0; column.as_ref().map_or(0, |column| column.num_terms())];
            facets.push((column, counts));
        }
        Ok(SegmentSearch {
            shard: self.shard,
            segment,
            key: self.key.clone(),
            column,
            geo,
            facets,
            total: 0,
            top: TopN::new(self.top_n),
        })
    }

    fn requires_scoring(&self) -> bool {
        matches!(self.key, SortKey::Score)
    }

    fn merge_fruits(&self, fruits: Vec<ShardFound>) -> tantivy::Result<ShardFound> {
        let mut merged = ShardFound {
            facets: vec![HashMap::new(); self.facets.len()],
            ..ShardFound::default()
        };
        let mut top = TopN::new(self.top_n);
        for fruit in fruits {
            merged.total += fruit.total;
            for hit in fruit.hits {
                top.push(hit);
            }
            add_counts(&mut merged.facets, fruit.facets);
        }
        merged.hits = top.into_sorted();
        Ok(merged)
    }
}

/// Adds facet counts (per facet, by value) into `into`.
pub(crate) fn add_counts(into: &mut [HashMap<String, u64>], from: Vec<HashMap<String, u64>>) {
    for (into, from) in into.iter_mut().zip(from) {
        for (value, count) in from {
            *into.entry(value).or_default() += count;
        }
    }
}

/// Missing values sort last whichever the direction.
fn ranked(value: Option<f64>, descending: bool) -> f64 {
    match value {
        Some(value) if descending => -value,
        Some(value) => value,
        None => f64::INFINITY,
    }
}

impl SegmentCollector for SegmentSearch {
    type Fruit = ShardFound;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        for (column, counts) in &mut self.facets {
            if let Some(column) = column {
                for ord in column.term_ords(doc) {
                    if let Some(count) = usize::try_from(ord)
                        .ok()
                        .and_then(|ord| counts.get_mut(ord))
                    {
                        *count += 1;
                    }
                }
            }
        }
        let distance_m = self
            .geo
            .as_ref()
            .and_then(|(lat, lon, center_lat, center_lon)| {
                Some(schema::distance_m(
                    *center_lat,
                    *center_lon,
                    lat.first(doc)?,
                    lon.first(doc)?,
                ))
            });
        let rank = match (&self.key, &self.column) {
            (SortKey::Score, _) => -f64::from(score),
            (SortKey::Integer { descending, .. }, SortColumn::Integer(column)) => {
                ranked(column.first(doc).map(|value| value as f64), *descending)
            }
            (SortKey::Float { descending, .. }, SortColumn::Float(column)) => {
                ranked(column.first(doc), *descending)
            }
            (SortKey::Distance { descending }, _) => ranked(distance_m, *descending),
            _ => 0.0,
        };
        self.top.push(RankedHit {
            rank,
            score,
            distance_m,
            shard: self.shard,
            segment: self.segment,
            doc,
        });
    }

    fn harvest(self) -> ShardFound {
        let mut facets = Vec::with_capacity(self.facets.len());
        for (column, counts) in self.facets {
            let mut by_value = HashMap::new();
            if let Some(column) = column {
                let mut text = String::new();
                for (ord, count) in counts.into_iter().enumerate() {
                    if count == 0 {
                        continue;
                    }
                    text.clear();
                    if matches!(column.ord_to_str(ord as u64, &mut text), Ok(true)) {
                        *by_value.entry(text.clone()).or_default() += count;
                    }
                }
            }
            facets.push(by_value);
        }
        ShardFound {
            total: self.total,
            hits: self.top.into_sorted(),
            facets,
        }
    }
}
