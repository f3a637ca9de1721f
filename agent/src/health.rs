//! The health feed of staged rollouts: what the node actor tells the node, once a second, of
//! the requests each app's serving release handled since it was swapped in here and of the
//! release it replaced ([`Input::Health`]), read from the runtime's per-release counters
//! ([`crate::runtime::Runtime::health`]).
//!
//! **Invariants.** An app is fed only while the node's head in force for it carries a rollout
//! plan and names the release that serves (the node counts nothing else); it is fed again only
//! when its counts or that head changed, so an idle agent sends the node nothing and its
//! tallies stay still.

use std::collections::BTreeMap;

use fleetcast_protocol::node::Input;
use fleetcast_protocol::rollout::Health;
use fleetcast_protocol::{AppName, Digest};

use crate::runtime::AppHealth;

/// What was last fed per app: the head's seq, the release and its counts.
#[derive(Debug, Default)]
pub struct HealthFeed {
    sent: BTreeMap<AppName, (u64, Digest, Health, Health)>,
}

impl HealthFeed {
    /// The inputs due now, from the runtime's `health`. `head(app, digest)`: the seq of the
    /// app's head in force if it is a staged rollout of release `digest`, else `None`.
    pub fn due<P>(
        &mut self,
        health: Vec<AppHealth>,
        head: impl Fn(&AppName, &Digest) -> Option<u64>,
    ) -> Vec<Input<P>> {
        let mut out = Vec::new();
        for h in health {
            let Ok(app) = AppName::new(&h.app) else {
                continue;
            };
            let Some(seq) = head(&app, &h.digest) else {
                self.sent.remove(&app);
                continue;
            };
            let now = (seq, h.digest, h.new, h.old);
            if self.sent.get(&app) == Some(&now) {
                continue;
            }
            let (_, digest, new, old) = now.clone();
            self.sent.insert(app.clone(), now);
            out.push(Input::Health {
                app,
                digest,
                new,
                old,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(app: &str, digest: u8, requests: u64, old: u64) -> AppHealth {
        let mut new = Health::default();
        for _ in 0..requests {
            new.record(std::time::Duration::from_millis(3), false);
        }
        AppHealth {
            app: app.into(),
            digest: Digest([digest; 32]),
            new,
            old: Health {
                requests: old,
                ..Health::default()
            },
        }
    }

    fn fed(inputs: &[Input<u8>]) -> Vec<(String, u64)> {
        inputs
            .iter()
            .map(|i| match i {
                Input::Health { app, new, .. } => (app.to_string(), new.requests),
                other => panic!("not a health input: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn fed_when_it_changed_and_only_for_the_staged_head_that_serves() {
        let mut feed = HealthFeed::default();
        // "shop" is a staged rollout of the release that serves (seq 9); "blog" has no plan.
        let head = |seq: u64| {
            move |app: &AppName, d: &Digest| {
                (app.as_str() == "shop" && *d == Digest([1; 32])).then_some(seq)
            }
        };
        let now = || vec![health("blog", 2, 5, 0), health("shop", 1, 3, 7)];
        assert_eq!(fed(&feed.due(now(), head(9))), vec![("shop".into(), 3)]);
        // Nothing changed: nothing is fed.
        assert!(feed.due::<u8>(now(), head(9)).is_empty());
        // More requests: fed again.
        let more = vec![health("shop", 1, 4, 7)];
        assert_eq!(
            fed(&feed.due(more.clone(), head(9))),
            vec![("shop".into(), 4)]
        );
        // The same counts under the next wave's head (seq 10): that head has none yet.
        assert_eq!(
            fed(&feed.due(more.clone(), head(10))),
            vec![("shop".into(), 4)]
        );
        // Another release serves (a halt): not the staged one, nothing fed.
        assert!(
            feed.due::<u8>(vec![health("shop", 3, 1, 4)], head(10))
                .is_empty()
        );
    }
}
