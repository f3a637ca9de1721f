//! The census layer: counting the live fleet with an echo wave over the active view
//! ([`CensusMsg`]).
//!
//! A `Query { id, budget_ms, focus }` from link L for an `id` not known here makes L this
//! node's parent in that census (when L is not in the active view, a client such as the
//! publisher CLI, this node is the root; its reply goes back to L all the same). The node
//! forwards the query, with a smaller budget, to every other active neighbour and waits for
//! each one's `Reply`; once all have answered, or at now + budget, it replies to L with its
//! own contribution plus every child's count, counting in `unanswered` the children that did
//! not answer in time or went down while awaited. A query for an id already known (in progress
//! or recently finished) is answered `Reply { count: None }` at once, except from a neighbour
//! this node forwarded the query to and still waits for: two queries that cross on a link
//! answer each other, so neither side replies (a census costs two messages per overlay link,
//! not up to four). This node's own contribution is a snapshot taken when the query arrives
//! ([`own`]).
//!
//! **Budget per hop.** A child gets the budget minus [`HOP_MARGIN`] (250 ms): its reply, sent
//! at its own deadline at the latest, reaches the parent one latency later, before the parent's
//! deadline as long as a round trip plus processing stays under the margin. A node whose budget
//! is at most the margin does not forward: it answers at once with itself, counting the
//! neighbours it did not ask in `unanswered`. Budgets are clamped to [`MAX_BUDGET`], so a
//! census reaches at most budget / 250 ms hops deep (20 at 5 s) and no census outlives a
//! minute.
//!
//! **Bounds.** At most [`MAX_IN_PROGRESS`] censuses are in progress; one more is answered at
//! once with this node's own contribution and not forwarded, the neighbours it did not ask in
//! `unanswered`. The ids of the last [`MAX_RECENT`] censuses this node finished (or answered
//! that way to a neighbour) are remembered, so a late query for one is answered `None` rather
//! than counted twice. Counts merge through [`Census::add`], which bounds entries, samples and
//! their text.
//!
//! **Not an amplifier.** One client query costs the fleet two messages per overlay link, so
//! what a link may start is capped. A node roots at most one census per [`CLIENT_INTERVAL`]
//! (1 s) per client link, and across all client links at most [`ROOT_BURST`] (4) back to back,
//! then one per [`CLIENT_INTERVAL`] (reconnecting does not buy more). An extra query is
//! answered the cheap way (own contribution, every neighbour in `unanswered`, not forwarded)
//! and its id is not remembered: nothing was forwarded, so no duplicate can come back through
//! the mesh, and a client cannot flush the ids of real censuses out of the recent set. Since
//! any peer may join the overlay today (there is no admission control yet), a neighbour is
//! capped too: it may bring this node [`NEIGHBOUR_BURST`] (8) new censuses back to back, then
//! one per [`NEIGHBOUR_INTERVAL`] (500 ms); honest neighbours only forward what roots started,
//! so that is room for two censuses a second fleet-wide. An extra one is answered the cheap way
//! and remembered (its other neighbours may forward the same id here).
//!
//! **Invariants:** a node joins a census at most once while its id is among the recent ones
//! (one parent, one reply with a count); a child's count is added only while it is awaited, so
//! nothing is counted twice and `unanswered == 0` means every agent the overlay reaches from
//! the root was counted; every census
//! in progress ends by its deadline (a child that never answers or goes down cannot stall it);
//! the state is bounded as above; counts are informational, nothing here decides what runs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::release::{AppName, Digest};
use crate::wire::{Census, CensusEntry, CensusMsg, Focus, Missing, NodeId, ServeState};

use super::activation::{Activations, Stage};
use super::io::Outbox;

/// What each hop takes off the budget it passes on (see the module docs).
pub(super) const HOP_MARGIN: Duration = Duration::from_millis(250);
/// The longest budget honoured.
pub(super) const MAX_BUDGET: Duration = Duration::from_secs(60);
/// Censuses in progress at once.
pub(super) const MAX_IN_PROGRESS: usize = 16;
/// Ids of finished censuses remembered.
pub(super) const MAX_RECENT: usize = 256;
/// A client link may start one census here per this interval.
pub(super) const CLIENT_INTERVAL: Duration = Duration::from_secs(1);
/// Censuses all client links together may start back to back (then one per
/// [`CLIENT_INTERVAL`]).
pub(super) const ROOT_BURST: f64 = 4.0;
/// New censuses one neighbour may bring back to back (then one per [`NEIGHBOUR_INTERVAL`]).
pub(super) const NEIGHBOUR_BURST: f64 = 8.0;
/// A neighbour may bring one new census per this interval after its burst.
pub(super) const NEIGHBOUR_INTERVAL: Duration = Duration::from_millis(500);
/// Links whose rate cap is remembered.
const MAX_LINKS: usize = 256;
/// Longest failure reason quoted in a `why`, bytes.
const WHY_REASON: usize = 120;

/// One census in progress here.
#[derive(Debug)]
struct Wave<P> {
    /// Where the count goes: the neighbour the query came from, or the client (at the root).
    parent: P,
    deadline: Instant,
    /// Neighbours asked that have not answered yet.
    awaiting: BTreeSet<P>,
    /// This node's contribution plus the children's counts so far.
    count: Census,
}

/// Censuses in progress, recent ids and the rate caps. See the module docs.
#[derive(Debug)]
pub(super) struct Censuses<P> {
    waves: BTreeMap<u64, Wave<P>>,
    /// Ids of finished censuses, oldest first.
    recent: VecDeque<u64>,
    /// What each link may still start here (see the module docs).
    links: BTreeMap<P, Bucket>,
    /// What all client links together may still start.
    roots: Bucket,
}

/// A token bucket: `burst` starts back to back, then one per `every`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant, burst: f64) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Refills by the time passed since the last look; whether a token is there.
    fn ready(&mut self, now: Instant, burst: f64, every: Duration) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / every.as_secs_f64();
        self.tokens = (self.tokens + earned).min(burst);
        self.at = now;
        self.tokens >= 1.0
    }
}

impl<P: Peer> Censuses<P> {
    pub fn new(now: Instant) -> Self {
        Censuses {
            waves: BTreeMap::new(),
            recent: VecDeque::new(),
            links: BTreeMap::new(),
            roots: Bucket::full(now, ROOT_BURST),
        }
    }

    /// Censuses in progress here.
    pub fn in_progress(&self) -> usize {
        self.waves.len()
    }

    /// A query from `from` (`client`: not in the active view, so this node is the root).
    /// `neighbours` is the active view; `own` gives this node's own contribution.
    #[allow(clippy::too_many_arguments)]
    pub fn on_query(
        &mut self,
        now: Instant,
        from: P,
        id: u64,
        budget_ms: u32,
        focus: Option<Focus>,
        client: bool,
        neighbours: &[P],
        own: impl FnOnce(Option<&Focus>) -> Census,
        out: &mut Outbox<P>,
    ) {
        if let Some(w) = self.waves.get_mut(&id) {
            if w.awaiting.remove(&from) {
                // Our queries crossed: `from` is in this census under another parent and takes
                // our query as this node's answer, as this node takes its query.
                if w.awaiting.is_empty() {
                    self.finish(id, out);
                }
            } else {
                out.send(from, CensusMsg::Reply { id, count: None });
            }
            return;
        }
        if self.recent.contains(&id) {
            out.send(from, CensusMsg::Reply { id, count: None });
            return;
        }
        let asked: Vec<P> = neighbours.iter().copied().filter(|p| *p != from).collect();
        let budget = Duration::from_millis(budget_ms.into()).min(MAX_BUDGET);
        let busy = self.waves.len() >= MAX_IN_PROGRESS;
        let allowed = !busy && self.may_start(now, from, client);
        if client && !allowed {
            // Not remembered: nothing is forwarded, so nothing comes back through the mesh.
            let mut count = own(focus.as_ref());
            count.unanswered = count.unanswered.saturating_add(asked.len() as u32);
            out.send(from, reply(id, count));
            return;
        }
        let mut count = own(focus.as_ref());
        if !allowed || budget <= HOP_MARGIN || asked.is_empty() {
            // Answer at once with this node alone; the neighbours it did not ask may be missing.
            count.unanswered = count.unanswered.saturating_add(asked.len() as u32);
            out.send(from, reply(id, count));
            self.remember(id);
            return;
        }
        let budget_ms = (budget - HOP_MARGIN).as_millis() as u32;
        for &p in &asked {
            let focus = focus.clone();
            out.send(
                p,
                CensusMsg::Query {
                    id,
                    budget_ms,
                    focus,
                },
            );
        }
        let wave = Wave {
            parent: from,
            deadline: now + budget,
            awaiting: asked.into_iter().collect(),
            count,
        };
        self.waves.insert(id, wave);
    }

    /// A count from `from`: added if `from` is awaited in census `id` (a late or unasked reply
    /// is ignored).
    pub fn on_reply(&mut self, from: P, id: u64, count: Option<Census>, out: &mut Outbox<P>) {
        let Some(w) = self.waves.get_mut(&id) else {
            return;
        };
        if !w.awaiting.remove(&from) {
            return;
        }
        if let Some(c) = count {
            w.count.add(&c);
        }
        if w.awaiting.is_empty() {
            self.finish(id, out);
        }
    }

    /// The connection to `p` is gone: an awaited child counts as unanswered; a census whose
    /// parent it was is dropped (nobody is left to tell; the parent's side counts this node
    /// unanswered).
    pub fn peer_down(&mut self, p: P, out: &mut Outbox<P>) {
        self.links.remove(&p);
        let ids: Vec<u64> = self.waves.keys().copied().collect();
        for id in ids {
            let w = self.waves.get_mut(&id).expect("listed");
            if w.parent == p {
                self.waves.remove(&id);
                self.remember(id);
            } else if w.awaiting.remove(&p) {
                w.count.unanswered = w.count.unanswered.saturating_add(1);
                if w.awaiting.is_empty() {
                    self.finish(id, out);
                }
            }
        }
    }

    /// Link `old` was replaced by `new`: carried over after simultaneous dials; as if `old`
    /// went down when the peer came back (`fresh`: it knows nothing of our censuses).
    pub fn rekey(&mut self, old: P, new: P, fresh: bool, out: &mut Outbox<P>) {
        if fresh {
            return self.peer_down(old, out);
        }
        if let Some(b) = self.links.remove(&old) {
            self.links.insert(new, b);
        }
        for w in self.waves.values_mut() {
            if w.parent == old {
                w.parent = new;
            }
            if w.awaiting.remove(&old) {
                w.awaiting.insert(new);
            }
        }
    }

    /// Censuses whose budget ran out answer with what they have.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Outbox<P>) {
        let due: Vec<u64> = self
            .waves
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.finish(id, out);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waves.values().map(|w| w.deadline).min()
    }

    /// Census `id` is over here: the count (with the children still awaited as unanswered)
    /// goes to the parent.
    fn finish(&mut self, id: u64, out: &mut Outbox<P>) {
        let Some(mut w) = self.waves.remove(&id) else {
            return;
        };
        let late = w.awaiting.len() as u32;
        w.count.unanswered = w.count.unanswered.saturating_add(late);
        out.send(w.parent, reply(id, w.count));
        self.remember(id);
    }

    fn remember(&mut self, id: u64) {
        if self.recent.len() >= MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// Whether `from` (`client`: a client link) may start a census here now; if so, it is
    /// charged for it.
    fn may_start(&mut self, now: Instant, from: P, client: bool) -> bool {
        let (burst, every) = if client {
            (1.0, CLIENT_INTERVAL)
        } else {
            (NEIGHBOUR_BURST, NEIGHBOUR_INTERVAL)
        };
        if !self.links.contains_key(&from) && self.links.len() >= MAX_LINKS {
            // Forget the link idle longest (a fresh bucket is what a new link gets anyway).
            let oldest = self.links.iter().min_by_key(|(_, b)| b.at).map(|(p, _)| *p);
            self.links.remove(&oldest.expect("not empty"));
        }
        let link = self
            .links
            .entry(from)
            .or_insert_with(|| Bucket::full(now, burst));
        let mut ok = link.ready(now, burst, every);
        if client {
            ok &= self.roots.ready(now, ROOT_BURST, CLIENT_INTERVAL);
        }
        if ok {
            self.links.get_mut(&from).expect("inserted").tokens -= 1.0;
            if client {
                self.roots.tokens -= 1.0;
            }
        }
        ok
    }
}

fn reply(id: u64, count: Census) -> CensusMsg {
    CensusMsg::Reply {
        id,
        count: Some(count),
    }
}

/// What this node knows of itself, for its own contribution to a census.
pub(super) struct Local<'a, H, F> {
    pub me: NodeId,
    /// Where this node can be dialled, if it knows.
    pub addr: Option<SocketAddr>,
    pub activation: &'a Activations,
    /// The highest seq accepted per app (activated, activating, fetching or failed).
    pub held: H,
    /// Chunks verified and chunk count of content being fetched.
    pub progress: F,
}

/// This node's own contribution: one agent; one entry per app it has a record for (the seq
/// of the head in force, what serves and why); with a focus, counted in `focus_active` if it
/// serves the focus head's release, else sampled as missing with what it does instead.
pub(super) fn own<H, F>(l: &Local<'_, H, F>, focus: Option<&Focus>) -> Census
where
    H: Fn(&AppName) -> u64,
    F: Fn(&Digest) -> Option<(u32, u32)>,
{
    let acts = l.activation;
    let mut c = Census {
        agents: 1,
        ..Census::default()
    };
    for (app, r) in acts.records() {
        let h = &r.head.head;
        let (release, state) = match acts.serving(app) {
            None => (&h.release, ServeState::Active),
            Some(s) => match &s.release {
                Some(rel) if s.local_override => (rel, ServeState::Override),
                Some(rel) => (rel, ServeState::Reverted),
                None => continue, // nothing serves the app here
            },
        };
        c.add_entry(&CensusEntry {
            app: app.clone(),
            seq: h.seq,
            version: release.version.clone(),
            digest: release.digest,
            state,
            agents: 1,
        });
    }
    if let Some(f) = focus {
        match why_not(l, f) {
            None => c.focus_active = 1,
            Some(why) => c.add_missing(&Missing {
                node: l.me,
                addr: l.addr,
                seq: (l.held)(&f.app),
                why,
            }),
        }
    }
    c
}

/// Why this node does not serve the release of `focus` (`None`: it does).
fn why_not<H, F>(l: &Local<'_, H, F>, focus: &Focus) -> Option<String>
where
    H: Fn(&AppName) -> u64,
    F: Fn(&Digest) -> Option<(u32, u32)>,
{
    let (acts, app, seq) = (l.activation, &focus.app, focus.seq);
    let held = (l.held)(app);
    let reason = || brief(acts.last_error(app).unwrap_or("no reason given"));
    if acts.applied(app).seq == seq {
        let s = acts.serving(app)?;
        return Some(match (&s.release, s.local_override) {
            (Some(r), true) => format!("local override: serves {}", r.version),
            (Some(r), false) => format!("reverted to {}: {}", r.version, reason()),
            (None, _) => format!("reverted, nothing serves: {}", reason()),
        });
    }
    if held > seq {
        return Some(format!("holds newer seq {held}"));
    }
    if held < seq {
        return Some(match held {
            0 => format!("no release of {app}"),
            _ => format!("never got seq {seq} (holds seq {held})"),
        });
    }
    // The focus seq is held but not in force: on its way, or it failed here.
    Some(match acts.pending(app) {
        Some(p) if p.head.head.seq == seq => match p.stage {
            Stage::Activating => format!("activating seq {seq}"),
            Stage::Held => format!("holds seq {seq}, checking with its peers before activating"),
            Stage::Fetching => match (l.progress)(&p.head.head.release.digest) {
                Some((have, n)) => format!("fetching seq {seq} ({have} of {n} chunks)"),
                None => format!("fetching seq {seq}"),
            },
        },
        Some(p) if p.next.as_ref().is_some_and(|n| n.head.seq == seq) => {
            format!("waiting for seq {} to finish activating", p.head.head.seq)
        }
        _ => format!("failed: {}", reason()),
    })
}

/// `s` cut to [`WHY_REASON`] bytes (on a character boundary), marked when cut.
fn brief(s: &str) -> String {
    if s.len() <= WHY_REASON {
        return s.to_string();
    }
    let mut end = WHY_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
