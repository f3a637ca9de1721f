//! The `--json` schema: every object the CLI prints with `--json`, in one place. README.md
//! ("For scripts") documents each field; a change here is a change of that contract.
//!
//! Each object is one line on stdout with an `"event"` field naming its kind. A command that
//! prints one result prints one object (`keygen`, `status`, `history`, `demo`); `release` and
//! `rollback` print events as they happen (`pushed`, `peer`, `agent`, `progress`, `census`) and
//! end with `done`. A failure ends with `error` instead, whatever the command.
//!
//! A staged rollout (`release --waves`, `rollout resume`) prints `pushed` for every head it
//! signs (one per wave), `rollout` whenever the open wave's numbers or verdict change (see
//! [`Rollout`]), and ends with `done` (`result: "promoted"`) or, halted by a gate, with
//! `halted` ([`Halted`]) then `error` (code 5, kind `halted`). `rollout abort` ends with
//! `halted` (gate null) then `done` (`result: "aborted"`); `rollout pause` with `done`
//! (`result: "paused"`); `rollout status` prints one `rollout-status` ([`RolloutStatus`]).

use fleetcast_protocol::wire::{
    Census, CensusEntry, Missing, NodeStatus, Outcome, Report, ServeState, Tally,
};
use fleetcast_protocol::{AppStatus, Release};
use serde::Serialize;

use crate::error::CliError;

mod rollout;
pub use rollout::{
    GatesJson, Halted, HealthJson, PlanJson, Rollout, RolloutStatus, VerdictJson, WaveCounts,
};

/// One line of `--json` output.
#[derive(Serialize, Debug)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Keygen(Keygen),
    Status(Box<Status>),
    History(History),
    Pushed(Pushed),
    Peer(AgentOutcome),
    Agent(AgentOutcome),
    Progress(Progress),
    Census(CensusEvent),
    Done(Done),
    Signed(Signed),
    Root(RootEvent),
    Fleet(Box<FleetShow>),
    Enrolled(Enrolled),
    RootsPushed(RootsPushed),
    Demo(Demo),
    Rollout(Box<Rollout>),
    RolloutStatus(Box<RolloutStatus>),
    Halted(Halted),
    Error(Error),
}

/// `fleetcast keygen`.
#[derive(Serialize, Debug)]
pub struct Keygen {
    /// Path of the secret key file.
    pub secret_file: String,
    /// Path of the public key file (give it to every agent).
    pub public_file: String,
    /// The public key, hex.
    pub public_key: String,
}

/// A release as the CLI names it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ReleaseRef {
    pub version: String,
    /// BLAKE3-256 of the component, hex (64 characters).
    pub digest: String,
    pub size: u64,
}

impl From<&Release> for ReleaseRef {
    fn from(r: &Release) -> Self {
        ReleaseRef {
            version: r.version.to_string(),
            digest: r.digest.to_hex(),
            size: r.size,
        }
    }
}

/// `fleetcast status`.
#[derive(Serialize, Debug)]
pub struct Status {
    /// The agent's node id, hex.
    pub node: String,
    pub fleet: String,
    /// The agent's clock when it answered (unix ms; 0 when it does not say).
    pub now_ms: u64,
    /// Open QUIC connections of any role (neighbours, probes, joins, clients such as this one).
    pub links: u32,
    /// The mesh neighbours (the active view).
    pub neighbours: Vec<Neighbour>,
    /// Agents known for repair (the passive view's size).
    pub passive_view: u32,
    pub apps: Vec<App>,
    /// The highest seq the agent accepted per app (a release still fetching or failed holds its
    /// seq too).
    pub seqs: Vec<AppSeq>,
    /// The whole fleet's count per head, as settled where it entered the mesh.
    pub fleet_tallies: Vec<TallyJson>,
    /// This agent's subtree of the broadcast tree, per head.
    pub tallies: Vec<TallyJson>,
    /// The fleet root the agent holds (version 0: none, a `trusted_keys` lab fleet).
    pub trust: TrustJson,
    /// The census of the live fleet through this agent; `null` when it did not answer.
    pub census: Option<CensusCount>,
    /// Why there is no census, when there is none.
    pub census_error: Option<String>,
}

/// The agent's fleet root: version, epoch, expiry, release threshold.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TrustJson {
    /// 0: no root (`trusted_keys`, a lab setting).
    pub version: u64,
    pub epoch: u64,
    pub issued_ms: u64,
    /// `null`: never (no root).
    pub expires_ms: Option<u64>,
    pub expired: bool,
    pub expires_soon: bool,
    pub release_keys: u32,
    pub release_threshold: u32,
    pub revoked: u32,
}

impl From<&fleetcast_protocol::TrustStatus> for TrustJson {
    fn from(t: &fleetcast_protocol::TrustStatus) -> Self {
        TrustJson {
            version: t.version,
            epoch: t.epoch,
            issued_ms: t.issued_ms,
            expires_ms: (t.expires_ms != u64::MAX).then_some(t.expires_ms),
            expired: t.expired,
            expires_soon: t.expires_soon,
            release_keys: t.release_keys,
            release_threshold: t.release_threshold,
            revoked: t.revoked,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct Neighbour {
    pub node: String,
    pub addr: String,
}

#[derive(Serialize, Debug)]
pub struct AppSeq {
    pub app: String,
    pub seq: u64,
    /// The fleet root's epoch the seq counts in (0: no root).
    pub epoch: u64,
}

/// One app on the agent.
#[derive(Serialize, Debug)]
pub struct App {
    pub app: String,
    /// `committed`, `trial`, `reverted`, `local-override`, `activating`, or `active` when the
    /// agent does not say more.
    pub state: String,
    /// The head in force: its seq, kind and release.
    pub seq: u64,
    pub kind: String,
    pub version: String,
    pub digest: String,
    pub issued_at_ms: u64,
    /// What serves when it is not the head's release (reverted, or a local override).
    pub serving: Option<ReleaseRef>,
    pub local_override: bool,
    /// Why the latest head for the app failed here, if it did.
    pub last_error: Option<String>,
    /// Since when the serving release serves (agent's clock, unix ms), when known.
    pub since_ms: Option<u64>,
    pub trial: Option<Trial>,
    pub limits: Option<Limits>,
}

#[derive(Serialize, Debug)]
pub struct Trial {
    pub version: String,
    pub seq: u64,
    pub elapsed_ms: u64,
    /// The trial passes after this many requests (0: no request bound)...
    pub requests: u64,
    /// ...or this many seconds, whichever comes first.
    pub secs: u64,
    pub seen: u64,
    pub failed: u64,
}

#[derive(Serialize, Debug)]
pub struct Limits {
    pub max_memory_mib: u64,
    pub request_timeout_ms: u64,
    pub max_concurrent: u32,
    pub max_body_bytes: u64,
    pub fuel: Option<u64>,
    pub health_path: Option<String>,
}

/// A fleet count for one head.
#[derive(Serialize, Debug)]
pub struct TallyJson {
    pub app: Option<String>,
    pub seq: u64,
    pub active: u32,
    pub failed: u32,
    pub rejected: u32,
    /// A few of the agents that did not activate it, with their reasons.
    pub samples: Vec<AgentOutcome>,
}

impl From<&Tally> for TallyJson {
    fn from(t: &Tally) -> Self {
        TallyJson {
            app: t.app.as_ref().map(|a| a.to_string()),
            seq: t.seq,
            active: t.active,
            failed: t.failed,
            rejected: t.rejected,
            samples: t.samples.iter().map(AgentOutcome::from).collect(),
        }
    }
}

/// What one agent did with a head (`peer`: the agent the CLI talks to; `agent`: another one,
/// from the fleet's count).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct AgentOutcome {
    pub node: String,
    /// `active`, `failed`, `rejected`, `stale` or `prefetched` (outside a staged wave: the
    /// release is stored and compiled, ready to swap).
    pub outcome: String,
    pub reason: Option<String>,
}

impl From<&Report> for AgentOutcome {
    fn from(r: &Report) -> Self {
        let (outcome, reason) = outcome_parts(&r.outcome);
        AgentOutcome {
            node: r.node.to_string(),
            outcome: outcome.into(),
            reason,
        }
    }
}

/// An outcome's name and reason.
pub fn outcome_parts(o: &Outcome) -> (&'static str, Option<String>) {
    match o {
        Outcome::Active => ("active", None),
        Outcome::Failed(r) => ("failed", Some(r.clone())),
        Outcome::Rejected(r) => ("rejected", Some(r.clone())),
        Outcome::Prefetched => ("prefetched", None),
        Outcome::Stale { current } => (
            "stale",
            Some(format!("the agent already holds seq {current}")),
        ),
    }
}

/// A census count.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CensusCount {
    /// Live agents counted (each once).
    pub agents: u32,
    /// Neighbours that did not answer in time: their subtrees are not counted.
    pub unanswered: u32,
    /// Agents per app, head and what serves there.
    pub entries: Vec<Entry>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Entry {
    pub app: String,
    pub seq: u64,
    pub version: String,
    pub digest: String,
    /// `active` (the head's release serves), `reverted` (it failed there; an older one
    /// serves) or `override` (an operator chose what serves there).
    pub state: String,
    pub agents: u32,
}

impl From<&Census> for CensusCount {
    fn from(c: &Census) -> Self {
        CensusCount {
            agents: c.agents,
            unanswered: c.unanswered,
            entries: c.entries.iter().map(Entry::from).collect(),
        }
    }
}

impl From<&CensusEntry> for Entry {
    fn from(e: &CensusEntry) -> Self {
        Entry {
            app: e.app.to_string(),
            seq: e.seq,
            version: e.version.to_string(),
            digest: e.digest.to_hex(),
            state: serve_state(e.state).into(),
            agents: e.agents,
        }
    }
}

pub fn serve_state(s: ServeState) -> &'static str {
    match s {
        ServeState::Active => "active",
        ServeState::Reverted => "reverted",
        ServeState::Override => "override",
    }
}

/// An agent that does not run the release followed.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct MissingJson {
    pub node: String,
    pub addr: Option<String>,
    /// The highest seq it accepted for the app (0: none).
    pub seq: u64,
    /// What it says: `fetching …`, `failed: …`, `reverted to 1.0.0`, `newer seq 7`, `no release`.
    pub why: String,
}

impl From<&Missing> for MissingJson {
    fn from(m: &Missing) -> Self {
        MissingJson {
            node: m.node.to_string(),
            addr: m.addr.map(|a| a.to_string()),
            seq: m.seq,
            why: m.why.clone(),
        }
    }
}

/// `release` / `rollback`: the head was signed and pushed to the peer agent.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Pushed {
    /// `release` or `rollback` (the head's kind).
    pub kind: String,
    pub app: String,
    pub seq: u64,
    /// The fleet root's epoch the head is signed under (0: no root).
    pub epoch: u64,
    pub release: ReleaseRef,
    /// The version the head in force had before (null for an app's first release).
    pub from_version: Option<String>,
    /// `release`, `back` (to a lower version) or `forward` (to a higher one).
    pub direction: String,
    /// Another version in the history with the very same bytes, if there is one.
    pub same_bytes_as: Option<String>,
    /// The address that answered, and the agent's node id.
    pub peer: String,
    pub peer_node: String,
}

/// The fleet's count changed (counted up the broadcast tree to the peer agent).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Progress {
    pub active: u32,
    pub failed: u32,
    pub rejected: u32,
    /// Content this CLI served (the mesh swarms the rest).
    pub chunks_served: u64,
    pub bytes_served: u64,
}

/// A census taken while following a release. `agents`, `unanswered`, `active` and `missing`
/// are null and `error` says why when the agent did not answer.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CensusEvent {
    pub agents: Option<u32>,
    pub unanswered: Option<u32>,
    /// Live agents running the release followed.
    pub active: Option<u32>,
    /// A sample of the live agents that do not (bounded; `more_missing` counts the rest).
    pub missing: Option<Vec<MissingJson>>,
    pub more_missing: Option<u32>,
    pub error: Option<String>,
}

/// The last line of a `release` / `rollback` that succeeded.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Done {
    /// `active` (the peer runs it; with `--wait`, the fleet does) or `already-active` (nothing
    /// was pushed).
    pub result: String,
    pub kind: String,
    pub app: String,
    pub seq: u64,
    pub release: ReleaseRef,
    /// Agents that run it: the census's count, else the fleet's tally.
    pub active: u32,
    /// Live agents counted by a complete census; null without one (no answer, or some
    /// neighbours did not answer in time).
    pub agents: Option<u32>,
    pub failed: u32,
    pub rejected: u32,
    pub chunks_served: u64,
    pub bytes_served: u64,
}

/// `fleetcast history`.
#[derive(Serialize, Debug)]
pub struct History {
    pub node: String,
    pub app: String,
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
}

#[derive(Serialize, Debug)]
pub struct HistoryEntry {
    pub seq: u64,
    /// `release` or `rollback`.
    pub kind: String,
    pub release: ReleaseRef,
    /// When the head was signed (the publisher's clock, unix ms).
    pub issued_at_ms: u64,
    /// This is the release that serves on the agent.
    pub serves: bool,
}

/// `release --sign-only` and `sign`: a head file written.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Signed {
    pub head_file: String,
    pub app: String,
    /// `release` or `rollback`.
    pub kind: String,
    pub seq: u64,
    pub epoch: u64,
    pub release: ReleaseRef,
    /// The keys that signed, hex, in order.
    pub signatures: Vec<String>,
    /// Distinct release-key signatures counted (against --fleet's root when given).
    pub have: usize,
    /// The release threshold, when known (--fleet DIR, or the agent's status).
    pub need: Option<u32>,
    /// `have` meets `need` (or `need` is unknown): ready to push.
    pub complete: bool,
}

/// `fleet init`, `fleet rotate`, `node revoke`: a root version written.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RootEvent {
    /// `init`, `rotate` or `revoke`.
    pub action: String,
    pub fleet: String,
    pub version: u64,
    pub epoch: u64,
    pub expires_ms: u64,
    /// The files written (root.json, roots/N.json, new keys).
    pub files: Vec<String>,
}

/// `fleet show`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct FleetShow {
    pub fleet: String,
    pub version: u64,
    pub epoch: u64,
    pub issued_ms: u64,
    pub expires_ms: u64,
    /// `root`, `release`, `nodes`, in that order.
    pub roles: Vec<RoleJson>,
    /// Revoked node ids, hex.
    pub revoked: Vec<String>,
    /// Every version in the directory, oldest first.
    pub versions: Vec<VersionJson>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RoleJson {
    pub role: String,
    pub threshold: u32,
    pub keys: Vec<KeyJson>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct KeyJson {
    /// Its file name in keys/ (`release-1`), or null when no .pub there holds it.
    pub name: Option<String>,
    pub key: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct VersionJson {
    pub version: u64,
    pub epoch: u64,
    pub issued_ms: u64,
    pub expires_ms: u64,
    pub signatures: usize,
}

/// `node enroll`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Enrolled {
    pub node: String,
    pub fleet: String,
    pub cert_file: String,
    pub expires_ms: u64,
}

/// `fleet push`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RootsPushed {
    pub peer: String,
    pub peer_node: String,
    /// Root versions sent.
    pub sent: Vec<u64>,
    /// The version the agent holds after.
    pub agent_version: u64,
    pub agent_epoch: u64,
}

/// `fleetcast demo`.
#[derive(Serialize, Debug)]
pub struct Demo {
    pub ok: bool,
    pub agents: usize,
    /// The demo directory, when kept (`--keep`).
    pub kept: Option<String>,
    /// Why the demo failed, if it did.
    pub message: Option<String>,
}

/// The last line of any command that failed.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Error {
    /// The exit code.
    pub code: u8,
    /// `refused`, `usage`, `unreachable`, `timeout`, `halted` (a gate halted a staged
    /// rollout) or `superseded` (another head took the rollout over).
    pub kind: String,
    pub message: String,
}

impl From<&CliError> for Error {
    fn from(e: &CliError) -> Self {
        Error {
            code: e.code(),
            kind: e.kind.name().into(),
            message: e.message.clone(),
        }
    }
}

/// The status object of `st` (with the census, or why there is none).
pub fn status(
    st: &NodeStatus,
    census: Option<&Census>,
    census_error: Option<String>,
    state_of: impl Fn(&AppStatus) -> String,
) -> Status {
    let runtime = |app: &AppStatus| st.runtime.iter().find(|r| r.app == app.app);
    Status {
        node: st.node.to_string(),
        fleet: st.fleet.clone(),
        now_ms: st.now_ms,
        links: st.links,
        neighbours: st
            .active_view
            .iter()
            .map(|p| Neighbour {
                node: p.node.to_string(),
                addr: p.addr.to_string(),
            })
            .collect(),
        passive_view: st.passive_view,
        apps: st
            .apps
            .iter()
            .map(|a| {
                let rt = runtime(a);
                App {
                    app: a.app.to_string(),
                    state: state_of(a),
                    seq: a.seq,
                    kind: a.kind.to_string(),
                    version: a.active.version.to_string(),
                    digest: a.active.digest.to_hex(),
                    issued_at_ms: a.issued_at_ms,
                    serving: a.serving.as_ref().map(ReleaseRef::from),
                    local_override: a.local_override,
                    last_error: a.last_error.clone(),
                    since_ms: rt.filter(|r| r.since_ms > 0).map(|r| r.since_ms),
                    trial: rt.and_then(|r| r.trial.as_ref()).map(|t| Trial {
                        version: t.version.to_string(),
                        seq: t.seq,
                        elapsed_ms: t.elapsed_ms,
                        requests: t.requests,
                        secs: t.secs,
                        seen: t.seen,
                        failed: t.failed,
                    }),
                    limits: rt.and_then(|r| r.limits.as_ref()).map(|l| Limits {
                        max_memory_mib: l.max_memory_mib,
                        request_timeout_ms: l.request_timeout_ms,
                        max_concurrent: l.max_concurrent,
                        max_body_bytes: l.max_body_bytes,
                        fuel: l.fuel,
                        health_path: l.health_path.clone(),
                    }),
                }
            })
            .collect(),
        seqs: st
            .seqs
            .iter()
            .map(|(a, s)| AppSeq {
                app: a.to_string(),
                seq: s.seq,
                epoch: s.epoch,
            })
            .collect(),
        fleet_tallies: st.fleet_tallies.iter().map(TallyJson::from).collect(),
        tallies: st.tallies.iter().map(TallyJson::from).collect(),
        trust: (&st.trust).into(),
        census: census.map(CensusCount::from),
        census_error,
    }
}

/// One JSON line.
pub fn line(e: &Event) -> String {
    serde_json::to_string(e).expect("the CLI's JSON types serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_names_its_event_and_errors_carry_code_and_kind() {
        let e = CliError::timeout("2 of 3 agents run hello 2.0.0");
        let v: serde_json::Value = serde_json::from_str(&line(&Event::Error((&e).into()))).unwrap();
        assert_eq!(v["event"], "error");
        assert_eq!(v["code"], 4);
        assert_eq!(v["kind"], "timeout");
        assert_eq!(v["message"], "2 of 3 agents run hello 2.0.0");
        let p = Event::Progress(Progress {
            active: 2,
            failed: 1,
            rejected: 0,
            chunks_served: 3,
            bytes_served: 4096,
        });
        let v: serde_json::Value = serde_json::from_str(&line(&p)).unwrap();
        assert_eq!(v["event"], "progress");
        assert_eq!(v["active"], 2);
        assert_eq!(v["bytes_served"], 4096);
    }
}
