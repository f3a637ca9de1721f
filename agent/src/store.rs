//! The agent's cache: one sled database in the data directory.
//!
//! Trees:
//! - `blobs`: `digest ‖ chunk index (u32 BE)` → chunk bytes.
//! - `releases`: `digest` → the [`Release`] (postcard). Written after every chunk of the blob,
//!   so its presence marks the content complete.
//! - `compiled`: `digest ‖ engine compatibility hash` → `BLAKE3(artifact) ‖ artifact`.
//! - `apps`: app name → [`AppRecord`] (postcard): the signed head in force and its history.
//! - `serving`: app name → [`ServingState`] (postcard): what this agent serves for the app and
//!   why (last committed release, release on trial, release being activated, last failure,
//!   local override, releases kept compiled).
//! - `trust`: `r ‖ version (u64 BE)` → a verified [`SignedRoot`] of the fleet's chain
//!   (postcard), and `floor` → the newest signed time seen (unix ms, u64 BE). Written by
//!   [`Store::put_roots`] in one transaction, flushed; re-verified at start.
//!
//! **Invariants.** The disk is not trusted: content is re-verified against its signed chunk map
//! when read, compiled artifacts against the checksum recorded when this agent compiled them,
//! and records' heads are re-verified by the caller. A record is only ever written by
//! [`Store::commit`], in one transaction with the serving state that names its release as
//! *activating*, flushed before it returns; sled's log is ordered, so a durable record implies
//! its blob and artifact are durable too, and a crash never lets an older seq be accepted again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fleetcast_protocol::trust::{MAX_CHAIN, SignedRoot};
use fleetcast_protocol::{AppName, AppRecord, Digest, Release, ReleaseError};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// Why a store operation failed. Nothing is written by an operation that fails, except where
/// a variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {}: {error}", path.display())]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}", open_failure(path, error))]
    Open { path: PathBuf, error: sled::Error },
    #[error(
        "the store at {} was written by another fleetcast-agent version (store format {found}, \
         this agent reads format {STORE_FORMAT}); move the data directory away and start \
         again: the agent fetches its releases from the mesh",
        path.display()
    )]
    Format { path: PathBuf, found: u32 },
    /// Something read back from disk does not decode or verify (the caller may recompile or
    /// refetch; the store is unchanged).
    #[error("{what} is damaged: {error}")]
    Damaged { what: String, error: String },
    #[error("stored record under {key:?} names another app")]
    RecordKey { key: String },
    #[error("bad release key")]
    ReleaseKey,
    #[error("chunk {index} of {digest} is missing from the store")]
    MissingChunk { index: u32, digest: String },
    /// The content read back does not match its release as a whole.
    #[error(transparent)]
    Content(#[from] ReleaseError),
    #[error(transparent)]
    Encode(#[from] postcard::Error),
    /// The write may or may not have reached the disk.
    #[error("flushing the store: {0}")]
    Flush(sled::Error),
    #[error(transparent)]
    Sled(#[from] sled::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn damaged(what: impl Into<String>, error: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        what: what.into(),
        error: error.to_string(),
    }
}

/// Where in the pipeline a release failed on this agent. Stored (and shown) as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Stage {
    /// Compiling, or storing the source and the artifact.
    Compile,
    /// Writing the record and the serving state.
    Persist,
    /// The smoke check before the swap.
    Smoke,
    /// Its trial, after the swap.
    Trial,
    /// The agent stopped while the release was being activated or on trial.
    Restart,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Compile => "compile",
            Stage::Persist => "persist",
            Stage::Smoke => "smoke",
            Stage::Trial => "trial",
            Stage::Restart => "restart",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Stage> for String {
    fn from(s: Stage) -> String {
        s.as_str().to_string()
    }
}

impl TryFrom<String> for Stage {
    type Error = String;
    fn try_from(s: String) -> Result<Stage, String> {
        [
            Stage::Compile,
            Stage::Persist,
            Stage::Smoke,
            Stage::Trial,
            Stage::Restart,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown stage {s:?}"))
    }
}

/// One release as the serving state refers to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRef {
    /// The seq of the head that brought it (0 for a local override).
    pub seq: u64,
    pub release: Release,
}

/// A release that failed on this agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub seq: u64,
    pub version: String,
    pub digest: String,
    /// Where it failed.
    pub stage: Stage,
    pub reason: String,
    pub at_ms: u64,
}

/// What this agent serves for one app, and why. The agent's own bookkeeping, next to the
/// protocol's [`AppRecord`] (which holds the seq and the signed head).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServingState {
    /// The last release that passed its trial: what a restart serves (absent an override).
    pub committed: Option<ReleaseRef>,
    /// Swapped in and on trial. Found here at start, it means the agent stopped during the
    /// trial: the release counts as failed and the committed one serves.
    pub trial: Option<ReleaseRef>,
    /// The agent stopped cleanly (shutdown, not a crash) during the trial: a restart serves
    /// the release on trial again and restarts its trial.
    pub trial_clean_stop: bool,
    /// The last release that failed here (compile, smoke check, trial), and why.
    pub failure: Option<FailureRecord>,
    /// A release an operator on this node made serve (`fleetcast-agent rollback`); cleared by
    /// the next head that activates.
    pub local_override: Option<ReleaseRef>,
    /// Releases kept compiled, newest first (at most `activation.cached_releases`).
    pub cached: Vec<Release>,
    /// The release whose record was written (with this state, in one transaction) and that
    /// has not swapped in or failed yet. Found here at start, it means the agent stopped
    /// between the persist step and the swap: it counts as failed (`restart`).
    pub activating: Option<ReleaseRef>,
}

/// Decoded releases kept in memory for [`Store::read_chunk`] (per store).
const RELEASE_CACHE_ENTRIES: usize = 32;

/// How [`Store::open_with`] configures sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Period of sled's background flusher thread; `None` runs no such thread.
    /// Durability does not depend on it: [`Store::commit`] flushes explicitly.
    pub flush_every_ms: Option<u64>,
    /// Delete the database files when the store is dropped (tests, in-process fleets).
    pub temporary: bool,
    /// Bytes of pages sled keeps in memory (it caches what it writes, whole chunks included).
    /// sled's default is 1 GiB; a process running hundreds of agents wants a few MiB each.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    /// sled's defaults, what [`Store::open`] uses: a flusher every 500 ms, persistent.
    fn default() -> Self {
        StoreOptions {
            flush_every_ms: Some(500),
            temporary: false,
            cache_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The sled-backed cache. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    blobs: sled::Tree,
    releases: sled::Tree,
    compiled: sled::Tree,
    apps: sled::Tree,
    serving: sled::Tree,
    trust: sled::Tree,
    /// Releases decoded from `releases`, so serving a chunk does not decode the
    /// release every time. Entries are never stale: a digest's release never changes.
    release_cache: Arc<Mutex<HashMap<Digest, Arc<Release>>>>,
}

fn chunk_key(digest: &Digest, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(&digest.0);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

const ROOT_PREFIX: &[u8] = b"r";
const FLOOR_KEY: &[u8] = b"floor";

fn root_key(version: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ROOT_PREFIX[0];
    k[1..].copy_from_slice(&version.to_be_bytes());
    k
}

/// A root key for messages: its version.
fn hex_key(k: &[u8]) -> String {
    match k.get(1..9).and_then(|v| v.try_into().ok()) {
        Some(v) => format!("version {}", u64::from_be_bytes(v)),
        None => format!("key {k:?}"),
    }
}

fn compiled_key(digest: &Digest, compat: &[u8; 32]) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&digest.0);
    k[32..].copy_from_slice(compat);
    k
}

/// Version of what the store holds (postcard layouts of records, releases and serving state).
/// Format 2: releases carry a run policy, apps a serving state. Format 3: the serving state
/// names the release being activated (written with its record in one transaction). Format 4:
/// heads carry the epoch of the fleet root they are signed under, and the `trust` tree holds
/// the root chain. Format 5: heads carry a rollout plan. Format 2, 3 and 4 stores are migrated
/// in place when opened, one format at a time ([`migrate`]).
/// How long opening waits for a store's lock (see [`Store::open_with`]).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub const STORE_FORMAT: u32 = 5;
const FORMAT_KEY: &[u8] = b"fleetcast-store-format";

fn tx_error(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Sled(e),
        // No transaction here aborts on its own.
        TransactionError::Abort(()) => {
            StoreError::Sled(sled::Error::Unsupported("transaction aborted".to_string()))
        }
    }
}

/// Why the store would not open, in words: sled's own message for a held lock ends in a raw
/// `Os { code: 11, .. }`.
fn open_failure(path: &Path, error: &sled::Error) -> String {
    match error {
        // sled wraps the failed `flock` in an `Other` error whose text is all it keeps.
        sled::Error::Io(e) if e.to_string().starts_with("could not acquire lock") => format!(
            "the store at {} is locked: another fleetcast-agent runs with this data directory; stop it, or give this agent its own --data-dir (config `data_dir`)",
            path.display()
        ),
        sled::Error::Io(e) => format!("cannot open the sled store at {}: {e}", path.display()),
        e => format!(
            "cannot open the sled store at {}: {e}; if it is damaged, move the data directory away (the agent fetches its releases again from the mesh)",
            path.display()
        ),
    }
}

impl Store {
    /// Opens (or creates) the store under `dir`, with sled's defaults.
    pub fn open(dir: &Path) -> Result<Self> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store under `dir` with `options`. A store locked by someone else
    /// is waited for up to [`LOCK_WAIT`] (the last writes of one this process just closed), then
    /// refused in words.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::CreateDir {
            path: dir.to_path_buf(),
            error,
        })?;
        let path = dir.join("store");
        let config = sled::Config::new()
            .path(&path)
            .flush_every_ms(options.flush_every_ms)
            .temporary(options.temporary)
            .cache_capacity(options.cache_bytes);
        // A store this process just closed may hold its lock a moment longer: sled's last
        // background writes still own the file. Wait for that, a bounded time, before calling it
        // another agent's.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => {
                    break r.map_err(|error| StoreError::Open {
                        path: path.clone(),
                        error,
                    })?;
                }
            }
        };
        migrate::check_format(&db, &path)?;
        Ok(Store {
            blobs: db.open_tree("blobs")?,
            releases: db.open_tree("releases")?,
            compiled: db.open_tree("compiled")?,
            apps: db.open_tree("apps")?,
            serving: db.open_tree("serving")?,
            trust: db.open_tree("trust")?,
            db,
            release_cache: Arc::default(),
        })
    }

    /// Digests whose content is completely stored.
    pub fn complete_blobs(&self) -> Result<Vec<Digest>> {
        self.releases
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                let d: [u8; 32] = k.as_ref().try_into().map_err(|_| StoreError::ReleaseKey)?;
                Ok(Digest(d))
            })
            .collect()
    }

    /// Whether the content of `digest` is completely stored.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.releases.contains_key(digest.0)?)
    }

    /// Stores verified `content` of `release` (the caller verified it).
    pub fn put_blob(&self, release: &Release, content: &[u8]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (i, chunk) in content.chunks(release.chunk_size as usize).enumerate() {
            batch.insert(&chunk_key(&release.digest, i as u32)[..], chunk);
        }
        self.blobs.apply_batch(batch)?;
        self.releases
            .insert(release.digest.0, postcard::to_stdvec(release)?)?;
        self.remember(release.digest, Arc::new(release.clone()));
        Ok(())
    }

    /// Keeps `release`, stored under `digest`, decoded in memory.
    fn remember(&self, digest: Digest, release: Arc<Release>) {
        let mut cache = self.release_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= RELEASE_CACHE_ENTRIES
            && !cache.contains_key(&digest)
            && let Some(evict) = cache.keys().next().copied()
        {
            // Small and rarely full: dropping an arbitrary entry is good enough.
            cache.remove(&evict);
        }
        cache.insert(digest, release);
    }

    /// The release of `digest`, decoded once and then kept in memory.
    fn cached_release(&self, digest: &Digest) -> Result<Option<Arc<Release>>> {
        let cached = self
            .release_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned();
        if let Some(release) = cached {
            return Ok(Some(release));
        }
        let Some(release) = self.release(digest)? else {
            return Ok(None);
        };
        let release = Arc::new(release);
        self.remember(*digest, release.clone());
        Ok(Some(release))
    }

    fn release(&self, digest: &Digest) -> Result<Option<Release>> {
        match self.releases.get(digest.0)? {
            Some(v) => Ok(Some(postcard::from_bytes(&v).map_err(|e| {
                damaged(format!("stored release {}", digest.short()), e)
            })?)),
            None => Ok(None),
        }
    }

    /// One chunk of stored content, verified against its chunk map; `None` if absent.
    pub fn read_chunk(&self, digest: &Digest, index: u32) -> Result<Option<Vec<u8>>> {
        let Some(release) = self.cached_release(digest)? else {
            return Ok(None);
        };
        let Some(data) = self.blobs.get(chunk_key(digest, index))? else {
            return Ok(None);
        };
        release
            .verify_chunk(index, &data)
            .map_err(|e| damaged(format!("stored chunk {index} of {}", digest.short()), e))?;
        Ok(Some(data.to_vec()))
    }

    /// The whole content of `release`, verified chunk by chunk and as a whole.
    pub fn read_blob(&self, release: &Release) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(release.size as usize);
        for i in 0..release.chunk_count() {
            let data = self
                .blobs
                .get(chunk_key(&release.digest, i))?
                .ok_or_else(|| StoreError::MissingChunk {
                    index: i,
                    digest: release.digest.short(),
                })?;
            release.verify_chunk(i, &data).map_err(|e| {
                damaged(format!("stored chunk {i} of {}", release.digest.short()), e)
            })?;
            out.extend_from_slice(&data);
        }
        release.verify_content(&out)?;
        Ok(out)
    }

    /// Caches a compiled artifact this agent produced.
    pub fn put_compiled(&self, digest: &Digest, compat: &[u8; 32], artifact: &[u8]) -> Result<()> {
        let mut v = Vec::with_capacity(32 + artifact.len());
        v.extend_from_slice(Digest::of(artifact).0.as_slice());
        v.extend_from_slice(artifact);
        self.compiled.insert(compiled_key(digest, compat), v)?;
        Ok(())
    }

    /// A cached artifact for `digest` compiled by an engine with `compat`, if present and intact.
    /// A damaged one is removed and reported as absent, so the caller recompiles.
    pub fn get_compiled(&self, digest: &Digest, compat: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let key = compiled_key(digest, compat);
        let Some(v) = self.compiled.get(key)? else {
            return Ok(None);
        };
        if v.len() >= 32 && Digest::of(&v[32..]).0[..] == v[..32] {
            return Ok(Some(v[32..].to_vec()));
        }
        tracing::warn!(digest = %digest.short(), "cached compiled artifact is damaged; removing it and recompiling");
        self.compiled.remove(key)?;
        Ok(None)
    }

    /// Persists `record` as the app's record and `state` as its serving state, in one
    /// transaction across both trees, and flushes everything to disk before returning. After
    /// an error neither or both may be durable (the flush is what failed), never one alone.
    pub fn commit(&self, record: &AppRecord, state: &ServingState) -> Result<()> {
        let key = record.head.head.app.as_str().as_bytes();
        let (record, state) = (postcard::to_stdvec(record)?, postcard::to_stdvec(state)?);
        (&self.apps, &self.serving)
            .transaction(|(apps, serving)| {
                apps.insert(key, record.as_slice())?;
                serving.insert(key, state.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        self.db.flush().map_err(StoreError::Flush)?;
        Ok(())
    }

    /// Persists the serving state of `app` and flushes.
    pub fn put_state(&self, app: &AppName, state: &ServingState) -> Result<()> {
        self.serving
            .insert(app.as_str().as_bytes(), postcard::to_stdvec(state)?)?;
        self.db.flush().map_err(StoreError::Flush)?;
        Ok(())
    }

    /// The serving state of every app that has one.
    pub fn states(&self) -> Result<HashMap<String, ServingState>> {
        let mut out = HashMap::new();
        for kv in self.serving.iter() {
            let (k, v) = kv?;
            let app = String::from_utf8_lossy(&k).into_owned();
            let st: ServingState = postcard::from_bytes(&v)
                .map_err(|e| damaged(format!("stored serving state of app {app:?}"), e))?;
            out.insert(app, st);
        }
        Ok(out)
    }

    /// Removes a cached compiled artifact (it is rebuilt from the blob if ever needed again).
    pub fn remove_compiled(&self, digest: &Digest, compat: &[u8; 32]) -> Result<()> {
        self.compiled.remove(compiled_key(digest, compat))?;
        Ok(())
    }

    /// Whether an artifact for `digest` compiled by an engine with `compat` is cached (not
    /// checked for damage: [`Store::get_compiled`] does that).
    pub fn has_compiled(&self, digest: &Digest, compat: &[u8; 32]) -> Result<bool> {
        Ok(self.compiled.contains_key(compiled_key(digest, compat))?)
    }

    /// All app records, decoded (not yet verified: the caller checks their signatures).
    /// A record that does not decode is an error naming the app.
    pub fn records(&self) -> Result<Vec<AppRecord>> {
        let mut out = Vec::new();
        for kv in self.apps.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let rec: AppRecord = postcard::from_bytes(&v)
                .map_err(|e| damaged(format!("stored record of app {key:?}"), e))?;
            if rec.head.head.app.as_str().as_bytes() != k.as_ref() {
                return Err(StoreError::RecordKey { key });
            }
            out.push(rec);
        }
        Ok(out)
    }

    /// Adds `roots` (verified, oldest first) to the stored chain and sets the time floor to
    /// `floor_ms` (never lowered), in one transaction, flushed before it returns. Keeps the
    /// newest [`MAX_CHAIN`] roots.
    pub fn put_roots(&self, roots: &[SignedRoot], floor_ms: u64) -> Result<()> {
        let encoded = roots
            .iter()
            .map(|r| Ok((root_key(r.root.version), postcard::to_stdvec(r)?)))
            .collect::<Result<Vec<_>>>()?;
        let floor = self.trust_floor()?.max(floor_ms);
        self.trust
            .transaction(|t| {
                for (k, v) in &encoded {
                    t.insert(&k[..], v.as_slice())?;
                }
                t.insert(FLOOR_KEY, &floor.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        let stored = self.trust.scan_prefix(ROOT_PREFIX).count();
        for kv in self
            .trust
            .scan_prefix(ROOT_PREFIX)
            .keys()
            .take(stored.saturating_sub(MAX_CHAIN))
        {
            self.trust.remove(kv?)?;
        }
        self.db.flush().map_err(StoreError::Flush)?;
        Ok(())
    }

    /// The stored root chain, oldest first (decoded, not yet verified: the caller re-verifies
    /// it), and the time floor (0 if none).
    pub fn roots(&self) -> Result<(Vec<SignedRoot>, u64)> {
        let mut chain = Vec::new();
        for kv in self.trust.scan_prefix(ROOT_PREFIX) {
            let (k, v) = kv?;
            let root: SignedRoot = postcard::from_bytes(&v)
                .map_err(|e| damaged(format!("stored fleet root {}", hex_key(&k)), e))?;
            chain.push(root);
        }
        Ok((chain, self.trust_floor()?))
    }

    fn trust_floor(&self) -> Result<u64> {
        Ok(self
            .trust
            .get(FLOOR_KEY)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Flushes outstanding writes.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

mod migrate;
#[cfg(test)]
mod tests;
