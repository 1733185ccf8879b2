//! Named subscriptions: a filter (collection, changed path) and an acknowledged position
//! that survives restarts. `next` always reads from the acknowledged position, so records
//! come again until acknowledged: at-least-once delivery for clients without a library.

use crate::consumer::validate_name;
use crate::{ChangesPage, Engine, EngineError, StartAt};
use serde::{Deserialize, Serialize};
use sluice_core::{Cursor, Pointer};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Only this collection's records.
    #[serde(default)]
    pub collection: Option<String>,
    /// Only records that changed this JSON pointer, something below it, or something
    /// above it (a replaced parent).
    #[serde(default)]
    pub changed_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubscriptionInfo {
    pub name: String,
    #[serde(flatten)]
    pub spec: SubscriptionSpec,
    /// The acknowledged position.
    pub position: String,
    /// Records (of all collections) between the position and the head.
    pub lag_records: u64,
}

/// Subscriptions keep their position as the consumer of this name.
fn consumer_name(name: &str) -> String {
    format!("subscription:{name}")
}

impl Engine {
    /// Creates a subscription, or replaces its filter keeping its position.
    pub fn put_subscription(
        &self,
        name: &str,
        spec: SubscriptionSpec,
        start: StartAt,
    ) -> Result<SubscriptionInfo, EngineError> {
        validate_name(name)?;
        if let Some(collection) = &spec.collection {
            self.collection(collection)?;
        }
        if let Some(path) = &spec.changed_path {
            Pointer::parse(path).map_err(|error| EngineError::Invalid(error.to_string()))?;
        }
        let store = &self.shared().store;
        let position = match self.subscription_position(name)? {
            Some(position) => position,
            None => match start {
                StartAt::Beginning => self.oldest(),
                StartAt::Head => self.head(),
            },
        };
        let definition = serde_json::to_vec(&spec).unwrap_or_default();
        let mut batch = store.batch();
        batch.put_subscription(name, &definition);
        batch.put_consumer(&consumer_name(name), position.to_string().as_bytes());
        self.commit_meta(batch)?;
        Ok(self.info(name, spec, position))
    }

    pub fn subscription(&self, name: &str) -> Result<SubscriptionInfo, EngineError> {
        let unknown = || EngineError::UnknownSubscription(name.to_owned());
        let bytes = self
            .shared()
            .store
            .get_subscription(name)?
            .ok_or_else(unknown)?;
        let spec = parse_spec(&bytes)?;
        let position = self.subscription_position(name)?.ok_or_else(unknown)?;
        Ok(self.info(name, spec, position))
    }

    pub fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>, EngineError> {
        let mut out = Vec::new();
        for (name, bytes) in self.shared().store.subscriptions()? {
            let position = self
                .subscription_position(&name)?
                .unwrap_or_else(|| Cursor::start(usize::from(self.partitions())));
            out.push(self.info(&name, parse_spec(&bytes)?, position));
        }
        Ok(out)
    }

    /// Removes a subscription; `false` when there was none.
    pub fn delete_subscription(&self, name: &str) -> Result<bool, EngineError> {
        if self.shared().store.get_subscription(name)?.is_none() {
            return Ok(false);
        }
        let mut batch = self.shared().store.batch();
        batch.remove_subscription(name);
        batch.remove_consumer(&consumer_name(name));
        self.commit_meta(batch)?;
        Ok(true)
    }

    /// Records after the acknowledged position that match the filter, at most `max`,
    /// waiting up to `wait` for the first. `next` covers every record examined, matching
    /// or not: acknowledging it moves past them all.
    pub async fn subscription_next(
        &self,
        name: &str,
        max: usize,
        wait: Duration,
    ) -> Result<ChangesPage, EngineError> {
        let info = self.subscription(name)?;
        let mut position = self.parse_cursor(&info.position)?;
        let deadline = Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut page = self
                .changes_of(
                    position.clone(),
                    max,
                    remaining,
                    info.spec.collection.as_deref(),
                )
                .await?;
            if let Some(path) = &info.spec.changed_path {
                page.retain(|record| changed_matches(record, path));
            }
            if !page.records.is_empty() || page.next == position || Instant::now() >= deadline {
                return Ok(page);
            }
            position = page.next;
        }
    }

    /// Stores `cursor` as the subscription's position (forward or back: going back replays).
    pub fn ack_subscription(
        &self,
        name: &str,
        cursor: &Cursor,
    ) -> Result<SubscriptionInfo, EngineError> {
        let info = self.subscription(name)?;
        let head = self.head();
        if cursor
            .offsets()
            .iter()
            .zip(head.offsets())
            .any(|(acked, head)| acked > head)
        {
            return Err(EngineError::Invalid(format!(
                "cursor {cursor} is past the head {head}"
            )));
        }
        let mut batch = self.shared().store.batch();
        batch.put_consumer(&consumer_name(name), cursor.to_string().as_bytes());
        self.commit_meta(batch)?;
        Ok(self.info(name, info.spec, cursor.clone()))
    }

    fn subscription_position(&self, name: &str) -> Result<Option<Cursor>, EngineError> {
        self.stored_position(&consumer_name(name))
    }

    fn info(&self, name: &str, spec: SubscriptionSpec, position: Cursor) -> SubscriptionInfo {
        let lag_records = self.records_behind(&position);
        SubscriptionInfo {
            name: name.to_owned(),
            spec,
            position: position.to_string(),
            lag_records,
        }
    }
}

fn parse_spec(bytes: &[u8]) -> Result<SubscriptionSpec, EngineError> {
    serde_json::from_slice(bytes).map_err(|_| {
        EngineError::Store(sluice_store::StoreError::Corrupt {
            what: "subscription definition",
        })
    })
}

#[derive(Deserialize)]
struct Changed {
    changed: Vec<String>,
    #[serde(default)]
    doc: Option<serde_json::Value>,
}

/// Whether a record changed `path`, something below it, or a parent of it. A created
/// document (`""` changed) matches when it has the path; a deleted one always does.
fn changed_matches(record: &[u8], path: &str) -> bool {
    let Ok(Changed { changed, doc }) = serde_json::from_slice::<Changed>(record) else {
        return true; // deliver what cannot be checked rather than lose it
    };
    changed.iter().any(|changed| {
        if changed.is_empty() {
            let pointer = Pointer::parse(path);
            return match (&doc, pointer) {
                (Some(doc), Ok(pointer)) => pointer.get(doc).is_some(),
                _ => true,
            };
        }
        changed == path
            || changed
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('/'))
            || path
                .strip_prefix(changed.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Config;

    fn config() -> Config {
        Config::from_toml(
            "[engine]\npartitions = 2\n[[collections]]\nname = \"doctor\"\nkey = [\"/id\"]\nversion = \"/v\"\n\
             [[collections]]\nname = \"location\"\nkey = [\"/id\"]\n",
        )
        .unwrap()
    }

    async fn post(engine: &Engine, collection: &str, lines: &str) {
        crate::test_support::submit_ndjson(engine, collection, lines).await;
    }

    #[test]
    fn changed_path_matching() {
        let record = |changed: &[&str]| {
            serde_json::to_vec(&serde_json::json!({"changed": changed})).unwrap()
        };
        assert!(changed_matches(&record(&["/a/b"]), "/a"));
        assert!(changed_matches(&record(&["/a"]), "/a/b"));
        assert!(changed_matches(&record(&["/a"]), "/a"));
        assert!(
            changed_matches(&record(&[""]), "/a"),
            "a delete (no doc) matches"
        );
        let created = |doc: serde_json::Value| {
            serde_json::to_vec(&serde_json::json!({"changed": [""], "doc": doc})).unwrap()
        };
        assert!(changed_matches(&created(serde_json::json!({"a": 1})), "/a"));
        assert!(!changed_matches(
            &created(serde_json::json!({"b": 1})),
            "/a"
        ));
        assert!(!changed_matches(&record(&["/ab"]), "/a"));
        assert!(!changed_matches(&record(&["/b", "/c/a"]), "/a"));
    }

    #[tokio::test]
    async fn delivers_until_acknowledged_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(&config(), dir.path()).unwrap();
            let spec = SubscriptionSpec {
                collection: Some("doctor".into()),
                changed_path: Some("/city".into()),
            };
            engine
                .put_subscription("moves", spec, StartAt::Beginning)
                .unwrap();
            post(&engine, "doctor", "{\"id\": 1, \"v\": 1, \"city\": \"Oslo\"}\n{\"id\": 2, \"v\": 1, \"name\": \"Ana\"}\n").await;
            post(&engine, "location", "{\"id\": 1, \"city\": \"Oslo\"}\n").await;
            let page = engine
                .subscription_next("moves", 10, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(
                page.records.len(),
                1,
                "only doctor records that changed /city"
            );
            let again = engine
                .subscription_next("moves", 10, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(
                again.records, page.records,
                "not acknowledged: delivered again"
            );
            let info = engine.ack_subscription("moves", &page.next).unwrap();
            assert_eq!(info.lag_records, 0);
        }
        let engine = Engine::open(&config(), dir.path()).unwrap();
        assert!(
            engine
                .subscription_next("moves", 10, Duration::ZERO)
                .await
                .unwrap()
                .records
                .is_empty()
        );
        let waiter = {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .subscription_next("moves", 10, Duration::from_secs(30))
                    .await
                    .unwrap()
            })
        };
        post(
            &engine,
            "doctor",
            "{\"id\": 2, \"v\": 2, \"name\": \"Bo\"}\n{\"id\": 2, \"v\": 3, \"city\": \"Rome\"}\n",
        )
        .await;
        let page = waiter.await.unwrap();
        assert_eq!(page.records.len(), 1);
        let listed = engine.subscriptions().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].lag_records, 2);
        let past = Cursor::from_offsets(vec![100, 100]);
        assert!(matches!(
            engine.ack_subscription("moves", &past),
            Err(EngineError::Invalid(_))
        ));
        assert!(engine.delete_subscription("moves").unwrap());
        assert!(matches!(
            engine.subscription("moves"),
            Err(EngineError::UnknownSubscription(_))
        ));
        assert!(!engine.delete_subscription("moves").unwrap());
        let bad = SubscriptionSpec {
            collection: Some("nurse".into()),
            changed_path: None,
        };
        assert!(matches!(
            engine.put_subscription("x", bad, StartAt::Head),
            Err(EngineError::UnknownCollection(_))
        ));
        assert!(matches!(
            engine.put_subscription("a b", SubscriptionSpec::default(), StartAt::Head),
            Err(EngineError::Invalid(_))
        ));
    }
}
