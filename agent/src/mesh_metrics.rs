//! The agent's metrics beyond the runtime's: the mesh (neighbours, passive peers, links), the
//! transport (frames and bytes by kind, counted in `fleetcast-net`), transfers (chunks served,
//! transfers in progress, duplicate bytes), heads (accepted, refused by reason, activations by
//! result), the fleet root (version, epoch, expiry), peers refused at admission by reason, and
//! what serves per app, in the Prometheus text format `/metrics` serves after the
//! runtime's families ([`crate::runtime::metrics`]).
//!
//! Who writes what: the node actor owns the [`Node`] and is the only writer of
//! [`MeshMetrics`]: it counts chunks and events where it handles the outputs, and after each
//! drain copies the node's cheap gauges ([`MeshMetrics::observe_node`]; the trust gauges once a
//! second and on every new root, [`MeshMetrics::observe_trust`]); admission refusals are counted by the admission policy
//! ([`crate::trust::FleetAdmission`], called by the transport); the admin endpoint
//! reads them at scrape time. Two values the node only gives in its whole status (the passive
//! view) or that the supervisor holds (what serves, the seq in force) are asked for at scrape
//! time and are left out of a scrape when their owner does not answer.
//!
//! Invariants:
//! - **Cheap on the hot path.** Per message the actor does a few relaxed atomic operations;
//!   the one lock ([`MeshMetrics`]'s per-app head counters) is taken per head event only, and
//!   a refused head already cost a signature check.
//! - **Counters only go up.** [`Node::duplicate_bytes`] sums the transfers the node still
//!   holds, so it falls when one is let go; the actor adds up its increases instead.
//! - **Cardinality is bounded by the apps this agent holds a verified head for.** A refused
//!   head names its app only if the agent knows that app (accepted a head of it, or holds its
//!   record); any other name, which nobody vouched for, counts under [`UNKNOWN_APP`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use fleetcast_net::endpoint::{FrameKind, NetSnapshot};
use fleetcast_protocol::node::{Node, Peer};
use fleetcast_protocol::trust::TrustStatus;
use fleetcast_protocol::{AppName, Event};

use crate::runtime::metrics::{header, sample};
use crate::supervisor::AppView;

/// The `app` label of a refused head whose app this agent holds no verified head for. No app
/// can have this name (an app name is a DNS label).
pub const UNKNOWN_APP: &str = "(unknown)";

/// Where a served chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkSource {
    /// Read from the store (complete content).
    Store,
    /// Cut-through: a verified chunk of a transfer still in progress.
    Transfer,
}

impl ChunkSource {
    fn index(self) -> usize {
        match self {
            ChunkSource::Store => 0,
            ChunkSource::Transfer => 1,
        }
    }
}

/// What the node actor counts. See the module docs.
#[derive(Debug, Default)]
pub struct MeshMetrics {
    neighbours: AtomicU64,
    transfers: AtomicU64,
    /// The node's own figure at the last drain (it may fall), and the sum of its increases.
    duplicate_seen: AtomicU64,
    duplicate_bytes: AtomicU64,
    /// By [`ChunkSource::index`].
    chunks_served: [AtomicU64; 2],
    heads: Mutex<Heads>,
    /// The node's trust, copied after each drain.
    root_version: AtomicU64,
    root_epoch: AtomicU64,
    /// Unix ms; `u64::MAX`: never (no root).
    root_expires_ms: AtomicU64,
    root_expired: AtomicU64,
    /// Peers refused at admission, by [`fleetcast_protocol::trust::AdmitError::kind`].
    admission_refused: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Heads {
    apps: BTreeMap<AppName, AppHeads>,
    /// Refusals of heads for apps this agent does not know, by reason.
    unknown: BTreeMap<&'static str, u64>,
}

/// Head and activation counts of one app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppHeads {
    pub accepted: u64,
    /// By [`Event::Rejected`]'s `kind`.
    pub refused: BTreeMap<&'static str, u64>,
    pub activated: u64,
    pub failed: u64,
}

impl MeshMetrics {
    /// Copies the node's gauges; the actor calls it after each drain. O(transfers held).
    pub fn observe_node<P: Peer>(&self, node: &Node<P>) {
        let relaxed = Ordering::Relaxed;
        self.neighbours
            .store(node.active_peers().len() as u64, relaxed);
        self.transfers
            .store(node.transfers_in_progress() as u64, relaxed);
        self.observe_duplicates(node.duplicate_bytes());
    }

    /// Copies the trust gauges.
    pub fn observe_trust(&self, t: &TrustStatus) {
        let relaxed = Ordering::Relaxed;
        self.root_version.store(t.version, relaxed);
        self.root_epoch.store(t.epoch, relaxed);
        self.root_expires_ms.store(t.expires_ms, relaxed);
        self.root_expired.store(u64::from(t.expired), relaxed);
    }

    /// A peer was refused at admission (the handshake or a recheck), for reason `kind`.
    pub fn admission_refused(&self, kind: &'static str) {
        *self
            .admission_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }

    /// The node now reports `now` duplicate bytes over the transfers it holds: what it gained
    /// since the last call is added; a fall (a transfer let go) adds nothing.
    fn observe_duplicates(&self, now: u64) {
        let before = self.duplicate_seen.swap(now, Ordering::Relaxed);
        if now > before {
            self.duplicate_bytes
                .fetch_add(now - before, Ordering::Relaxed);
        }
    }

    /// A chunk was handed to the transport for a peer that asked for it.
    pub fn chunk_served(&self, source: ChunkSource) {
        self.chunks_served[source.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a node event. `known` says whether the node holds a record for an app; with the
    /// apps heads were accepted for here, it decides whether a refused head names its app.
    pub fn event(&self, e: &Event, known: impl FnOnce(&AppName) -> bool) {
        match e {
            Event::Accepted { app, .. } => self.heads().app(app).accepted += 1,
            Event::Rejected { app, kind, .. } => {
                let mut heads = self.heads();
                let refused = if heads.apps.contains_key(app) || known(app) {
                    &mut heads.app(app).refused
                } else {
                    &mut heads.unknown
                };
                *refused.entry(*kind).or_default() += 1;
            }
            Event::Activated { app, .. } => self.heads().app(app).activated += 1,
            Event::ActivationFailed { app, .. } => self.heads().app(app).failed += 1,
            // STOPGAP (h-pub): Prefetched is not counted until the agent's prefetch lands.
            Event::Neighbor { .. }
            | Event::RootAdopted { .. }
            | Event::RootRefused { .. }
            | Event::Prefetched { .. } => {}
        }
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> MeshSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let heads = self.heads().clone();
        MeshSnapshot {
            neighbours: load(&self.neighbours),
            transfers_in_progress: load(&self.transfers),
            duplicate_bytes: load(&self.duplicate_bytes),
            chunks_served_store: load(&self.chunks_served[ChunkSource::Store.index()]),
            chunks_served_transfer: load(&self.chunks_served[ChunkSource::Transfer.index()]),
            apps: heads.apps,
            refused_unknown: heads.unknown,
            root_version: load(&self.root_version),
            root_epoch: load(&self.root_epoch),
            root_expires_ms: load(&self.root_expires_ms),
            root_expired: load(&self.root_expired) != 0,
            admission_refused: self
                .admission_refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn heads(&self) -> MutexGuard<'_, Heads> {
        // Only counters are added under the lock: a panic elsewhere cannot leave them torn.
        self.heads.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Heads {
    fn app(&mut self, app: &AppName) -> &mut AppHeads {
        self.apps.entry(app.clone()).or_default()
    }
}

/// A point-in-time copy of [`MeshMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshSnapshot {
    pub neighbours: u64,
    pub transfers_in_progress: u64,
    pub duplicate_bytes: u64,
    pub chunks_served_store: u64,
    pub chunks_served_transfer: u64,
    pub apps: BTreeMap<AppName, AppHeads>,
    pub refused_unknown: BTreeMap<&'static str, u64>,
    /// 0: no root (`trusted_keys`).
    pub root_version: u64,
    pub root_epoch: u64,
    /// Unix ms; `u64::MAX`: never.
    pub root_expires_ms: u64,
    pub root_expired: bool,
    pub admission_refused: BTreeMap<&'static str, u64>,
}

/// What serves for one app (from the supervisor's view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppServing {
    pub app: String,
    /// The seq of the head in force.
    pub seq: u64,
    /// `committed`, `trial`, `reverted`, `local-override`, `activating` or `none`.
    pub state: &'static str,
    /// Version and digest (hex) of the release in the app's slot; `None`: nothing serves.
    pub serving: Option<(String, String)>,
}

impl From<&AppView> for AppServing {
    fn from(v: &AppView) -> Self {
        AppServing {
            app: v.app.clone(),
            seq: v.seq,
            state: v.state,
            serving: v
                .serving
                .as_ref()
                .map(|r| (r.version.clone(), r.digest.clone())),
        }
    }
}

/// Everything one scrape renders here.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub mesh: MeshSnapshot,
    pub net: NetSnapshot,
    /// The passive view's size, if the node actor answered.
    pub passive_peers: Option<u32>,
    /// What serves per app, if the supervisor answered.
    pub apps: Option<Vec<AppServing>>,
}

impl Scrape {
    /// The families of this module in the Prometheus text format 0.0.4. Every family has its
    /// `# HELP` and `# TYPE` even without samples; series are sorted by app, then label.
    pub fn write_prometheus<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        self.write_mesh(out)?;
        self.write_net(out)?;
        self.write_transfers(out)?;
        self.write_heads(out)?;
        self.write_trust(out)?;
        self.write_serving(out)
    }

    fn write_trust<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        let m = &self.mesh;
        let name = "fleetcast_root_version";
        header(
            out,
            name,
            "gauge",
            "The version of the newest fleet root this agent trusts (0: no root, trusted_keys).",
        )?;
        sample(out, name, &[], &[], m.root_version)?;
        let name = "fleetcast_root_epoch";
        header(
            out,
            name,
            "gauge",
            "The epoch of the newest fleet root: the version of the root that last changed the release keys (heads carry it).",
        )?;
        sample(out, name, &[], &[], m.root_epoch)?;
        let name = "fleetcast_root_expires_timestamp_seconds";
        header(
            out,
            name,
            "gauge",
            "The time the newest fleet root expires, in seconds since the Unix epoch (absent without a root: nothing expires).",
        )?;
        if m.root_expires_ms != u64::MAX {
            sample(out, name, &[], &[], m.root_expires_ms / 1000)?;
        }
        let name = "fleetcast_root_expired";
        header(
            out,
            name,
            "gauge",
            "The newest fleet root has expired (1) or not (0): an expired root accepts no new head until a newer one arrives.",
        )?;
        sample(out, name, &[], &[], u8::from(m.root_expired))?;
        let name = "fleetcast_admission_refused_total";
        header(
            out,
            name,
            "counter",
            "Peers this agent refused at the handshake or cut off later, by reason (not-enrolled, wrong-cert, cert-expired, cert-untrusted, revoked, not-operator).",
        )?;
        for (&reason, n) in &m.admission_refused {
            sample(out, name, &[("reason", reason)], &[], n)?;
        }
        Ok(())
    }

    fn write_mesh<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        let name = "fleetcast_mesh_neighbours";
        header(
            out,
            name,
            "gauge",
            "Peers in this agent's active view: the neighbours it keeps a link to and gossips with.",
        )?;
        sample(out, name, &[], &[], self.mesh.neighbours)?;
        let name = "fleetcast_mesh_passive_peers";
        header(
            out,
            name,
            "gauge",
            "Peers in this agent's passive view: known node ids and addresses, kept to repair the active view.",
        )?;
        if let Some(n) = self.passive_peers {
            sample(out, name, &[], &[], n)?;
        }
        let name = "fleetcast_mesh_links";
        header(
            out,
            name,
            "gauge",
            "Open QUIC connections of any role: neighbours, probes, joins in progress and clients such as publishers.",
        )?;
        sample(out, name, &[], &[], self.net.connections)
    }

    fn write_net<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        type Family = (
            &'static str,
            &'static str,
            fn(&NetSnapshot, FrameKind) -> u64,
        );
        let families: [Family; 4] = [
            (
                "fleetcast_net_bytes_sent_total",
                "Bytes of frames (length prefix and encoded message) sent to peers and acknowledged, by kind: payload (chunk data) or control.",
                |n, k| n.sent.get(k).bytes,
            ),
            (
                "fleetcast_net_bytes_received_total",
                "Bytes of frames (length prefix and encoded message) received from peers that decoded, by kind: payload (chunk data) or control.",
                |n, k| n.received.get(k).bytes,
            ),
            (
                "fleetcast_net_frames_sent_total",
                "Frames (one message each) sent to peers and acknowledged, by kind: payload (chunk data) or control.",
                |n, k| n.sent.get(k).frames,
            ),
            (
                "fleetcast_net_frames_received_total",
                "Frames (one message each) received from peers that decoded, by kind: payload (chunk data) or control.",
                |n, k| n.received.get(k).frames,
            ),
        ];
        for (name, help, value) in families {
            header(out, name, "counter", help)?;
            for kind in FrameKind::ALL {
                sample(
                    out,
                    name,
                    &[("kind", kind.as_str())],
                    &[],
                    value(&self.net, kind),
                )?;
            }
        }
        Ok(())
    }

    fn write_transfers<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        let m = &self.mesh;
        let name = "fleetcast_chunks_served_total";
        header(
            out,
            name,
            "counter",
            "Chunks this agent sent to peers that asked for them, by source: store (complete content) or transfer (cut-through, verified while still fetching).",
        )?;
        sample(
            out,
            name,
            &[("source", "store")],
            &[],
            m.chunks_served_store,
        )?;
        sample(
            out,
            name,
            &[("source", "transfer")],
            &[],
            m.chunks_served_transfer,
        )?;
        let name = "fleetcast_transfers_in_progress";
        header(
            out,
            name,
            "gauge",
            "Content transfers still fetching chunks.",
        )?;
        sample(out, name, &[], &[], m.transfers_in_progress)?;
        let name = "fleetcast_duplicate_chunk_bytes_total";
        header(
            out,
            name,
            "counter",
            "Bytes of chunks received that this agent already held (wasted transfer).",
        )?;
        sample(out, name, &[], &[], m.duplicate_bytes)
    }

    fn write_heads<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        let apps = &self.mesh.apps;
        let name = "fleetcast_heads_accepted_total";
        header(
            out,
            name,
            "counter",
            "Heads this agent verified and accepted (a newer seq for the app), whose release it then fetches and activates.",
        )?;
        for (app, h) in apps {
            sample(out, name, &[("app", app.as_str())], &[], h.accepted)?;
        }
        let name = "fleetcast_heads_refused_total";
        header(
            out,
            name,
            "counter",
            "Heads this agent refused, by reason (wrong-fleet, malformed, unsigned, untrusted, bad-signature, stale, conflict...); app (unknown) is an app it holds no verified head for.",
        )?;
        for (app, h) in apps {
            for (&reason, n) in &h.refused {
                sample(
                    out,
                    name,
                    &[("app", app.as_str()), ("reason", reason)],
                    &[],
                    n,
                )?;
            }
        }
        for (&reason, n) in &self.mesh.refused_unknown {
            sample(
                out,
                name,
                &[("app", UNKNOWN_APP), ("reason", reason)],
                &[],
                n,
            )?;
        }
        let name = "fleetcast_activations_total";
        header(
            out,
            name,
            "counter",
            "Activations of an accepted head's release on this agent, by result: ok (it serves) or failed (refused before the swap, or reverted after its trial, which follows an ok).",
        )?;
        for (app, h) in apps {
            let app = ("app", app.as_str());
            sample(out, name, &[app, ("result", "ok")], &[], h.activated)?;
            sample(out, name, &[app, ("result", "failed")], &[], h.failed)?;
        }
        Ok(())
    }

    fn write_serving<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        let apps = self.apps.as_deref().unwrap_or_default();
        let name = "fleetcast_app_serving_info";
        header(
            out,
            name,
            "gauge",
            "The release serving each app (always 1): its version, digest and state (committed, trial, reverted, local-override, activating).",
        )?;
        for a in apps {
            if let Some((version, digest)) = &a.serving {
                let labels = [
                    ("app", a.app.as_str()),
                    ("version", version.as_str()),
                    ("digest", digest.as_str()),
                    ("state", a.state),
                ];
                sample(out, name, &labels, &[], 1)?;
            }
        }
        let name = "fleetcast_app_seq";
        header(
            out,
            name,
            "gauge",
            "The seq of each app's head in force on this agent (the highest it holds).",
        )?;
        for a in apps {
            sample(out, name, &[("app", a.app.as_str())], &[], a.seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
