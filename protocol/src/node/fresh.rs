//! The freshness check: a node that starts without a record of an app must not serve an old
//! release a peer hands it before it has checked with its peers that nothing newer exists.
//!
//! Until the node is *fresh-checked*, a head of an app it holds no record of that arrives
//! from a node link is verified, kept, relayed and fetched, but not activated. The node is
//! fresh-checked once `need` distinct neighbours' anti-entropy summaries were heard and
//! answered (each app the summary showed newer than held here has arrived from that
//! neighbour, or is held from elsewhere), or once `timeout` has passed since start and at
//! least one summary was heard. Then the newest head held per app activates. A head an
//! operator pushes activates at once; apps with a record at start are never held (their
//! stored position already protects them).
//!
//! **Invariant:** the check only ever passes once (a latch); it holds nothing back after.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::release::AppName;
use crate::wire::Position;

#[derive(Debug)]
pub(super) struct Freshness<P> {
    need: usize,
    deadline: Instant,
    timed_out: bool,
    fresh: bool,
    /// Neighbours whose summary was heard, with the positions it showed newer than held here
    /// and not heard of since.
    heard: BTreeMap<P, BTreeMap<AppName, Position>>,
}

impl<P: Peer> Freshness<P> {
    pub fn new(now: Instant, need: usize, timeout: Duration) -> Self {
        Freshness {
            need,
            deadline: now + timeout,
            timed_out: false,
            fresh: need == 0,
            heard: BTreeMap::new(),
        }
    }

    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// `from`'s summary: what it shows newer than `held` is awaited from it.
    pub fn on_summary(
        &mut self,
        from: P,
        theirs: &BTreeMap<AppName, Position>,
        held: impl Fn(&AppName) -> Position,
    ) {
        if self.fresh {
            return;
        }
        let awaited = theirs
            .iter()
            .filter(|(a, p)| **p > held(a))
            .map(|(a, p)| (a.clone(), *p))
            .collect();
        self.heard.insert(from, awaited);
    }

    /// A head of `app` arrived from `from` (accepted or not): it is not awaited from it any more.
    pub fn on_head(&mut self, from: P, app: &AppName) {
        if let Some(w) = self.heard.get_mut(&from) {
            w.remove(app);
        }
    }

    /// Whether the check passes now (`held`: the position held per app). Returns true once,
    /// when it turns fresh.
    pub fn check(&mut self, now: Instant, held: impl Fn(&AppName) -> Position) -> bool {
        if self.fresh {
            return false;
        }
        if now >= self.deadline {
            self.timed_out = true;
        }
        for w in self.heard.values_mut() {
            w.retain(|a, p| *p > held(a));
        }
        let answered = self.heard.values().filter(|w| w.is_empty()).count();
        if answered >= self.need || (self.timed_out && !self.heard.is_empty()) {
            self.fresh = true;
            self.heard.clear();
        }
        self.fresh
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.fresh && !self.timed_out).then_some(self.deadline)
    }
}
