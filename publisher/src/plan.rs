//! What a `release` or `rollback` will do, decided before anything is signed from the peer
//! agent's view of the app (its history and what serves there). Pure: no IO.
//!
//! Versions are identities: a version names one set of bytes, anywhere in the app's history.
//! The same bytes may come back under a new version (and that is said); other bytes under an
//! old version are refused. Releasing what is already active is a no-op, so a CI job can run
//! again. Going to a lower version takes `--allow-downgrade` (or `rollback --to`). Words match
//! the direction: back to a lower version, forward to a higher one.

use std::cmp::Ordering;

use fleetcast_protocol::wire::HistoryEntry;
use fleetcast_protocol::{AppName, AppStatus, Release};
use semver::Version;

use crate::error::{CliError, Result};

/// Which way a head moves an app's version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// A new release (or the same version again, to retry or end a local override).
    Release,
    /// To a lower version.
    Back,
    /// To a higher version.
    Forward,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Release => "release",
            Direction::Back => "back",
            Direction::Forward => "forward",
        }
    }

    fn between(from: &Version, to: &Version) -> Direction {
        match to.cmp(from) {
            Ordering::Less => Direction::Back,
            Ordering::Greater => Direction::Forward,
            Ordering::Equal => Direction::Release,
        }
    }
}

/// What a command will push.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Plan {
    /// Exactly this release is active on the peer agent: nothing to do.
    AlreadyActive { seq: u64, message: String },
    /// Sign and push a head for `release`.
    Push(Box<Push>),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Push {
    pub release: Release,
    /// The version of the head in force before (none for an app's first release).
    pub from: Option<Version>,
    pub direction: Direction,
    /// Another version in the history with the very same bytes.
    pub same_bytes_as: Option<Version>,
    /// What the operator is told before the head is signed.
    pub message: String,
}

/// The release that serves on the peer: the head's, unless it reverted or was overridden.
fn serving(a: &AppStatus) -> &Release {
    a.serving.as_ref().unwrap_or(&a.active)
}

/// The newest history entry of `version`.
fn entry_of<'a>(a: &'a AppStatus, version: &Version) -> Option<&'a HistoryEntry> {
    a.history
        .iter()
        .rev()
        .find(|h| h.release.version == *version)
}

fn known_versions(a: &AppStatus) -> String {
    let mut known: Vec<&Version> = a.history.iter().map(|h| &h.release.version).collect();
    known.sort();
    known.dedup();
    known
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A version above every one in the history (a suggestion for a message).
fn next_version(a: &AppStatus) -> Version {
    let top = a
        .history
        .iter()
        .map(|h| &h.release.version)
        .chain([&a.active.version])
        .max()
        .cloned()
        .unwrap_or_else(|| Version::new(0, 0, 0));
    Version::new(top.major, top.minor, top.patch + 1)
}

/// The plan for `fleetcast release`: `release` (already built from the file) against the
/// peer's view of the app.
pub fn release(
    current: Option<&AppStatus>,
    release: Release,
    allow_downgrade: bool,
) -> Result<Plan> {
    let app = release.app.clone();
    let version = release.version.clone();
    let digest = release.digest;
    let Some(a) = current else {
        return Ok(Plan::Push(Box::new(Push {
            message: format!("releasing {app} {version}, its first release"),
            release,
            from: None,
            direction: Direction::Release,
            same_bytes_as: None,
        })));
    };
    // The same version with other bytes, anywhere in the history (or the head in force).
    let clash = a
        .history
        .iter()
        .rev()
        .map(|h| (h.seq, &h.release))
        .chain([(a.seq, &a.active)])
        .find(|(_, r)| r.version == version && r.digest != digest);
    if let Some((seq, r)) = clash {
        return Err(CliError::usage(format!(
            "{app} {version} was released with other bytes (digest {}, seq {seq}); these bytes are {}: a version names one set of bytes, so release these bytes as a new version (e.g. {})",
            r.digest.short(),
            digest.short(),
            next_version(a)
        )));
    }
    let head = &a.active;
    let serves = serving(a);
    if head.version == version && head.digest == digest && a.serving.is_none() {
        return Ok(Plan::AlreadyActive {
            seq: a.seq,
            message: format!(
                "{app} {version} is already active on the peer agent (seq {}, digest {}): nothing to do",
                a.seq,
                digest.short()
            ),
        });
    }
    if version < serves.version && !allow_downgrade {
        let rollback = entry_of(a, &version)
            .map(|_| {
                format!(
                    ", or go back to it with `fleetcast rollback --app {app} --to {version}` (it is in the history)"
                )
            })
            .unwrap_or_default();
        return Err(CliError::usage(format!(
            "{app} {version} is lower than {}, which the peer agent serves: pass --allow-downgrade to release it anyway{rollback}",
            serves.version
        )));
    }
    let same_bytes_as = a
        .history
        .iter()
        .rev()
        .map(|h| &h.release)
        .chain([&a.active])
        .find(|r| r.digest == digest && r.version != version)
        .map(|r| r.version.clone());
    let mut message = if head.version == version && head.digest == digest {
        // The head in force again: its release reverted here, or an operator overrode it.
        if a.local_override {
            format!(
                "releasing {app} {version} again: it ends the local override on the peer agent (which serves {})",
                serves.version
            )
        } else {
            format!(
                "releasing {app} {version} again to retry: it failed on the peer agent ({}), which serves {}",
                a.last_error.as_deref().unwrap_or("reverted"),
                serves.version
            )
        }
    } else if version < serves.version {
        format!(
            "releasing {app} {version}, a downgrade from {} (--allow-downgrade)",
            serves.version
        )
    } else {
        format!(
            "releasing {app} {version} (the peer agent serves {})",
            serves.version
        )
    };
    if let Some(v) = &same_bytes_as {
        message.push_str(&format!("; same bytes as {app} {v}"));
    }
    Ok(Plan::Push(Box::new(Push {
        release,
        from: Some(head.version.clone()),
        direction: Direction::Release,
        same_bytes_as,
        message,
    })))
}

/// The plan for `fleetcast rollback [--to V]`. `peer` names the agent for messages.
pub fn rollback(
    app: &AppName,
    current: Option<&AppStatus>,
    to: Option<&Version>,
    peer: &str,
) -> Result<Plan> {
    let Some(a) = current else {
        return Err(CliError::usage(format!(
            "the agent at {peer} has no app {app}: release it first with `fleetcast release`"
        )));
    };
    let active = &a.active;
    let target = match to {
        Some(to) => {
            if active.version == *to && a.serving.is_none() {
                return Ok(Plan::AlreadyActive {
                    seq: a.seq,
                    message: format!(
                        "{app} {to} is already active on the peer agent (seq {}): nothing to do",
                        a.seq
                    ),
                });
            }
            if active.version == *to {
                active.clone()
            } else {
                entry_of(a, to)
                    .map(|h| h.release.clone())
                    .ok_or_else(|| {
                        CliError::usage(format!(
                            "{app} {to} is not in the peer agent's history (it holds {}): release it with `fleetcast release` instead",
                            known_versions(a)
                        ))
                    })?
            }
        }
        None => a
            .history
            .iter()
            .rev()
            .find(|h| h.release.version != active.version)
            .map(|h| h.release.clone())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "{app} has no earlier release to roll back to: its history on the peer agent holds only {}",
                    active.version
                ))
            })?,
    };
    let direction = Direction::between(&active.version, &target.version);
    let (from, to) = (&active.version, &target.version);
    let mut message = match direction {
        Direction::Back => format!("rolling {app} back from {from} to {to}"),
        Direction::Forward => format!("moving {app} forward from {from} to {to}"),
        Direction::Release if a.local_override => format!(
            "signing {app} {to} again: it ends the local override on the peer agent (which serves {})",
            serving(a).version
        ),
        Direction::Release => format!(
            "signing {app} {to} again to retry: it failed on the peer agent, which serves {}",
            serving(a).version
        ),
    };
    let same_bytes = target.digest == active.digest && target.version != active.version;
    if same_bytes {
        message.push_str(&format!(
            " (the same bytes as {from}: only the version changes)"
        ));
    }
    Ok(Plan::Push(Box::new(Push {
        same_bytes_as: same_bytes.then(|| from.clone()),
        release: target,
        from: Some(from.clone()),
        direction,
        message,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcast_protocol::HeadKind;

    fn rel(version: &str, bytes: &[u8]) -> Release {
        Release::build(
            AppName::new("hello").unwrap(),
            version.parse().unwrap(),
            bytes,
            4096,
        )
        .unwrap()
    }

    /// An app whose history is `steps` (version, bytes), the last one in force.
    fn app(steps: &[(&str, &[u8])]) -> AppStatus {
        let history: Vec<HistoryEntry> = steps
            .iter()
            .enumerate()
            .map(|(i, (v, b))| HistoryEntry {
                seq: i as u64 + 1,
                kind: HeadKind::Release,
                release: rel(v, b),
                issued_at_ms: 0,
            })
            .collect();
        let last = history.last().unwrap().clone();
        AppStatus {
            app: AppName::new("hello").unwrap(),
            seq: last.seq,
            epoch: 0,
            kind: last.kind,
            active: last.release,
            issued_at_ms: 0,
            history,
            last_error: None,
            serving: None,
            local_override: false,
            plan: None,
            staged: None,
        }
    }

    fn pushed(p: Plan) -> Push {
        match p {
            Plan::Push(p) => *p,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    #[test]
    fn a_version_names_one_set_of_bytes() {
        let a = app(&[("1.0.0", b"one"), ("2.0.0", b"two")]);
        let e = release(Some(&a), rel("1.0.0", b"other"), false).unwrap_err();
        assert_eq!(e.code(), 2);
        let one = rel("1.0.0", b"one").digest.short();
        let other = rel("1.0.0", b"other").digest.short();
        assert!(
            e.message.contains(&one) && e.message.contains(&other),
            "{e}"
        );
        assert!(
            e.message
                .contains("release these bytes as a new version (e.g. 2.0.1)"),
            "{e}"
        );
        // --allow-downgrade does not lift it.
        assert!(release(Some(&a), rel("1.0.0", b"other"), true).is_err());
    }

    #[test]
    fn the_same_bytes_under_a_new_version_are_allowed_and_said() {
        let a = app(&[("1.0.0", b"one"), ("2.0.0", b"two")]);
        let p = pushed(release(Some(&a), rel("2.1.0", b"two"), false).unwrap());
        assert_eq!(p.same_bytes_as, Some("2.0.0".parse().unwrap()));
        assert!(
            p.message.contains("same bytes as hello 2.0.0"),
            "{}",
            p.message
        );
        assert_eq!(p.from, Some("2.0.0".parse().unwrap()));
    }

    #[test]
    fn releasing_what_is_active_is_nothing_to_do() {
        let a = app(&[("1.0.0", b"one"), ("2.0.0", b"two")]);
        match release(Some(&a), rel("2.0.0", b"two"), false).unwrap() {
            Plan::AlreadyActive { seq, message } => {
                assert_eq!(seq, 2);
                assert!(message.contains("already active"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Reverted on the peer: the same head again is a retry.
        let mut reverted = a.clone();
        reverted.serving = Some(rel("1.0.0", b"one"));
        reverted.last_error = Some("trial failed".into());
        let p = pushed(release(Some(&reverted), rel("2.0.0", b"two"), false).unwrap());
        assert!(p.message.contains("to retry"), "{}", p.message);
    }

    #[test]
    fn a_lower_version_needs_allow_downgrade() {
        let a = app(&[("1.0.0", b"one"), ("2.0.0", b"two")]);
        let e = release(Some(&a), rel("1.5.0", b"mid"), false).unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(e.message.contains("--allow-downgrade"), "{e}");
        assert!(
            !e.message.contains("rollback"),
            "1.5.0 is not in the history: {e}"
        );
        let p = pushed(release(Some(&a), rel("1.5.0", b"mid"), true).unwrap());
        assert!(p.message.contains("downgrade from 2.0.0"), "{}", p.message);
        // A version in the history: rollback is the way.
        let e = release(Some(&a), rel("1.0.0", b"one"), false).unwrap_err();
        assert!(
            e.message
                .contains("`fleetcast rollback --app hello --to 1.0.0`"),
            "{e}"
        );
        // What serves counts: after a revert to 1.0.0, 1.5.0 is forward.
        let mut reverted = a.clone();
        reverted.serving = Some(rel("1.0.0", b"one"));
        assert!(release(Some(&reverted), rel("1.5.0", b"mid"), false).is_ok());
    }

    #[test]
    fn plain_rollback_goes_to_the_previous_distinct_version() {
        // 2.0.0 is 1.0.0's bytes again: the previous *version* is 1.0.0.
        let a = app(&[("1.0.0", b"one"), ("2.0.0", b"two"), ("2.1.0", b"two")]);
        let p = pushed(rollback(&a.app, Some(&a), None, "peer").unwrap());
        assert_eq!(p.release.version.to_string(), "2.0.0");
        assert_eq!(p.direction, Direction::Back);
        assert!(
            p.message
                .starts_with("rolling hello back from 2.1.0 to 2.0.0 (the same bytes as 2.1.0"),
            "{}",
            p.message
        );
        // The same version twice in a row is skipped.
        let a = app(&[("1.0.0", b"one"), ("2.0.0", b"two"), ("2.0.0", b"two")]);
        let p = pushed(rollback(&a.app, Some(&a), None, "peer").unwrap());
        assert_eq!(p.release.version.to_string(), "1.0.0");
        let only = app(&[("1.0.0", b"one")]);
        let e = rollback(&only.app, Some(&only), None, "peer").unwrap_err();
        assert!(e.message.contains("no earlier release"), "{e}");
    }

    #[test]
    fn rollback_words_match_the_direction() {
        let a = app(&[("1.0.0", b"one"), ("2.0.0", b"two"), ("1.0.0", b"one")]);
        let two = "2.0.0".parse().unwrap();
        let p = pushed(rollback(&a.app, Some(&a), Some(&two), "peer").unwrap());
        assert_eq!(p.direction, Direction::Forward);
        assert_eq!(p.message, "moving hello forward from 1.0.0 to 2.0.0");
        let one = "1.0.0".parse().unwrap();
        assert!(matches!(
            rollback(&a.app, Some(&a), Some(&one), "peer").unwrap(),
            Plan::AlreadyActive { .. }
        ));
        let nine = "9.0.0".parse().unwrap();
        let e = rollback(&a.app, Some(&a), Some(&nine), "peer").unwrap_err();
        assert!(e.message.contains("it holds 1.0.0, 2.0.0"), "{e}");
        let e = rollback(&a.app, None, None, "127.0.0.1:7401").unwrap_err();
        assert!(e.message.contains("has no app hello"), "{e}");
    }
}
