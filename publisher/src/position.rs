//! Where the next head of an app goes (pure): heads are ordered by (epoch, seq). The epoch is
//! the fleet root's (the version of the root that last changed the release role; 0 without a
//! root); within an epoch the seq goes up by one, and a new epoch starts again at seq 1.

use fleetcast_protocol::wire::{NodeStatus, Position};
use fleetcast_protocol::{AppName, AppStatus};

use crate::error::{CliError, Result};

/// The highest position the agent of `st` holds for `app`: what it accepted (a release still
/// fetching or that failed keeps its seq) or what is active, whichever is higher.
pub fn held(st: &NodeStatus, app: &AppName) -> Position {
    let accepted = st
        .seqs
        .iter()
        .filter(|(a, _)| a == app)
        .map(|(_, p)| *p)
        .max()
        .unwrap_or_default();
    let active = st
        .apps
        .iter()
        .find(|a| a.app == *app)
        .map(active_position)
        .unwrap_or_default();
    accepted.max(active)
}

/// The position of the head in force of `a`.
pub fn active_position(a: &AppStatus) -> Position {
    Position {
        epoch: a.epoch,
        seq: a.seq,
    }
}

/// The position to sign the next head of `app` at, above `held`, under a root of epoch
/// `root_epoch`: `(root_epoch, 1)` when the agent's head is from an older epoch, else
/// `held.seq + 1`. Fails when the agent holds a head from a newer epoch than the root the CLI
/// goes by, and when the seq is exhausted in this epoch.
pub fn next(app: &AppName, held: Position, root_epoch: u64) -> Result<Position> {
    if held.epoch < root_epoch {
        return Ok(Position {
            epoch: root_epoch,
            seq: 1,
        });
    }
    if held.epoch > root_epoch {
        return Err(CliError::usage(format!(
            "the agent holds {app} at {held}, from a newer epoch than the fleet root's ({root_epoch}): the --fleet directory is out of date; use the fleet directory that made the newest root"
        )));
    }
    let seq = held.seq.checked_add(1).ok_or_else(|| {
        CliError::usage(format!(
            "seq exhausted in this epoch: {app} is at {held}; rotate the release role (fleetcast fleet rotate --replace release-N) to start a new epoch"
        ))
    })?;
    Ok(Position {
        epoch: root_epoch,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(epoch: u64, seq: u64) -> Position {
        Position { epoch, seq }
    }

    #[test]
    fn the_next_seq_is_one_above_within_the_epoch() {
        let app = AppName::new("shop").unwrap();
        assert_eq!(next(&app, p(0, 0), 0).unwrap(), p(0, 1));
        assert_eq!(next(&app, p(0, 41), 0).unwrap(), p(0, 42));
        assert_eq!(next(&app, p(3, 7), 3).unwrap(), p(3, 8));
    }

    #[test]
    fn a_newer_root_epoch_starts_again_at_seq_1() {
        let app = AppName::new("shop").unwrap();
        assert_eq!(next(&app, p(0, 99), 1).unwrap(), p(1, 1));
        assert_eq!(next(&app, p(1, u64::MAX), 4).unwrap(), p(4, 1));
    }

    #[test]
    fn an_exhausted_seq_says_to_rotate_and_does_not_panic() {
        let app = AppName::new("shop").unwrap();
        let e = next(&app, p(2, u64::MAX), 2).unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(e.message.starts_with("seq exhausted in this epoch"), "{e}");
        assert!(
            e.message
                .contains("fleetcast fleet rotate --replace release-N"),
            "{e}"
        );
        let e = next(&app, p(0, u64::MAX), 0).unwrap_err();
        assert!(e.message.contains("seq exhausted"), "{e}");
    }

    #[test]
    fn an_agent_ahead_of_the_root_is_refused() {
        let app = AppName::new("shop").unwrap();
        let e = next(&app, p(5, 1), 3).unwrap_err();
        assert!(e.message.contains("newer epoch"), "{e}");
    }
}
