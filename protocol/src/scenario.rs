//! Whole-fleet scenarios over the simulator, and the figures they report. The test suite runs
//! them at a few hundred nodes with fixed seeds and asserts the targets; `cargo bench -p
//! fleetcast-protocol --bench mesh_sim` runs them at 10,000 nodes and prints the figures.
//! After a release a scenario can also count the fleet with a census ([`measure_census`]):
//! its round-trip time at the publisher and the census messages per node. Staged rollouts
//! (waves, gates, halts, resume) are in [`rollout`].

use std::fmt;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use crate::head::{Head, HeadKind, SignedHead, TrustPolicy};
use crate::membership::MembershipConfig;
use crate::node::NodeConfig;
use crate::release::{AppName, Release};
use crate::sim::{Id, Sim, SimConfig, addr_of, node_id};
use crate::trust::{Role, Roles, Root, SignedRoot, Trust};
use crate::wire::{Census, Focus, NodeId};

pub mod rollout;

/// One fleet-wide release scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub nodes: usize,
    /// Component size, bytes.
    pub size: usize,
    pub chunk_size: u32,
    pub net: SimConfig,
    /// Bootstrap contacts per node (random earlier nodes).
    pub contacts: usize,
    /// Active view size (default: the agent's, [`MembershipConfig`]'s default).
    pub active_size: usize,
    /// Fraction of nodes that crash mid-release (and stay down).
    pub crash_fraction: f64,
    /// When the crashes happen, after the publish.
    pub crash_at: Duration,
    /// Give up after this much simulated time.
    pub deadline: Duration,
    /// Also measure idle membership traffic for this long after the release.
    pub idle: Duration,
    /// Then count the fleet with a census of this budget, asked at node 0 (`None`: no census).
    pub census: Option<Duration>,
}

impl Scenario {
    /// The reference WAN model: 10–50 ms one way, 100 Mb/s up, 1% loss, 5 MiB.
    pub fn wan(nodes: usize, seed: u64) -> Self {
        Scenario {
            nodes,
            size: 5 * 1024 * 1024,
            chunk_size: 256 * 1024,
            net: SimConfig {
                seed,
                latency: (Duration::from_millis(10), Duration::from_millis(50)),
                upload_bps: Some(100_000_000),
                loss: 0.01,
                ..SimConfig::default()
            },
            contacts: 100,
            active_size: MembershipConfig::default().active_size,
            crash_fraction: 0.0,
            crash_at: Duration::from_millis(300),
            deadline: Duration::from_secs(60),
            idle: Duration::ZERO,
            census: Some(CENSUS_BUDGET),
        }
    }
}

/// The census budget scenarios ask with (what `fleetcast census` would send).
pub const CENSUS_BUDGET: Duration = Duration::from_secs(5);

/// What one census measured.
#[derive(Clone, Debug)]
pub struct CensusFigures {
    /// Live nodes when it was asked.
    pub live: usize,
    /// The root's answer (`None`: no answer by the budget and a second).
    pub count: Option<Census>,
    /// Query sent → answer received, at the publisher.
    pub round_trip: Option<Duration>,
    /// Census messages (queries and replies, the publisher's included) per live node.
    pub messages_per_node: f64,
}

impl fmt::Display for CensusFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rtt = self
            .round_trip
            .map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
        let (agents, unanswered, focus) = self
            .count
            .as_ref()
            .map_or((0, 0, 0), |c| (c.agents, c.unanswered, c.focus_active));
        write!(
            f,
            "  census:              {agents} agents of {} live, {unanswered} unanswered, {focus} on the focus; round trip {rtt}, {:.1} messages per node",
            self.live, self.messages_per_node
        )
    }
}

/// Asks census `id` at `entry` (the publisher connects to it) and runs until the answer is
/// back, at most `budget` and a second.
pub fn measure_census(
    sim: &mut Sim,
    entry: Id,
    id: u64,
    budget: Duration,
    focus: Option<Focus>,
) -> CensusFigures {
    let live = sim.live().len();
    let before = sim.traffic.census;
    sim.census(entry, id, budget, focus);
    let end = sim.now + budget + Duration::from_secs(1);
    sim.run_until(end, |s| s.publisher.censuses[&id].answered_at.is_some());
    let answer = &sim.publisher.censuses[&id];
    CensusFigures {
        live,
        count: answer.count.clone(),
        round_trip: answer.answered_at.map(|t| t - answer.asked_at),
        messages_per_node: (sim.traffic.census - before) as f64 / live.max(1) as f64,
    }
}

/// What a scenario measured.
#[derive(Clone, Debug)]
pub struct Figures {
    pub seed: u64,
    pub nodes: usize,
    pub live: usize,
    pub converged: usize,
    /// Publish → last live node accepted the head.
    pub head_all: Option<Duration>,
    /// Publish → last live node activated (has every byte).
    pub bytes_all: Option<Duration>,
    /// Publish → half / 90% of live nodes activated.
    pub bytes_p50: Option<Duration>,
    pub bytes_p90: Option<Duration>,
    /// Largest hop count at which a node got the head.
    pub max_hops: u16,
    /// S/B + ⌊log₂N⌋·c/B + depth·L, with depth = `max_hops` and L the mean latency.
    pub lower_bound: Option<Duration>,
    /// Payload bytes received beyond one copy per receiving node ÷ ((N−1)·S).
    pub duplicate_ratio: f64,
    /// Control bytes ÷ payload bytes.
    pub control_ratio: f64,
    /// Publisher payload egress ÷ S.
    pub publisher_egress: f64,
    /// Tally messages per node.
    pub tallies_per_node: f64,
    /// Active-count at the publisher (from tallies) at the end.
    pub publisher_count: u32,
    /// Idle membership traffic, bit/s per node.
    pub idle_bps_per_node: Option<f64>,
    /// A census after the release (with the release as its focus).
    pub census: Option<CensusFigures>,
}

impl Figures {
    pub fn bytes_vs_bound(&self) -> Option<f64> {
        Some(self.bytes_all?.as_secs_f64() / self.lower_bound?.as_secs_f64())
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| {
            d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
        };
        writeln!(
            f,
            "seed {} · {} nodes, {} live, {} converged",
            self.seed, self.nodes, self.live, self.converged
        )?;
        writeln!(f, "  head to 100%:        {}", ms(self.head_all))?;
        writeln!(
            f,
            "  bytes to 100%:       {}  (lower bound {}, ratio {})",
            ms(self.bytes_all),
            ms(self.lower_bound),
            self.bytes_vs_bound()
                .map_or("-".into(), |r| format!("{r:.2}×"))
        )?;
        writeln!(
            f,
            "  bytes to 50% / 90%:  {} / {}",
            ms(self.bytes_p50),
            ms(self.bytes_p90)
        )?;
        writeln!(f, "  last-delivery hops:  {}", self.max_hops)?;
        writeln!(
            f,
            "  duplicate payload:   {:.2}%",
            self.duplicate_ratio * 100.0
        )?;
        writeln!(
            f,
            "  control / payload:   {:.3}%",
            self.control_ratio * 100.0
        )?;
        writeln!(f, "  publisher egress:    {:.2}× S", self.publisher_egress)?;
        writeln!(
            f,
            "  tallies per node:    {:.2} (publisher counts {} active)",
            self.tallies_per_node, self.publisher_count
        )?;
        if let Some(b) = self.idle_bps_per_node {
            writeln!(f, "  idle membership:     {:.0} bit/s per node", b)?;
        }
        if let Some(c) = &self.census {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The publisher key of every scenario.
pub fn publisher_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Content of a given size (deterministic).
pub fn content(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ tag ^ (i >> 12) as u8)
        .collect()
}

/// A signed head for `app` at `seq` over `content`.
pub fn signed(app: &str, seq: u64, content: &[u8], chunk: u32, kind: HeadKind) -> SignedHead {
    let app = AppName::new(app).expect("valid app");
    let version = format!("1.0.{seq}").parse().expect("valid version");
    Head {
        fleet: "sim".into(),
        app: app.clone(),
        seq,
        release: Release::build(app, version, content, chunk).expect("valid release"),
        kind,
        issued_at_ms: seq,
        epoch: 0,
        plan: None,
    }
    .sign(&publisher_key())
}

/// A node config for simulated node `id` (contacts filled by [`fleet`]).
pub fn node_config(id: Id, active_size: usize) -> NodeConfig {
    let mut c = NodeConfig::new(
        node_id(id),
        TrustPolicy {
            fleet: "sim".into(),
            keys: vec![publisher_key().verifying_key()],
        },
    );
    c.seed = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xfeed;
    c.membership.active_size = active_size;
    c.swarm.chunk_timeout = Duration::from_secs(2);
    c.swarm.retry_after = Duration::from_millis(500);
    c.ihave_timeout = Duration::from_millis(150);
    c.anti_entropy_interval = Duration::from_secs(5);
    c
}

/// Builds a fleet of `n` nodes, each bootstrapping from up to `contacts` random earlier nodes,
/// and lets the overlay settle for `settle`.
pub fn fleet(
    n: usize,
    contacts: usize,
    active_size: usize,
    net: SimConfig,
    settle: Duration,
) -> Sim {
    fleet_with(n, contacts, net, settle, |id| node_config(id, active_size))
}

/// [`fleet`] with each node's config from `config` (its contacts are filled in here).
pub fn fleet_with(
    n: usize,
    contacts: usize,
    net: SimConfig,
    settle: Duration,
    config: impl Fn(Id) -> NodeConfig,
) -> Sim {
    let mut sim = Sim::new(net, Instant::now());
    for id in 0..n {
        let mut cfg = config(id);
        let k = contacts.min(id);
        let mut picks = Vec::with_capacity(k);
        while picks.len() < k {
            let c = sim.rng().below(id);
            if !picks.contains(&c) {
                picks.push(c);
            }
        }
        cfg.membership.contacts = picks.into_iter().map(addr_of).collect();
        sim.add(id, cfg);
    }
    sim.run(settle);
    sim
}

/// Whether every live node runs `seq` of `app`.
pub fn converged(sim: &Sim, app: &AppName, seq: u64) -> bool {
    sim.nodes
        .values()
        .filter(|n| n.alive())
        .all(|n| n.seq(app) == Some(seq) && n.activated_at.contains_key(&(app.clone(), seq)))
}

/// Runs one release through a settled fleet and measures it.
pub fn run_release(sc: &Scenario) -> Figures {
    let mut sim = fleet(
        sc.nodes,
        sc.contacts,
        sc.active_size,
        sc.net.clone(),
        Duration::from_secs(30),
    );
    measure_release(&mut sim, sc, 1)
}

/// Publishes seq `seq` of app "shop" into `sim` at node 0 and measures it.
pub fn measure_release(sim: &mut Sim, sc: &Scenario, seq: u64) -> Figures {
    let app = AppName::new("shop").expect("valid");
    let body = content(seq as u8, sc.size);
    let head = signed("shop", seq, &body, sc.chunk_size, HeadKind::Release);
    sim.traffic = Default::default();
    sim.record_events = false;
    let t0 = sim.now;
    sim.publish(0, head, body);
    if sc.crash_fraction > 0.0 {
        sim.run(sc.crash_at);
        let ids: Vec<Id> = (1..sc.nodes).collect();
        let k = (sc.nodes as f64 * sc.crash_fraction) as usize;
        let victims = sim.rng().sample(&ids, k);
        for v in victims {
            sim.crash(v);
        }
    }
    let key = (app.clone(), seq);
    sim.run_until(t0 + sc.deadline, |s| converged(s, &app, seq));
    let live: Vec<&crate::sim::SimNode> = sim.nodes.values().filter(|n| n.alive()).collect();
    let converged_n = live.iter().filter(|n| n.seq(&app) == Some(seq)).count();
    let all = converged_n == live.len();
    let last = |f: &dyn Fn(&crate::sim::SimNode) -> Option<Instant>| -> Option<Duration> {
        let mut worst = t0;
        for n in &live {
            worst = worst.max(f(n)?);
        }
        Some(worst - t0)
    };
    let head_all = last(&|n| n.accepted_at.get(&key).copied());
    let bytes_all = if all {
        last(&|n| n.activated_at.get(&key).copied())
    } else {
        None
    };
    let mut done_at: Vec<Duration> = live
        .iter()
        .filter_map(|n| n.activated_at.get(&key).map(|t| *t - t0))
        .collect();
    done_at.sort();
    let pct = |p: f64| -> Option<Duration> {
        let i = ((live.len() as f64 * p).ceil() as usize).saturating_sub(1);
        done_at.get(i).copied()
    };
    let (bytes_p50, bytes_p90) = (pct(0.5), pct(0.9));
    let max_hops = live
        .iter()
        .filter_map(|n| n.node.as_ref()?.round(&app))
        .max()
        .unwrap_or(0);
    let s = sc.size as f64;
    let receivers = (sc.nodes - 1) as f64;
    let traffic = sim.traffic.clone();
    let lower_bound = sc.net.upload_bps.map(|bps| {
        let b = bps as f64 / 8.0;
        let l = (sc.net.latency.0 + sc.net.latency.1).as_secs_f64() / 2.0;
        let log2n = (sc.nodes as f64).log2().floor();
        Duration::from_secs_f64(s / b + log2n * sc.chunk_size as f64 / b + max_hops as f64 * l)
    });
    let publisher_count = sim.publisher.tallies.get(&key).map_or(0, |t| t.active);
    let mut fig = Figures {
        seed: sc.net.seed,
        nodes: sc.nodes,
        live: live.len(),
        converged: converged_n,
        head_all,
        bytes_all,
        bytes_p50,
        bytes_p90,
        max_hops,
        lower_bound,
        duplicate_ratio: (traffic.payload as f64 - converged_n as f64 * s).max(0.0)
            / (receivers * s),
        control_ratio: traffic.control as f64 / traffic.payload.max(1) as f64,
        publisher_egress: traffic.publisher_egress as f64 / s,
        tallies_per_node: traffic.tallies as f64 / sc.nodes as f64,
        publisher_count,
        idle_bps_per_node: None,
        census: None,
    };
    // Let the tallies settle, then count the publisher's view.
    sim.run(Duration::from_secs(2));
    fig.publisher_count = sim
        .publisher
        .tallies
        .get(&key)
        .map_or(fig.publisher_count, |t| t.active);
    fig.tallies_per_node = sim.traffic.tallies as f64 / sc.nodes as f64;
    if !sc.idle.is_zero() {
        sim.traffic = Default::default();
        sim.run(sc.idle);
        let bits = sim.traffic.control as f64 * 8.0;
        fig.idle_bps_per_node = Some(bits / sc.nodes as f64 / sc.idle.as_secs_f64());
    }
    if let Some(budget) = sc.census {
        let focus = Focus { app, seq };
        fig.census = Some(measure_census(sim, 0, seq, budget, Some(focus)));
    }
    fig
}

/// The root key of the scenarios' fleet roots (one key, threshold 1: it signs every step as
/// both the old and the new root key).
pub fn root_key() -> SigningKey {
    SigningKey::from_bytes(&[0x40; 32])
}

/// Release key `i` of the fleet roots (key 0 is [`publisher_key`]).
pub fn release_key(i: u8) -> SigningKey {
    if i == 0 {
        publisher_key()
    } else {
        SigningKey::from_bytes(&[0x60 + i; 32])
    }
}

fn role_of(key: &SigningKey) -> Role {
    Role::new(vec![crate::head::PublicKey::from(&key.verifying_key())], 1)
}

/// Root version 1 of fleet `sim`: release key 0, issued at 1 ms, expiring at `expires_ms`.
pub fn first_root(expires_ms: u64) -> SignedRoot {
    Root {
        fleet: "sim".into(),
        version: 1,
        epoch: 1,
        issued_ms: 1,
        expires_ms,
        roles: Roles {
            root: role_of(&root_key()),
            release: role_of(&release_key(0)),
            nodes: role_of(&root_key()),
        },
        revoked: Vec::new(),
    }
    .sign(&root_key())
}

/// The root after `prev`, issued at `issued_ms` and expiring at `expires_ms`: release key
/// `release` (a new key starts a new epoch) and `revoked` added to what `prev` revokes.
pub fn next_root(
    prev: &SignedRoot,
    issued_ms: u64,
    expires_ms: u64,
    release: u8,
    revoked: &[NodeId],
) -> SignedRoot {
    let mut r = prev.root.next(issued_ms, expires_ms);
    r.roles.release = role_of(&release_key(release));
    r.revoked.extend_from_slice(revoked);
    r.fix_epoch(&prev.root);
    r.sign(&root_key())
}

/// `n` roots after `prev`, each issued 1 ms after the other, the same roles.
pub fn chain_after(prev: &SignedRoot, n: usize, expires_ms: u64) -> Vec<SignedRoot> {
    let mut out: Vec<SignedRoot> = Vec::with_capacity(n);
    for _ in 0..n {
        let last = out.last().unwrap_or(prev);
        let release = u8::from(last.root.roles.release != role_of(&release_key(0)));
        let next = next_root(last, last.root.issued_ms + 1, expires_ms, release, &[]);
        out.push(next);
    }
    out
}

/// A signed head for `app` at `seq` in `epoch`, signed by release key `key`.
pub fn signed_in(
    app: &str,
    seq: u64,
    epoch: u64,
    content: &[u8],
    chunk: u32,
    key: u8,
    issued_at_ms: u64,
) -> SignedHead {
    let app = AppName::new(app).expect("valid app");
    let version = format!("1.{epoch}.{}", seq % 1_000_000)
        .parse()
        .expect("valid version");
    Head {
        fleet: "sim".into(),
        app: app.clone(),
        seq,
        release: Release::build(app, version, content, chunk).expect("valid release"),
        kind: HeadKind::Release,
        issued_at_ms,
        epoch,
        plan: None,
    }
    .sign(&release_key(key))
}

/// [`node_config`] for a fleet anchored at `anchor` (a fleet root instead of `trusted_keys`).
pub fn rooted_config(id: Id, active_size: usize, anchor: &SignedRoot) -> NodeConfig {
    let mut c = node_config(id, active_size);
    c.trust = Trust::with_root(anchor.clone()).expect("a self-signed root");
    c
}

/// Runs until every live node holds root `version` or `deadline` passes; returns how long it
/// took from now.
pub fn time_to_root(sim: &mut Sim, version: u64, deadline: Duration) -> Option<Duration> {
    let t0 = sim.now;
    let all = |s: &Sim| {
        s.nodes
            .values()
            .filter(|n| n.alive())
            .all(|n| n.root_version() >= version)
    };
    sim.run_until(t0 + deadline, all)
        .then(|| sim.now.saturating_duration_since(t0))
}

/// What one fleet root rotation measured.
#[derive(Clone, Debug)]
pub struct RotationFigures {
    pub nodes: usize,
    /// Root pushed at node 0 → every live node holds it.
    pub root_to_100: Option<Duration>,
    /// Control bytes per node until then (everything the mesh sent, membership included).
    pub control_bytes_per_node: f64,
    /// Then a head of the new epoch, pushed at node 0 → every live node runs it.
    pub head_to_100: Option<Duration>,
}

impl fmt::Display for RotationFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| {
            d.map_or("not reached".to_string(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            })
        };
        writeln!(f, "  nodes:               {}", self.nodes)?;
        writeln!(f, "  root to 100%:        {}", ms(self.root_to_100))?;
        writeln!(
            f,
            "  control per node:    {:.0} bytes until then",
            self.control_bytes_per_node
        )?;
        writeln!(f, "  new-epoch head 100%: {}", ms(self.head_to_100))
    }
}

/// A settled fleet anchored at root v1 gets root v2 (a new release key: epoch 2) at node 0,
/// then a head of the new epoch; measures both.
pub fn run_rotation(sc: &Scenario) -> RotationFigures {
    let v1 = first_root(u64::MAX);
    let mut sim = fleet_with(
        sc.nodes,
        sc.contacts,
        sc.net.clone(),
        Duration::from_secs(30),
        |id| rooted_config(id, sc.active_size, &v1),
    );
    sim.record_events = false;
    sim.traffic = Default::default();
    let v2 = next_root(&v1, 100, u64::MAX, 1, &[]);
    sim.push_roots(0, vec![v2]);
    let root_to_100 = time_to_root(&mut sim, 2, sc.deadline);
    let control_bytes_per_node = sim.traffic.control as f64 / sc.nodes as f64;
    let app = AppName::new("shop").expect("valid");
    let body = content(9, sc.size);
    let t0 = sim.now;
    sim.publish(
        0,
        signed_in("shop", 1, 2, &body, sc.chunk_size, 1, 200),
        body,
    );
    let done = sim.run_until(t0 + sc.deadline, |s| converged(s, &app, 1));
    RotationFigures {
        nodes: sc.nodes,
        root_to_100,
        control_bytes_per_node,
        head_to_100: done.then(|| sim.now.saturating_duration_since(t0)),
    }
}
