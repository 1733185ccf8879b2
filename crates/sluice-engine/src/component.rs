//! Components running beside the processor (connectors such as the NATS publisher and
//! inbound readers) report their health and message counts here, so that `/healthz` and
//! `/metrics` show them without the server knowing what they are.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What `/healthz` shows of one component.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ComponentStatus {
    pub up: bool,
    /// A sentence saying what is wrong, or what the component is doing.
    pub detail: String,
    /// Counts by name (`applied`, `rejected`, `published`, ...), monotonic.
    pub counts: BTreeMap<&'static str, u64>,
}

/// A component's handle on its status; cheap to clone.
#[derive(Clone)]
pub struct Component {
    status: Arc<Mutex<ComponentStatus>>,
}

impl Component {
    pub fn set_up(&self, detail: impl Into<String>) {
        self.set(true, detail.into());
    }

    pub fn set_down(&self, detail: impl Into<String>) {
        self.set(false, detail.into());
    }

    fn set(&self, up: bool, detail: String) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.up = up;
        status.detail = detail;
    }

    pub fn count(&self, name: &'static str, by: u64) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        *status.counts.entry(name).or_default() += by;
    }

    pub fn status(&self) -> ComponentStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Default)]
pub(crate) struct Components {
    by_name: Mutex<BTreeMap<String, Component>>,
}

impl Components {
    /// The component `name`, registered (down, "starting") on first use.
    pub fn get(&self, name: &str) -> Component {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        by_name
            .entry(name.to_owned())
            .or_insert_with(|| Component {
                status: Arc::new(Mutex::new(ComponentStatus {
                    up: false,
                    detail: "starting".into(),
                    counts: BTreeMap::new(),
                })),
            })
            .clone()
    }

    pub fn statuses(&self) -> Vec<(String, ComponentStatus)> {
        let by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        by_name
            .iter()
            .map(|(name, component)| (name.clone(), component.status()))
            .collect()
    }
}
