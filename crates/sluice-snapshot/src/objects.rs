//! The object store (a local directory, or any S3-compatible store) and what lives in it:
//!
//! ```text
//! segments/<collection>/<start cursor>.parquet      change records [start, end) of the archiver
//! snapshots/<collection>/<id>/part-<n>.parquet      the documents of snapshot <id>
//! snapshots/<collection>/<id>/manifest.json         what the snapshot holds (see `Manifest`)
//! snapshots/<collection>/LATEST                     the id of the newest complete snapshot
//! ```
//!
//! Names are deterministic: a segment is named by the cursor it starts at, which is the
//! archiver's committed position, so a retry after a crash rewrites the same object.
//! A snapshot becomes visible only when `LATEST` is rewritten, after every file and the
//! manifest are in place (a single-object put is atomic on every store).

use crate::SnapshotError;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sluice_core::config::SnapshotsConfig;
use std::sync::Arc;

/// The URL DataFusion knows the store by (any scheme works once registered).
pub const STORE_URL: &str = "sluice://objects/";

/// A Parquet writer closes its row group once the encoded columns reach this size: what
/// one writer holds before the bytes go to its upload.
pub const ROW_GROUP_BYTES_MAX: usize = 4 * 1024 * 1024;
/// S3's smallest multipart part is 5 MiB.
const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;
const UPLOAD_PARTS_IN_FLIGHT_MAX: usize = 2;

/// How every segment and snapshot file is written: Snappy; no dictionary for `doc`,
/// `key`, `version`, `offset` and `ts_ms` (values that rarely repeat: a dictionary is
/// built, hashed into and thrown away), and no min/max statistics for `doc` (large
/// documents, copied and compared for nothing).
pub fn writer_properties() -> datafusion::parquet::file::properties::WriterPropertiesBuilder {
    use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use datafusion::parquet::schema::types::ColumnPath;
    let mut builder = WriterProperties::builder()
        .set_compression(datafusion::parquet::basic::Compression::SNAPPY);
    for column in ["doc", "key", "version", "offset", "ts_ms"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder.set_column_statistics_enabled(ColumnPath::from("doc"), EnabledStatistics::None)
}

#[derive(Clone, Debug)]
pub struct Objects {
    pub store: Arc<dyn ObjectStore>,
    /// Where the store is, for messages (credentials never appear here).
    pub shown: String,
    /// Prefix of every object (the `prefix` of `s3://bucket/prefix`). Applied here rather
    /// than with `object_store`'s `PrefixStore`, whose listings keep the prefix and so
    /// would not match the paths DataFusion asks for.
    root: Vec<String>,
}

impl Objects {
    /// Opens `config.store`: `s3://bucket/prefix`, or a directory (relative to `data_dir`).
    pub fn open(
        config: &SnapshotsConfig,
        data_dir: &std::path::Path,
    ) -> Result<Self, SnapshotError> {
        let store_text = config.store.trim();
        if let Some(rest) = store_text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(SnapshotError::Config(format!(
                    "snapshots.store {store_text:?} names no bucket"
                )));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(config.s3_allow_http);
            if let Some(endpoint) = &config.s3_endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if let Some(region) = &config.s3_region {
                builder = builder.with_region(region);
            }
            if let Some(key) = &config.s3_access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &config.s3_secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let s3 = builder
                .build()
                .map_err(|error| SnapshotError::Config(format!("snapshots.store: {error}")))?;
            return Ok(Self {
                store: Arc::new(s3),
                shown: store_text.to_owned(),
                root: prefix
                    .split('/')
                    .filter(|part| !part.is_empty())
                    .map(str::to_owned)
                    .collect(),
            });
        }
        let directory = data_dir.join(store_text.strip_prefix("file://").unwrap_or(store_text));
        std::fs::create_dir_all(&directory).map_err(|error| {
            SnapshotError::Store(format!("creating {}: {error}", directory.display()))
        })?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(&directory)
            .map_err(|error| SnapshotError::Store(format!("{}: {error}", directory.display())))?;
        Ok(Self {
            store: Arc::new(local),
            shown: directory.display().to_string(),
            root: Vec::new(),
        })
    }

    /// `parts` under the store's prefix.
    fn path(&self, parts: &[&str]) -> Path {
        Path::from_iter(
            self.root
                .iter()
                .map(String::as_str)
                .chain(parts.iter().copied()),
        )
    }

    /// A buffered upload to `path`: one put below `UPLOAD_PART_BYTES`, above it a
    /// multipart upload in parts of that size with at most `UPLOAD_PARTS_IN_FLIGHT_MAX` in
    /// flight, so an upload holds a few parts in memory, not its object.
    pub fn upload(&self, path: Path) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::with_capacity(
            Arc::clone(&self.store),
            path,
            UPLOAD_PART_BYTES,
        )
        .with_max_concurrency(UPLOAD_PARTS_IN_FLIGHT_MAX)
    }

    pub fn segment_dir(&self, collection: &str) -> Path {
        self.path(&["segments", collection])
    }

    pub fn segment_path(&self, collection: &str, start: &str) -> Path {
        self.path(&["segments", collection, &format!("{start}.parquet")])
    }

    pub fn snapshot_dir(&self, collection: &str, id: &str) -> Path {
        self.path(&["snapshots", collection, id])
    }

    pub fn snapshot_file(&self, collection: &str, id: &str, name: &str) -> Path {
        self.path(&["snapshots", collection, id, name])
    }

    pub fn manifest_path(&self, collection: &str, id: &str) -> Path {
        self.snapshot_file(collection, id, "manifest.json")
    }

    pub fn latest_path(&self, collection: &str) -> Path {
        self.path(&["snapshots", collection, "LATEST"])
    }

    pub async fn get_bytes(&self, path: &Path) -> Result<Option<Vec<u8>>, SnapshotError> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(
                result
                    .bytes()
                    .await
                    .map_err(|error| store_error(path, error))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(store_error(path, error)),
        }
    }

    pub async fn put_bytes(&self, path: &Path, bytes: Vec<u8>) -> Result<(), SnapshotError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|error| store_error(path, error))
    }

    /// Every object under `prefix`: (path, size).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<(Path, u64)>, SnapshotError> {
        use futures_util::TryStreamExt;
        let mut listed: Vec<(Path, u64)> = self
            .store
            .list(Some(prefix))
            .map_ok(|meta| (meta.location, meta.size))
            .try_collect()
            .await
            .map_err(|error| store_error(prefix, error))?;
        listed.sort();
        Ok(listed)
    }

    /// The segment files of `collection`: (path, size).
    pub async fn segments(&self, collection: &str) -> Result<Vec<(Path, u64)>, SnapshotError> {
        let mut segments = self.list(&self.segment_dir(collection)).await?;
        segments.retain(|(path, _)| path.as_ref().ends_with(".parquet"));
        Ok(segments)
    }

    pub async fn delete(&self, path: &Path) -> Result<(), SnapshotError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(store_error(path, error)),
        }
    }

    pub async fn latest(&self, collection: &str) -> Result<Option<Manifest>, SnapshotError> {
        let pointer = self.latest_path(collection);
        let Some(bytes) = self.get_bytes(&pointer).await? else {
            return Ok(None);
        };
        let id = String::from_utf8(bytes)
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| valid_id(id))
            .ok_or_else(|| SnapshotError::Corrupt {
                file: pointer.to_string(),
                message: "not a snapshot id".into(),
            })?;
        self.manifest(collection, &id).await.map(Some)
    }

    /// The manifest of snapshot `id`, checked against the files it lists.
    pub async fn manifest(&self, collection: &str, id: &str) -> Result<Manifest, SnapshotError> {
        if !valid_id(id) {
            return Err(SnapshotError::UnknownSnapshot(
                id.chars().take(64).collect(),
            ));
        }
        let path = self.manifest_path(collection, id);
        let bytes = self
            .get_bytes(&path)
            .await?
            .ok_or_else(|| SnapshotError::UnknownSnapshot(id.to_owned()))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|error| SnapshotError::Corrupt {
                file: path.to_string(),
                message: error.to_string(),
            })?;
        if manifest.id != id || manifest.collection != collection {
            return Err(SnapshotError::Corrupt {
                file: path.to_string(),
                message: format!(
                    "describes snapshot {:?} of {:?}",
                    manifest.id, manifest.collection
                ),
            });
        }
        let listed = self.list(&self.snapshot_dir(collection, id)).await?;
        for file in &manifest.files {
            let path = self
                .snapshot_dir(collection, id)
                .clone()
                .join(file.name.as_str());
            match listed.iter().find(|(listed, _)| *listed == path) {
                Some((_, size)) if *size == file.bytes => {}
                Some((_, size)) => {
                    return Err(SnapshotError::Corrupt {
                        file: path.to_string(),
                        message: format!("{size} bytes, the manifest says {}", file.bytes),
                    });
                }
                None => {
                    return Err(SnapshotError::Corrupt {
                        file: path.to_string(),
                        message: "listed in the manifest but missing".into(),
                    });
                }
            }
        }
        Ok(manifest)
    }

    /// Snapshot ids of a collection, oldest first.
    pub async fn snapshot_ids(&self, collection: &str) -> Result<Vec<String>, SnapshotError> {
        let mut ids: Vec<String> = self
            .list(&self.path(&["snapshots", collection]))
            .await?
            .into_iter()
            .filter_map(|(path, _)| {
                let parts: Vec<_> = path
                    .parts()
                    .skip(self.root.len())
                    .map(|part| part.as_ref().to_owned())
                    .collect();
                (parts.len() == 4 && parts[3] == "manifest.json").then(|| parts[2].clone())
            })
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

fn store_error(path: &Path, error: object_store::Error) -> SnapshotError {
    SnapshotError::Store(format!("{path}: {error}"))
}

/// Snapshot ids are zero-padded sequence numbers, so they sort by age.
pub fn snapshot_id(sequence: u64) -> String {
    format!("{sequence:010}")
}

fn valid_id(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit())
}

/// What a snapshot holds; written next to its files, read before they are trusted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub id: String,
    pub collection: String,
    pub created_ms: u64,
    /// Every change record before this cursor is in the snapshot.
    pub cursor: String,
    pub rows: u64,
    /// Order-independent checksum of (key, document) over all rows (see `checksum`).
    pub checksum: String,
    pub files: Vec<ManifestFile>,
    /// Column name and Arrow type, in order.
    pub schema: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub rows: u64,
}
