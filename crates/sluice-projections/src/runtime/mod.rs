//! The projection runtime: every configured projection, kept current from the change
//! log, served by key.
//!
//! A projection has versions, one per script content (the view id is the projection's
//! name and a digest of its script's hash). A version is built by one worker per
//! partition (`worker.rs`): a backfill scan of the source collection, then the change
//! log from the position taken when the version was created. Once every partition is
//! live and caught up, the version becomes the active one in one commit, readers move to
//! it, and the old version's records are removed once no reader holds it. So a new
//! projection, a changed script found at start, and a reload all take the same path, and
//! readers see the old version until the new one is complete.

mod apply;
mod redis;
mod worker;

use crate::{NATIVE_PREFIX, Projector, Script, ScriptError, ScriptLimits, native, owned};
use serde::{Deserialize, Serialize};
use sluice_core::config::ProjectionConfig;
use sluice_engine::metrics::{Histogram, SECONDS};
use sluice_engine::{Engine, EngineError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use worker::{Factory, Worker, consumer_name};

/// A version becomes active once each partition is at most this many records behind.
const SWITCH_LAG_RECORDS_MAX: u64 = 1_000;
/// How often a version being built is checked for the switch.
const SWITCH_CHECK_MS: u64 = 20;
/// Records of an old version removed per commit.
const REMOVE_RECORDS_PER_COMMIT: usize = 10_000;
/// Keys one `get_many` may ask for when the caller gives no smaller cap.
pub const GET_KEYS_MAX: usize = 1_000;

/// Where one partition of a version is, as stored with each of its commits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Progress {
    /// The backfill is done; the consumer follows the change log.
    pub live: bool,
    /// The backfill's position: the last document key scanned (hex).
    pub after: Option<String>,
    /// Documents of this partition the backfill projected.
    pub scanned: u64,
    pub entries: i64,
    pub errors: i64,
    /// Change records committed through this partition's cursor (each partition's
    /// consumer reads every partition's records): a record committed twice would show.
    #[serde(default)]
    pub records: u64,
    /// Collections this partition's sources ever read: records of other collections have
    /// no dependents here and are skipped unparsed.
    #[serde(default)]
    pub read_collections: std::collections::BTreeSet<String>,
    /// The Redis target: the sequence number of the last commit with writes for it.
    #[serde(default)]
    pub redis_seq: u64,
}

#[derive(Default)]
pub(crate) struct PartitionStatus {
    pub progress: Progress,
    /// Why the worker is not making progress, if it is not.
    pub failure: Option<String>,
}

/// What the workers of one version share.
pub(crate) struct VersionState {
    pub view: String,
    pub script_hash: String,
    /// Held while deciding and writing entry ownership (entry keys span partitions).
    pub commit_lock: Mutex<()>,
    pub partitions: Vec<Mutex<PartitionStatus>>,
    pub stop: watch::Sender<bool>,
    /// The Redis target mirrors this version (it is the active one).
    pub mirror: std::sync::atomic::AtomicBool,
    /// Times a partition was rebuilt in Redis (a flushed or restarted Redis, a switch).
    pub redis_rebuilds: AtomicU64,
}

pub(crate) struct ProjectionMetrics {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    /// Source documents re-run because something they read changed.
    pub reruns: AtomicU64,
    pub call_seconds: Histogram,
}

impl Default for ProjectionMetrics {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reruns: AtomicU64::new(0),
            call_seconds: Histogram::new(SECONDS),
        }
    }
}

struct Version {
    state: Arc<VersionState>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Version {
    fn view(&self) -> &str {
        &self.state.view
    }

    /// Stops the workers and waits for them.
    fn stop(&self) {
        self.state.stop.send_replace(true);
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn is_live(&self) -> bool {
        self.state.partitions.iter().all(|status| {
            let status = status.lock().unwrap_or_else(PoisonError::into_inner);
            status.progress.live && status.failure.is_none()
        })
    }
}

/// A script as loaded: its projector factory and its hash.
pub(crate) struct Plan {
    script_hash: String,
    view: String,
    factory: Factory,
}

struct Projection {
    config: ProjectionConfig,
    config_dir: PathBuf,
    metrics: Arc<ProjectionMetrics>,
    /// What readers read; `None` until a first version is built.
    active: RwLock<Option<Arc<Version>>>,
    building: Mutex<Option<Arc<Version>>>,
    /// One reload at a time.
    reload: tokio::sync::Mutex<()>,
}

impl Projection {
    /// The version readers read now.
    fn active(&self) -> Option<Arc<Version>> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The version being built to replace it.
    fn building(&self) -> Option<Arc<Version>> {
        self.building
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no projection {0:?}")]
    UnknownProjection(String),
    #[error("projection {0:?} is still being built: no version is ready to read")]
    NotReady(String),
    #[error("{0}")]
    Script(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A projection's state, as `GET /v1/projections` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub source: String,
    pub target: &'static str,
    /// `live`, `building` (no version ready yet), `failed`, or `stale` (the active
    /// version's script is gone; its replacement is being built).
    pub status: String,
    pub version: Option<VersionStatus>,
    /// The version being built to replace the active one.
    pub building: Option<VersionStatus>,
    pub calls: u64,
    pub errors_total: u64,
    pub reruns: u64,
    /// With `target = "redis"`: times a partition was rebuilt in Redis (Redis lost the
    /// projection's keys, or a new version became active).
    pub redis_rebuilds: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VersionStatus {
    pub id: String,
    pub script_hash: String,
    /// `backfill` or `live` (every partition).
    pub phase: &'static str,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub entries: i64,
    /// Source documents whose last call failed.
    pub errors: i64,
    /// Source documents the backfill projected so far.
    pub backfilled: u64,
    /// Documents in the source collection (what the backfill goes through).
    pub source_documents: u64,
    /// Change records committed through the cursors, all partitions' consumers summed.
    pub records_committed: u64,
    /// Change records in the log now (the consumers' target, each).
    pub log_records: u64,
    /// With `target = "redis"`: commits with writes for Redis, all partitions summed
    /// (each applied there exactly once).
    pub redis_commits: u64,
    /// Why a worker is not making progress.
    pub failures: Vec<String>,
}

/// A stored projection error, as `GET /v1/projections/{name}/errors` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectionErrorView {
    pub key: serde_json::Value,
    pub error: String,
    pub script_hash: String,
    pub ts_ms: u64,
}

/// What a reload did.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadOutcome {
    /// `unchanged`, `building` (a new version is being built) or `already_building`.
    pub outcome: &'static str,
    pub version: String,
    pub script_hash: String,
}

/// A metric of every projection: name, type, help, and its value in a status.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ProjectionStatus) -> f64,
);

/// Every projection of a server.
pub struct Runtime {
    engine: Engine,
    handle: tokio::runtime::Handle,
    projections: BTreeMap<String, Arc<Projection>>,
    /// Supervisors of versions being built.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn short_digest(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..6]
        .iter()
        .fold(String::with_capacity(12), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// The Redis target of a projection with `target = "redis"`.
fn redis_target(config: &ProjectionConfig) -> Result<redis::RedisTarget, String> {
    let Some(settings) = &config.redis else {
        return Err(format!(
            "projection {:?}: target = \"redis\" needs [projections.redis]",
            config.name
        ));
    };
    redis::RedisTarget::new(&settings.url, &settings.key_prefix, &config.name)
}

fn is_redis(config: &ProjectionConfig) -> bool {
    config.target == sluice_core::config::ProjectionTarget::Redis
}

/// Loads a projection's script (or native projector) and checks it compiles.
pub(crate) fn load_plan(config: &ProjectionConfig, config_dir: &Path) -> Result<Plan, String> {
    let limits = ScriptLimits::from(config);
    let (script_hash, factory): (String, Factory) =
        if let Some(name) = config.script.strip_prefix(NATIVE_PREFIX) {
            let Some(projector) = native::by_name(name) else {
                return Err(format!(
                    "projection {:?}: no native projector {name:?} (known: {})",
                    config.name,
                    native::NAMES.join(", ")
                ));
            };
            let hash = projector.version_hash().to_owned();
            let name = name.to_owned();
            let factory: Factory = Arc::new(move || {
                native::by_name(&name)
                    .map(|projector| projector as Box<dyn Projector>)
                    .ok_or_else(|| ScriptError::Runtime(format!("no native projector {name:?}")))
            });
            (hash, factory)
        } else {
            let path = config_dir.join(&config.script);
            let source = std::fs::read_to_string(&path).map_err(|error| {
                format!(
                    "projection {:?}: reading the script {}: {error}",
                    config.name,
                    path.display()
                )
            })?;
            let file = path.display().to_string();
            let script = Script::compile(&file, &source, limits)
                .map_err(|error| format!("projection {:?}: {error}", config.name))?;
            let hash = script.version_hash().to_owned();
            let factory: Factory = Arc::new(move || {
                Script::compile(&file, &source, limits)
                    .map(|script| Box::new(script) as Box<dyn Projector>)
            });
            (hash, factory)
        };
    Ok(Plan {
        view: format!("{}.{}", config.name, short_digest(&script_hash)),
        script_hash,
        factory,
    })
}

impl Runtime {
    /// Starts every projection of the engine's config (`config_dir`: where the config
    /// file is, as script paths are relative to it). A script that does not load refuses
    /// the start. Must be called inside a Tokio runtime.
    pub fn start(engine: Engine, config_dir: &Path) -> Result<Arc<Self>, String> {
        let handle = tokio::runtime::Handle::current();
        let mut plans = Vec::new();
        for config in &engine.config().projections {
            if config.target == sluice_core::config::ProjectionTarget::Redis {
                // Checked now, so that a bad URL refuses the start.
                redis_target(config)?;
            }
            plans.push((config.clone(), load_plan(config, config_dir)?));
        }
        let projections = plans
            .iter()
            .map(|(config, _)| {
                let projection = Projection {
                    config: config.clone(),
                    config_dir: config_dir.to_owned(),
                    metrics: Arc::new(ProjectionMetrics::default()),
                    active: RwLock::new(None),
                    building: Mutex::new(None),
                    reload: tokio::sync::Mutex::new(()),
                };
                (config.name.clone(), Arc::new(projection))
            })
            .collect();
        let runtime = Arc::new(Self {
            engine,
            handle,
            projections,
            tasks: Mutex::new(Vec::new()),
        });
        for (config, plan) in plans {
            runtime
                .open(&config.name, plan)
                .map_err(|error| format!("projection {:?}: {error}", config.name))?;
        }
        Ok(runtime)
    }

    fn projection(&self, name: &str) -> Result<&Arc<Projection>, RuntimeError> {
        self.projections
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownProjection(name.to_owned()))
    }

    /// Resumes the stored versions of `name` and builds `plan` unless it is active.
    fn open(self: &Arc<Self>, name: &str, plan: Plan) -> Result<(), EngineError> {
        let projection = Arc::clone(
            self.projection(name)
                .map_err(|error| EngineError::Invalid(error.to_string()))?,
        );
        let store = self.engine.store();
        let active = store
            .get_active_view(name)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        if active.as_deref() == Some(plan.view.as_str()) {
            let version = self.start_version(&projection, plan, true)?;
            *projection
                .active
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(version);
        } else {
            if let Some(view) = active {
                // Served as it is while its replacement is built (its script is gone).
                let script_hash = self.stored_script_hash(&view);
                let state = self.version_state(view, script_hash);
                *projection
                    .active
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(Version {
                    state,
                    threads: Mutex::new(Vec::new()),
                }));
            }
            self.build(&projection, plan)?;
        }
        self.remove_strays(&projection)?;
        Ok(())
    }

    fn stored_script_hash(&self, view: &str) -> String {
        read_progress(&self.engine, view, 0)
            .ok()
            .flatten()
            .map(|stored| stored.script_hash)
            .unwrap_or_default()
    }

    fn version_state(&self, view: String, script_hash: String) -> Arc<VersionState> {
        let partitions = usize::from(self.engine.partitions());
        let (stop, _) = watch::channel(false);
        Arc::new(VersionState {
            view,
            script_hash,
            commit_lock: Mutex::new(()),
            partitions: (0..partitions)
                .map(|_| Mutex::new(PartitionStatus::default()))
                .collect(),
            stop,
            mirror: std::sync::atomic::AtomicBool::new(false),
            redis_rebuilds: AtomicU64::new(0),
        })
    }

    /// Creates the version's records on first use (progress at the start of a backfill,
    /// consumer positions at the head, in one commit) and starts its workers.
    fn start_version(
        &self,
        projection: &Arc<Projection>,
        plan: Plan,
        active: bool,
    ) -> Result<Arc<Version>, EngineError> {
        let partitions = self.engine.partitions();
        let state = self.version_state(plan.view.clone(), plan.script_hash.clone());
        state.mirror.store(active, Ordering::Release);
        if self
            .engine
            .store()
            .get_view_progress(&plan.view, 0)?
            .is_none()
        {
            let head = self.engine.head().to_string();
            let progress = serde_json::to_vec(&StoredProgress {
                progress: Progress::default(),
                script_hash: plan.script_hash.clone(),
            })
            .map_err(|error| EngineError::Invalid(error.to_string()))?;
            self.engine.commit_batch(|batch| {
                for partition in 0..partitions {
                    batch.put_view_progress(&plan.view, partition, &progress);
                    batch.put_consumer(&consumer_name(&plan.view, partition), head.as_bytes());
                }
            })?;
        }
        let stack_bytes = projection.config.call_stack_bytes_max.saturating_mul(2) + (2 << 20);
        let mut threads = Vec::with_capacity(usize::from(partitions));
        for partition in 0..partitions {
            let redis = if is_redis(&projection.config) {
                Some(std::cell::RefCell::new(
                    redis_target(&projection.config).map_err(EngineError::Invalid)?,
                ))
            } else {
                None
            };
            let worker = Worker {
                redis,
                mirroring: std::cell::Cell::new(false),
                engine: self.engine.clone(),
                handle: self.handle.clone(),
                source: projection.config.source.clone(),
                partition,
                factory: Arc::clone(&plan.factory),
                metrics: Arc::clone(&projection.metrics),
                version: Arc::clone(&state),
            };
            let thread = std::thread::Builder::new()
                .name(format!("sluice-proj-{partition}"))
                .stack_size(stack_bytes)
                .spawn(move || worker.run())
                .map_err(|error| {
                    EngineError::Invalid(format!("starting a projection worker: {error}"))
                })?;
            threads.push(thread);
        }
        tracing::info!(projection = %projection.config.name, version = %plan.view, "Projection version started.");
        Ok(Arc::new(Version {
            state,
            threads: Mutex::new(threads),
        }))
    }

    /// Builds `plan` beside the active version and switches to it once it is caught up.
    fn build(
        self: &Arc<Self>,
        projection: &Arc<Projection>,
        plan: Plan,
    ) -> Result<(), EngineError> {
        let view = plan.view.clone();
        let version = self.start_version(projection, plan, false)?;
        *projection
            .building
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&version));
        let runtime = Arc::clone(self);
        let projection = Arc::clone(projection);
        let task = self.handle.spawn(async move {
            let mut stop = version.state.stop.subscribe();
            loop {
                let tick = tokio::time::sleep(Duration::from_millis(SWITCH_CHECK_MS));
                tokio::select! {
                    _ = tick => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                if !version.is_live() || !runtime.caught_up(&view) {
                    continue;
                }
                if let Err(error) = runtime.switch(&projection, &version).await {
                    tracing::error!(projection = %projection.config.name, %error, "Switching to the new version failed; it retries.");
                    continue;
                }
                return;
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
        Ok(())
    }

    fn caught_up(&self, view: &str) -> bool {
        (0..self.engine.partitions()).all(|partition| {
            match self
                .engine
                .consumer_position(&consumer_name(view, partition))
            {
                Ok(Some(position)) => self.engine.lag_records(&position) <= SWITCH_LAG_RECORDS_MAX,
                _ => false,
            }
        })
    }

    /// Makes `version` the active one, then removes the old one once no reader holds it.
    async fn switch(
        &self,
        projection: &Arc<Projection>,
        version: &Arc<Version>,
    ) -> Result<(), EngineError> {
        let name = &projection.config.name;
        self.engine
            .commit_batch(|batch| batch.put_active_view(name, version.view()))?;
        let old = projection
            .active
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Arc::clone(version));
        {
            let mut building = projection
                .building
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if building
                .as_ref()
                .is_some_and(|building| Arc::ptr_eq(building, version))
            {
                *building = None;
            }
        }
        // The workers of the new version notice and rebuild their partitions in Redis.
        version.state.mirror.store(true, Ordering::Release);
        tracing::info!(projection = %name, version = %version.view(), "Projection switched to its new version.");
        if let Some(old) = old {
            if is_redis(&projection.config) {
                self.remove_old_redis_keys(projection, &old, version)
                    .await?;
            }
            self.retire(old).await?;
        }
        Ok(())
    }

    /// Deletes from Redis the keys only the old version had. Each check and delete holds
    /// the new version's commit lock, so that a key the new version creates meanwhile is
    /// either seen or written after the delete.
    async fn remove_old_redis_keys(
        &self,
        projection: &Arc<Projection>,
        old: &Arc<Version>,
        new: &Arc<Version>,
    ) -> Result<(), EngineError> {
        let mut target = redis_target(&projection.config).map_err(EngineError::Invalid)?;
        let engine = self.engine.clone();
        let (old, new) = (Arc::clone(old), Arc::clone(new));
        let removed = tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
            for partition in 0..engine.partitions() {
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let owners = engine.store().scan_view_owners(
                        old.view(),
                        partition,
                        after.as_deref(),
                        500,
                    )?;
                    let _guard = new
                        .state
                        .commit_lock
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let mut gone = Vec::new();
                    for (_, bytes) in &owners {
                        let Ok(owned) = owned::Owned::decode(bytes) else {
                            continue;
                        };
                        for key in owned.entries {
                            if engine
                                .store()
                                .get_view_entry(new.view(), key.as_bytes())?
                                .is_none()
                            {
                                gone.push(key);
                            }
                        }
                    }
                    target.delete(&gone)?;
                    if owners.len() < 500 {
                        break;
                    }
                    after = owners.last().map(|(source, _)| source.clone());
                }
            }
            Ok(())
        })
        .await;
        removed.unwrap_or_else(|error| Err(EngineError::Invalid(error.to_string())))
    }

    /// Stops a version, waits until no reader holds it, and removes its records and
    /// consumer positions.
    async fn retire(&self, old: Arc<Version>) -> Result<(), EngineError> {
        let stopping = Arc::clone(&old);
        let _ = tokio::task::spawn_blocking(move || stopping.stop()).await;
        // Readers hold a version only for one read.
        while Arc::strong_count(&old) > 1 {
            tokio::task::yield_now().await;
        }
        self.remove_version(old.view()).await
    }

    async fn remove_version(&self, view: &str) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let view = view.to_owned();
        let removed = tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
            while engine
                .store()
                .remove_view_records(&view, REMOVE_RECORDS_PER_COMMIT)?
                > 0
            {}
            let partitions = engine.partitions();
            engine.commit_batch(|batch| {
                for partition in 0..partitions {
                    batch.remove_consumer(&consumer_name(&view, partition));
                }
            })?;
            tracing::info!(version = %view, "Old projection version removed.");
            Ok(())
        })
        .await;
        removed.unwrap_or_else(|error| Err(EngineError::Invalid(error.to_string())))
    }

    /// Versions of this projection that are neither active nor being built (a build
    /// replaced before it finished): their consumers would hold the change log back.
    fn remove_strays(self: &Arc<Self>, projection: &Arc<Projection>) -> Result<(), EngineError> {
        let prefix = format!("projection.{}.", projection.config.name);
        let mut keep = Vec::new();
        if let Some(active) = projection
            .active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            keep.push(active.view().to_owned());
        }
        if let Some(building) = projection
            .building
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            keep.push(building.view().to_owned());
        }
        let mut strays = Vec::new();
        for name in self.engine.consumer_names()? {
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some((digest, _partition)) = rest.rsplit_once(".p") else {
                continue;
            };
            let view = format!("{}.{digest}", projection.config.name);
            if !keep.contains(&view) && !strays.contains(&view) {
                strays.push(view);
            }
        }
        for view in strays {
            let runtime = Arc::clone(self);
            self.handle.spawn(async move {
                if let Err(error) = runtime.remove_version(&view).await {
                    tracing::error!(version = %view, %error, "Removing an abandoned projection version failed.");
                }
            });
        }
        Ok(())
    }

    /// Re-reads the script of `name` and, when it changed, builds it as a new version
    /// (the old one is served until the new one is caught up). A script that does not
    /// load is refused and nothing changes.
    pub async fn reload(self: &Arc<Self>, name: &str) -> Result<ReloadOutcome, RuntimeError> {
        let projection = Arc::clone(self.projection(name)?);
        let _one_at_a_time = projection.reload.lock().await;
        let config = projection.config.clone();
        let config_dir = projection.config_dir.clone();
        let plan = tokio::task::spawn_blocking(move || load_plan(&config, &config_dir))
            .await
            .map_err(|error| RuntimeError::Script(error.to_string()))?
            .map_err(RuntimeError::Script)?;
        let outcome = |outcome| ReloadOutcome {
            outcome,
            version: plan.view.clone(),
            script_hash: plan.script_hash.clone(),
        };
        let building = projection.building();
        if let Some(building) = &building
            && building.view() == plan.view
        {
            return Ok(outcome("already_building"));
        }
        let active_view = projection
            .active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|active| active.view().to_owned());
        if building.is_none() && active_view.as_deref() == Some(plan.view.as_str()) {
            return Ok(outcome("unchanged"));
        }
        if let Some(building) = building {
            projection
                .building
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            self.retire(building).await?;
        }
        let result = outcome("building");
        if active_view.as_deref() == Some(plan.view.as_str()) {
            // Back to the active script: dropping the other build was all there was.
            return Ok(outcome("unchanged"));
        }
        self.build(&projection, plan)?;
        Ok(result)
    }

    /// The value of entry `key` of `name`'s active version (JSON text).
    pub fn get(&self, name: &str, key: &str) -> Result<Option<String>, RuntimeError> {
        let projection = self.projection(name)?;
        let active = projection
            .active()
            .ok_or_else(|| RuntimeError::NotReady(name.to_owned()))?;
        self.read_entry(active.view(), key)
    }

    /// Values of `keys` (in their order) from one version.
    pub fn get_many(
        &self,
        name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<String>>, RuntimeError> {
        let projection = self.projection(name)?;
        let active = projection
            .active()
            .ok_or_else(|| RuntimeError::NotReady(name.to_owned()))?;
        keys.iter()
            .map(|key| self.read_entry(active.view(), key))
            .collect()
    }

    fn read_entry(&self, view: &str, key: &str) -> Result<Option<String>, RuntimeError> {
        let Some(bytes) = self
            .engine
            .store()
            .get_view_entry(view, key.as_bytes())
            .map_err(EngineError::from)?
        else {
            return Ok(None);
        };
        let (_, value) = owned::decode_entry(&bytes).map_err(|error| {
            EngineError::Store(sluice_store::StoreError::Corrupt { what: error.what })
        })?;
        Ok(Some(value.to_owned()))
    }

    /// Projection errors of `name`'s active version (or the one being built when none
    /// is active), after `after` (a token from an earlier page).
    pub fn errors(
        &self,
        name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ProjectionErrorView>, Option<String>), RuntimeError> {
        let projection = self.projection(name)?;
        let view = {
            let active = projection
                .active
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let building = projection
                .building
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match (active.as_ref(), building.as_ref()) {
                (_, Some(building)) => building.view().to_owned(),
                (Some(active), None) => active.view().to_owned(),
                (None, None) => return Ok((Vec::new(), None)),
            }
        };
        let after = after
            .map(|token| {
                sluice_core::hex::decode(token)
                    .ok_or_else(|| EngineError::Invalid(format!("invalid page token {token:?}")))
            })
            .transpose()?;
        let limit = limit.clamp(1, GET_KEYS_MAX);
        let rows = self
            .engine
            .store()
            .scan_view_errors(&view, after.as_deref(), limit)
            .map_err(EngineError::from)?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|(key, _)| sluice_core::hex::encode(key)))
            .flatten();
        let errors = rows
            .iter()
            .filter_map(|(_, bytes)| serde_json::from_slice::<apply::ErrorRecord>(bytes).ok())
            .map(|record| ProjectionErrorView {
                key: record.key,
                error: record.error,
                script_hash: record.script_hash,
                ts_ms: record.ts_ms,
            })
            .collect();
        Ok((errors, next))
    }

    /// Waits until `name`'s active version has processed everything durable when this
    /// was called and no version is being built; false when `timeout` passed first.
    pub async fn wait_caught_up(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<bool, RuntimeError> {
        let projection = Arc::clone(self.projection(name)?);
        let target = self.engine.head();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let active = projection.active();
            let building = projection.building().is_some();
            if let Some(active) = active
                && !building
                && active.is_live()
            {
                let done = (0..self.engine.partitions()).all(|partition| {
                    match self
                        .engine
                        .consumer_position(&consumer_name(active.view(), partition))
                    {
                        Ok(Some(position)) => position
                            .offsets()
                            .iter()
                            .zip(target.offsets())
                            .all(|(at, wanted)| at >= wanted),
                        _ => false,
                    }
                });
                if done {
                    return Ok(true);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            // Commits are not announced: poll, briefly.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Every projection's state.
    pub fn list(&self) -> Vec<ProjectionStatus> {
        self.projections
            .values()
            .map(|projection| self.status_of(projection))
            .collect()
    }

    pub fn status(&self, name: &str) -> Result<ProjectionStatus, RuntimeError> {
        Ok(self.status_of(self.projection(name)?))
    }

    fn version_status(&self, version: &Version, source_documents: u64) -> VersionStatus {
        let mut status = VersionStatus {
            id: version.view().to_owned(),
            script_hash: version.state.script_hash.clone(),
            phase: "live",
            lag_records: 0,
            lag_seconds: 0.0,
            entries: 0,
            errors: 0,
            backfilled: 0,
            source_documents,
            records_committed: 0,
            redis_commits: 0,
            log_records: self.engine.head().offsets().iter().sum(),
            failures: Vec::new(),
        };
        let running = !version
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        for (partition, slot) in version.state.partitions.iter().enumerate() {
            // The stored record: committed with the cursor, so it agrees with the lag.
            let progress = read_progress(&self.engine, version.view(), partition as u16)
                .ok()
                .flatten()
                .map(|stored| stored.progress)
                .unwrap_or_default();
            let failure = slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .failure
                .clone();
            if !progress.live {
                status.phase = "backfill";
            }
            status.entries += progress.entries;
            status.errors += progress.errors;
            status.backfilled += progress.scanned;
            status.records_committed += progress.records;
            status.redis_commits += progress.redis_seq;
            status.failures.extend(failure);
            if running
                && let Ok(Some(position)) = self
                    .engine
                    .consumer_position(&consumer_name(version.view(), partition as u16))
                && let Ok(lag) = self.engine.lag(&position)
            {
                status.lag_records += lag.records;
                status.lag_seconds = status.lag_seconds.max(lag.seconds);
            }
        }
        status
    }

    fn status_of(&self, projection: &Projection) -> ProjectionStatus {
        let source_documents = self
            .engine
            .stats(&projection.config.source)
            .map_or(0, |counters| counters.documents.max(0) as u64);
        let active = projection.active();
        let building = projection.building();
        let version = active
            .as_ref()
            .map(|version| self.version_status(version, source_documents));
        let building = building
            .as_ref()
            .map(|version| self.version_status(version, source_documents));
        let failed = version
            .as_ref()
            .is_some_and(|version| !version.failures.is_empty())
            || building
                .as_ref()
                .is_some_and(|version| !version.failures.is_empty());
        let stale = active.as_ref().is_some_and(|active| {
            active
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        });
        let status = if failed {
            "failed"
        } else if version.is_none() {
            "building"
        } else if stale {
            "stale"
        } else {
            "live"
        };
        ProjectionStatus {
            name: projection.config.name.clone(),
            source: projection.config.source.clone(),
            target: match projection.config.target {
                sluice_core::config::ProjectionTarget::Embedded => "embedded",
                sluice_core::config::ProjectionTarget::Redis => "redis",
            },
            status: status.to_owned(),
            version,
            building,
            calls: projection.metrics.calls.load(Ordering::Relaxed),
            errors_total: projection.metrics.errors.load(Ordering::Relaxed),
            reruns: projection.metrics.reruns.load(Ordering::Relaxed),
            redis_rebuilds: is_redis(&projection.config).then(|| {
                active.as_ref().map_or(0, |active| {
                    active.state.redis_rebuilds.load(Ordering::Relaxed)
                })
            }),
        }
    }

    /// Prometheus text for every projection.
    pub fn render_metrics(&self, out: &mut String) {
        let statuses = self.list();
        let series: [Series; 6] = [
            (
                "sluice_projection_calls_total",
                "counter",
                "Projection function calls.",
                |status| status.calls as f64,
            ),
            (
                "sluice_projection_errors_total",
                "counter",
                "Projection calls that failed (each is recorded as a projection error).",
                |status| status.errors_total as f64,
            ),
            (
                "sluice_projection_reruns_total",
                "counter",
                "Source documents re-run because a document they read changed.",
                |status| status.reruns as f64,
            ),
            (
                "sluice_projection_lag_records",
                "gauge",
                "Change records the active version has not yet processed.",
                |status| {
                    status
                        .version
                        .as_ref()
                        .map_or(0.0, |version| version.lag_records as f64)
                },
            ),
            (
                "sluice_projection_lag_seconds",
                "gauge",
                "Age of the oldest change record the active version has not yet processed.",
                |status| {
                    status
                        .version
                        .as_ref()
                        .map_or(0.0, |version| version.lag_seconds)
                },
            ),
            (
                "sluice_projection_entries",
                "gauge",
                "Entries of the active version.",
                |status| {
                    status
                        .version
                        .as_ref()
                        .map_or(0.0, |version| version.entries as f64)
                },
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for status in &statuses {
                let _ = writeln!(
                    out,
                    "{name}{{projection=\"{}\"}} {}",
                    status.name,
                    value(status)
                );
            }
        }
        for (name, projection) in &self.projections {
            let mut text = String::new();
            projection.metrics.call_seconds.render(
                &mut text,
                "sluice_projection_call_seconds",
                "Time of one projection call.",
            );
            // One histogram per projection: label its series.
            for line in text.lines() {
                if line.starts_with('#') {
                    if name == self.projections.keys().next().map_or("", String::as_str) {
                        let _ = writeln!(out, "{line}");
                    }
                    continue;
                }
                let labelled = match line.split_once('{') {
                    Some((series, rest)) => format!("{series}{{projection=\"{name}\",{rest}"),
                    None => match line.split_once(' ') {
                        Some((series, value)) => {
                            format!("{series}{{projection=\"{name}\"}} {value}")
                        }
                        None => continue,
                    },
                };
                let _ = writeln!(out, "{labelled}");
            }
        }
    }

    /// Stops every worker and waits for them (the engine closes after its last handle).
    pub fn shutdown(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        for projection in self.projections.values() {
            let building = projection
                .building
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(version) = building {
                version.stop();
            }
            let active = projection.active();
            if let Some(version) = active {
                version.stop();
            }
        }
    }
}

impl Drop for Runtime {
    /// The workers stop with the runtime, even when `shutdown` was not called (a test
    /// that failed): they must not outlive the Tokio runtime they block on.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The progress record as stored: [`Progress`] and the script hash of its version.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredProgress {
    #[serde(flatten)]
    pub progress: Progress,
    pub script_hash: String,
}

/// The progress record of `partition` of `view`, if it has one.
pub(crate) fn read_progress(
    engine: &Engine,
    view: &str,
    partition: u16,
) -> Result<Option<StoredProgress>, EngineError> {
    let Some(bytes) = engine.store().get_view_progress(view, partition)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|_| {
        EngineError::Store(sluice_store::StoreError::Corrupt {
            what: "projection progress",
        })
    })
}
