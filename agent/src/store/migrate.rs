//! Store formats and their migrations: a store of an older format is migrated in place when
//! opened, one format at a time (2 → 3 → 4 → 5), each step one transaction with the new format
//! marker, flushed: a crash leaves the store in one format or the next, never in between.
//! Anything older is refused with what to do, rather than misread.

use std::path::Path;

use fleetcast_protocol::head::{HeadSignature, LegacySignedHead, SignedHeadV4Stored};
use fleetcast_protocol::wire::HistoryEntry;
use fleetcast_protocol::{AppName, AppRecord, HeadKind, Release, SignedHead};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{
    FORMAT_KEY, FailureRecord, ReleaseRef, Result, STORE_FORMAT, ServingState, StoreError, damaged,
    tx_error,
};

/// A new store gets [`STORE_FORMAT`]; formats 2 to 4 are migrated; any other is refused with
/// what to do, rather than misread.
pub(super) fn check_format(db: &sled::Db, path: &Path) -> Result<()> {
    let found = db
        .get(FORMAT_KEY)?
        .map(|v| v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0));
    match found {
        Some(STORE_FORMAT) => Ok(()),
        None if db.open_tree("apps")?.is_empty() && db.open_tree("releases")?.is_empty() => {
            db.insert(FORMAT_KEY, &STORE_FORMAT.to_be_bytes())?;
            Ok(())
        }
        Some(2) => {
            migrate_from_2(db)?;
            migrate_from_3(db)?;
            migrate_from_4(db)
        }
        Some(3) => {
            migrate_from_3(db)?;
            migrate_from_4(db)
        }
        Some(4) => migrate_from_4(db),
        found => Err(StoreError::Format {
            path: path.to_path_buf(),
            found: found.unwrap_or(1),
        }),
    }
}

/// [`ServingState`] as store format 2 wrote it (no `activating`), for the migration.
#[derive(Deserialize)]
struct ServingStateV2 {
    committed: Option<ReleaseRef>,
    trial: Option<ReleaseRef>,
    trial_clean_stop: bool,
    failure: Option<FailureRecord>,
    local_override: Option<ReleaseRef>,
    cached: Vec<Release>,
}

impl From<ServingStateV2> for ServingState {
    fn from(v: ServingStateV2) -> Self {
        ServingState {
            committed: v.committed,
            trial: v.trial,
            trial_clean_stop: v.trial_clean_stop,
            failure: v.failure,
            local_override: v.local_override,
            cached: v.cached,
            activating: None,
        }
    }
}

/// An [`AppRecord`] as store formats 2 and 3 wrote it: its head has no epoch.
#[derive(Deserialize)]
struct AppRecordV3 {
    head: LegacySignedHead,
    history: Vec<HistoryEntry>,
}

impl From<AppRecordV3> for AppRecord {
    fn from(v: AppRecordV3) -> AppRecord {
        AppRecord {
            head: SignedHead::from(v.head),
            history: v.history,
        }
    }
}

/// An [`AppRecord`] as store format 4 wrote it: its head has an epoch but no plan.
#[derive(Deserialize)]
struct AppRecordV4 {
    head: SignedHeadV4Stored,
    history: Vec<HistoryEntry>,
}

impl From<AppRecordV4> for AppRecord {
    fn from(v: AppRecordV4) -> AppRecord {
        AppRecord {
            head: SignedHead::from(v.head),
            history: v.history,
        }
    }
}

/// The format-4 encoding of a record whose head has no plan (what [`migrate_from_3`]
/// writes, so that the next step reads what a format-4 agent wrote).
#[derive(Serialize)]
struct AppRecordV4Out<'a> {
    head: SignedHeadV4Out<'a>,
    history: &'a [HistoryEntry],
}

#[derive(Serialize)]
struct SignedHeadV4Out<'a> {
    head: HeadV4Out<'a>,
    signatures: &'a [HeadSignature],
}

#[derive(Serialize)]
struct HeadV4Out<'a> {
    fleet: &'a str,
    app: &'a AppName,
    seq: u64,
    release: &'a Release,
    kind: HeadKind,
    issued_at_ms: u64,
    epoch: u64,
}

impl<'a> AppRecordV4Out<'a> {
    fn of(r: &'a AppRecord) -> Self {
        let h = &r.head.head;
        AppRecordV4Out {
            head: SignedHeadV4Out {
                head: HeadV4Out {
                    fleet: &h.fleet,
                    app: &h.app,
                    seq: h.seq,
                    release: &h.release,
                    kind: h.kind,
                    issued_at_ms: h.issued_at_ms,
                    epoch: h.epoch,
                },
                signatures: &r.head.signatures,
            },
            history: &r.history,
        }
    }
}

/// Re-encodes every record of the `apps` tree with `convert` (`Err`: it does not decode) and
/// writes them with format marker `to` in one transaction, flushed. Returns how many.
fn rewrite_records(
    db: &sled::Db,
    to: u32,
    convert: impl Fn(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<usize> {
    let apps = db.open_tree("apps")?;
    let mut records = Vec::new();
    for kv in apps.iter() {
        let (k, v) = kv?;
        let new = convert(&v).map_err(|e| {
            damaged(
                format!("stored record of app {:?}", String::from_utf8_lossy(&k)),
                e,
            )
        })?;
        records.push((k, new));
    }
    let meta: &sled::Tree = db;
    (&apps, meta)
        .transaction(|(apps, meta)| {
            for (k, v) in &records {
                apps.insert(k, v.as_slice())?;
            }
            meta.insert(FORMAT_KEY, &to.to_be_bytes())?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(tx_error)?;
    db.flush().map_err(StoreError::Flush)?;
    Ok(records.len())
}

/// Format 4 → 5: every record's head is re-encoded without a plan (whose signing bytes are the
/// format-4 ones, so its signatures still verify). One transaction with the new format marker,
/// flushed: a crash leaves the store in format 4 or 5, never in between.
fn migrate_from_4(db: &sled::Db) -> Result<()> {
    let n = rewrite_records(db, 5, |v| {
        let old: AppRecordV4 = postcard::from_bytes(v).map_err(|e| e.to_string())?;
        postcard::to_stdvec(&AppRecord::from(old)).map_err(|e| e.to_string())
    })?;
    tracing::info!(
        apps = n,
        "store migrated from format 4 to 5 (heads carry a rollout plan; none for these)"
    );
    Ok(())
}

/// Format 3 → 4: every record's head is re-encoded with epoch 0 (whose signing bytes are the
/// old ones, so its signatures still verify). One transaction with the new format marker,
/// flushed: a crash leaves the store in format 3 or 4, never in between.
fn migrate_from_3(db: &sled::Db) -> Result<()> {
    let n = rewrite_records(db, 4, |v| {
        let old: AppRecordV3 = postcard::from_bytes(v).map_err(|e| e.to_string())?;
        let rec = AppRecord::from(old);
        postcard::to_stdvec(&AppRecordV4Out::of(&rec)).map_err(|e| e.to_string())
    })?;
    tracing::info!(
        apps = n,
        "store migrated from format 3 to 4 (heads carry an epoch; epoch 0 for these)"
    );
    Ok(())
}

/// Format 2 → 3: every serving state gains `activating: None`. One transaction with the new
/// format marker, flushed: a crash leaves the store in format 2 or 3, never in between.
fn migrate_from_2(db: &sled::Db) -> Result<()> {
    let serving = db.open_tree("serving")?;
    let mut states = Vec::new();
    for kv in serving.iter() {
        let (k, v) = kv?;
        let old: ServingStateV2 = postcard::from_bytes(&v).map_err(|e| {
            damaged(
                format!(
                    "stored serving state of app {:?}",
                    String::from_utf8_lossy(&k)
                ),
                e,
            )
        })?;
        states.push((k, postcard::to_stdvec(&ServingState::from(old))?));
    }
    let meta: &sled::Tree = db;
    (&serving, meta)
        .transaction(|(serving, meta)| {
            for (k, v) in &states {
                serving.insert(k, v.as_slice())?;
            }
            meta.insert(FORMAT_KEY, &3u32.to_be_bytes())?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(tx_error)?;
    db.flush().map_err(StoreError::Flush)?;
    tracing::info!(apps = states.len(), "store migrated from format 2 to 3");
    Ok(())
}
