//! The simulated runtime around each node's apps: which release serves, the requests it
//! answers (a per-node rate, an error share and a latency per release), its trial (failing on
//! a hash share of the nodes, then reverted), and the health the shell feeds the node.
//!
//! A node's serving state per app is a [`Running`]: the release that serves, its counts since
//! it was swapped in here, and the release it replaced with that one's counts before the swap.
//! Every [`Workload::health_every`] the shell accounts the requests served since the last
//! time and, while the app's newest head carries a rollout plan for the release that serves,
//! feeds [`Input::Health`] (`new` = the serving release's counts, `old` = the replaced one's).
//!
//! **Invariant:** everything here is a pure function of the seed and the event order: which
//! nodes fail a trial is a hash of (seed, release digest, node id), request counts are the rate
//! times simulated time, errors the exact share of them (rounded down).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::node::Input;
use crate::release::{AppName, Digest, Release};
use crate::rollout::{Health, latency_slot};

use super::{Delivery, Id, Sim, node_id};

/// How one release behaves on the simulated nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Share of the nodes (basis points) on which its trial fails: those whose hash of
    /// (seed, digest, node) falls below it. The shell reverts them [`Workload::trial`] after
    /// the swap.
    pub trial_fail_bp: u16,
    /// Share of its requests (basis points) that answer 5xx, without trapping.
    pub error_bp: u16,
    /// How long each of its requests takes.
    pub latency: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            trial_fail_bp: 0,
            error_bp: 0,
            latency: Duration::from_millis(4),
        }
    }
}

/// The simulated traffic and runtime faults: see the module docs. The default serves no
/// requests and fails no trial (what the release tests before rollouts assumed).
#[derive(Clone, Debug)]
pub struct Workload {
    /// Requests each node serves per second (0: no requests, no health fed).
    pub rps: u32,
    /// How often a node feeds its health.
    pub health_every: Duration,
    /// How long a release's trial runs before a failing one is reverted.
    pub trial: Duration,
    /// How long an activation from the store takes (the compiled artifact is loaded and
    /// swapped in; `None`: [`SimConfig::activate_delay`](super::SimConfig::activate_delay)
    /// like a compile). Activating the release that already serves answers at once.
    pub swap: Option<Duration>,
    /// Releases that behave otherwise than [`Behaviour::default`], by digest.
    pub releases: BTreeMap<Digest, Behaviour>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            rps: 0,
            health_every: Duration::from_secs(1),
            trial: Duration::from_secs(1),
            swap: None,
            releases: BTreeMap::new(),
        }
    }
}

impl Workload {
    pub fn behaviour(&self, digest: &Digest) -> Behaviour {
        self.releases.get(digest).cloned().unwrap_or_default()
    }

    /// Whether release `digest`'s trial fails on node `id` (run `seed`).
    pub fn fails_trial(&self, seed: u64, digest: &Digest, id: Id) -> bool {
        let share = self.behaviour(digest).trial_fail_bp;
        if share == 0 {
            return false;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"fleetcast/sim/trial\0");
        h.update(&seed.to_le_bytes());
        h.update(&digest.0);
        h.update(&node_id(id).0);
        let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
        (((u128::from(x)) * 10_000) >> 64) < u128::from(share)
    }
}

/// What serves one app on a simulated node.
#[derive(Clone, Debug)]
pub struct Running {
    pub release: Release,
    /// Requests it served here since it was swapped in.
    pub health: Health,
    /// The release it replaced here, with that one's counts before the swap.
    pub before: Option<(Release, Health)>,
    /// When requests were last accounted, and the fraction of a request carried over (in
    /// thousandths).
    accrued: Instant,
    carry: u64,
}

impl Running {
    fn new(release: Release, before: Option<(Release, Health)>, now: Instant) -> Self {
        Running {
            release,
            health: Health::default(),
            before,
            accrued: now,
            carry: 0,
        }
    }

    /// Accounts the requests served up to `now`.
    fn accrue(&mut self, now: Instant, w: &Workload) {
        let ms = now.saturating_duration_since(self.accrued).as_millis() as u64;
        self.accrued = now;
        let total = u64::from(w.rps) * ms + self.carry;
        let (n, carry) = (total / 1000, total % 1000);
        self.carry = carry;
        if n == 0 {
            return;
        }
        let b = w.behaviour(&self.release.digest);
        let h = &mut self.health;
        h.requests += n;
        let errors = h.requests * u64::from(b.error_bp) / 10_000;
        h.errors = errors.max(h.errors);
        h.latency[latency_slot(b.latency)] += n;
    }
}

impl Sim {
    /// Sets the workload and starts every live node's health reports (staggered over one
    /// period).
    pub fn set_workload(&mut self, w: Workload) {
        self.workload = w;
        let now = self.now;
        for id in self.live() {
            let n = self.nodes.get_mut(&id).expect("live");
            for r in n.runs.values_mut() {
                r.accrued = now;
                r.carry = 0;
            }
            self.arm_health(id);
        }
    }

    /// Starts node `id`'s health reports (a new chain: an older one stops).
    pub(super) fn arm_health(&mut self, id: Id) {
        if self.workload.rps == 0 {
            return;
        }
        let n = self.nodes.get_mut(&id).expect("exists");
        n.health_gen += 1;
        let gen_ = n.health_gen;
        let every = self.workload.health_every.max(Duration::from_millis(1));
        let offset = every.mul_f64((id as u64).wrapping_mul(7919) as f64 % 1000.0 / 1000.0);
        let at = self.now + offset;
        self.schedule(at, id, Delivery::Health(gen_));
    }

    /// A health period ended on node `id`: account the requests, feed what the node counts.
    pub(super) fn health_tick(&mut self, id: Id, gen_: u64) {
        let now = self.now;
        let w = self.workload.clone();
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.health_gen != gen_ || n.node.is_none() {
            return;
        }
        let mut feed = Vec::new();
        for (app, r) in n.runs.iter_mut() {
            r.accrue(now, &w);
            let node = n.node.as_ref().expect("live");
            let rollout = node.newest_head(app).is_some_and(|h| {
                h.head.plan.is_some() && h.head.release.digest == r.release.digest
            });
            if rollout {
                let old = r.before.as_ref().map(|b| b.1.clone()).unwrap_or_default();
                feed.push(Input::Health {
                    app: app.clone(),
                    digest: r.release.digest,
                    new: r.health.clone(),
                    old,
                });
            }
        }
        for input in feed {
            self.input(id, input);
        }
        let at = now + w.health_every.max(Duration::from_millis(1));
        self.schedule(at, id, Delivery::Health(gen_));
    }

    /// How long activating `release` of `app` takes on node `id` (`stored`: from the store).
    pub(super) fn activation_delay(
        &self,
        id: Id,
        app: &AppName,
        digest: &Digest,
        stored: bool,
    ) -> Duration {
        let running = self.nodes[&id].runs.get(app).map(|r| r.release.digest);
        if running == Some(*digest) {
            Duration::ZERO
        } else if stored {
            self.workload.swap.unwrap_or(self.cfg.activate_delay)
        } else {
            self.cfg.activate_delay
        }
    }

    /// Node `id` activated `seq` of `app` (its record is on disk): the record's release serves
    /// now (nothing changes when it already did); a release whose trial fails here is
    /// reverted after [`Workload::trial`].
    pub(super) fn swapped(&mut self, id: Id, app: &AppName, seq: u64) {
        let now = self.now;
        let seed = self.cfg.seed;
        let n = self.nodes.get_mut(&id).expect("exists");
        let Some(rec) = n.disk.records.get(app).filter(|r| r.head.head.seq == seq) else {
            return;
        };
        let release = rec.head.head.release.clone();
        let digest = release.digest;
        let w = &self.workload;
        if let Some(r) = n.runs.get_mut(app) {
            if r.release.digest == digest {
                return;
            }
            r.accrue(now, w);
        }
        let before = n.runs.remove(app).map(|r| (r.release, r.health));
        n.runs
            .insert(app.clone(), Running::new(release, before, now));
        n.ran.entry(digest).or_insert(now);
        if w.fails_trial(seed, &digest, id) {
            let at = now + w.trial;
            self.schedule(at, id, Delivery::Trial(app.clone(), digest));
        }
    }

    /// The trial of release `digest` of `app` failed on node `id`: the shell goes back to the
    /// release it replaced and tells the node.
    pub(super) fn trial_failed(&mut self, id: Id, app: AppName, digest: Digest) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.node.is_none() {
            return;
        }
        let Some(r) = n.runs.get(&app).filter(|r| r.release.digest == digest) else {
            return;
        };
        let Some(seq) = n
            .disk
            .records
            .get(&app)
            .filter(|rec| rec.head.head.release.digest == digest)
            .map(|rec| rec.head.head.seq)
        else {
            return;
        };
        let before = r.before.clone();
        let serving = before.as_ref().map(|b| b.0.clone());
        match before {
            Some((release, health)) => {
                let mut back = Running::new(release, None, now);
                back.health = health;
                n.runs.insert(app.clone(), back);
            }
            None => {
                n.runs.remove(&app);
            }
        }
        n.reverted.entry(digest).or_insert(now);
        n.trials_failed += 1;
        let reason = "trial failed: the release answered errors in its trial".to_string();
        self.input(
            id,
            Input::Reverted {
                app,
                seq,
                reason,
                serving,
            },
        );
    }
}

impl super::SimNode {
    /// The node came back up: nothing was served while it was down.
    pub(super) fn restarted(&mut self, now: Instant) {
        for r in self.runs.values_mut() {
            r.accrued = now;
            r.carry = 0;
        }
    }
}
