//! `fleetcast fleet`: the fleet root (init, rotate, push, show). The pure steps are
//! [`crate::fleetdir`]; here they meet files and agents.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use fleetcast_protocol::SignedRoot;

use crate::error::{CliError, Result};
use crate::fleetdir::{
    self, DEFAULT_EXPIRES, DEFAULT_FLEET, FleetDir, InitSpec, Lifetime, NamedKey, RotateSpec,
    now_ms,
};
use crate::json::{self, Event};
use crate::out::{Out, OutArgs};
use crate::session::{STATUS_TIMEOUT, Session};
use crate::signing::{IdentityArgs, read_keys};
use crate::table::{Table, plural, utc};
use crate::target::{Target, TargetArgs};

/// The fleet root: who may sign releases, enroll nodes and sign the next root.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  fleetcast fleet init --out fleet --root-keys 3 --root-threshold 2 --release-keys 3 --release-threshold 2\n  fleetcast fleet show --fleet fleet\n  fleetcast fleet rotate --fleet fleet --replace release-1 --root-key fleet/keys/root-1.key --root-key fleet/keys/root-2.key\n  fleetcast fleet push --fleet fleet --peer 127.0.0.1:7401 --key fleet/keys/release-2.key"
)]
pub struct Fleet {
    #[command(subcommand)]
    pub cmd: FleetCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum FleetCmd {
    Init(Init),
    Rotate(Rotate),
    Push(Push),
    Show(Show),
}

impl Fleet {
    pub fn json(&self) -> bool {
        match &self.cmd {
            FleetCmd::Init(c) => c.format.json,
            FleetCmd::Rotate(c) => c.out.json,
            FleetCmd::Push(c) => c.out.json,
            FleetCmd::Show(c) => c.out.json,
        }
    }

    pub async fn execute(self) -> Result<()> {
        match self.cmd {
            FleetCmd::Init(c) => c.execute(),
            FleetCmd::Rotate(c) => c.execute(),
            FleetCmd::Push(c) => c.execute().await,
            FleetCmd::Show(c) => c.execute(),
        }
    }
}

/// Create a fleet: root.json (version 1) and every key (root-N, release-N, enroll).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes DIR/root.json (and DIR/roots/1.json), signed by a threshold of the root keys, and DIR/keys/NAME.key (secret, mode 0600) with NAME.pub beside it: root-1.., release-1.., enroll (the nodes role, which signs node certificates). Give root.json to every agent (root = \"root.json\"). Move the root keys offline: they are needed only to make the next root version.\n\nExample:\n  fleetcast fleet init --out fleet --root-keys 3 --root-threshold 2 --release-keys 3 --release-threshold 2 --expires 365d"
)]
pub struct Init {
    /// The fleet directory to create.
    #[arg(long, value_name = "DIR", default_value = "fleet")]
    pub out: PathBuf,
    /// The fleet's name (the agents' `fleet`).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_FLEET)]
    pub fleet_name: String,
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub root_keys: usize,
    /// How many root keys must sign the next root version.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub root_threshold: u32,
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub release_keys: usize,
    /// How many distinct release keys must sign a head.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub release_threshold: u32,
    /// How long the root is valid (agents accept no new head past it): 365d, 12h, 30m.
    #[arg(long, value_name = "LIFETIME", default_value = DEFAULT_EXPIRES)]
    pub expires: Lifetime,
    #[command(flatten)]
    pub format: OutArgs,
}

fn days(ms: u64) -> String {
    // Rounded: a root made a moment ago for 365d still says 365 days.
    let d = (ms + 43_200_000) / 86_400_000;
    if d >= 1 {
        plural(d, "day")
    } else {
        format!("{} h", ms / 3_600_000)
    }
}

impl Init {
    pub fn execute(self) -> Result<()> {
        let out = Out::new(self.format.json);
        let dir = FleetDir::new(&self.out);
        if dir.root_file().exists() || dir.keys_dir().exists() {
            return Err(CliError::usage(format!(
                "{} already holds a fleet: pick another --out, or change this one with fleetcast fleet rotate",
                self.out.display()
            )));
        }
        let now = now_ms();
        let spec = InitSpec {
            fleet: self.fleet_name.clone(),
            root_keys: self.root_keys,
            root_threshold: self.root_threshold,
            release_keys: self.release_keys,
            release_threshold: self.release_threshold,
            now_ms: now,
            expires_ms: self.expires.from(now),
        };
        let (root, keys) = fleetdir::build_init(&spec)?;
        let mut files = Vec::new();
        for k in &keys {
            dir.write_key(k)?;
            files.push(dir.key_file(&k.name).display().to_string());
        }
        dir.write_root(&root)?;
        files.insert(0, dir.root_file().display().to_string());
        let r = &root.root;
        out.say(format!(
            "wrote {}: fleet {:?} version 1 (epoch 1), signed by {} of {} root keys, expires in {} ({})",
            dir.root_file().display(),
            r.fleet,
            root.signatures.len(),
            r.roles.root.keys.len(),
            days(r.expires_ms - now),
            utc(r.expires_ms)
        ));
        out.say(format!(
            "wrote {}/: root-1..{} (the next root needs {}), release-1..{} (a head needs {}), enroll (signs node certificates); .key is secret (mode 0600), .pub beside it",
            dir.keys_dir().display(),
            self.root_keys,
            self.root_threshold,
            self.release_keys,
            self.release_threshold
        ));
        out.say(format!(
            "next: move {}/root-*.key offline; give {} to every agent (root = \"root.json\"); enroll each node (fleetcast node enroll --fleet {} --node ID --out node.cert)",
            dir.keys_dir().display(),
            dir.root_file().display(),
            self.out.display()
        ));
        out.emit(Event::Root(root_event("init", &root, files)));
        Ok(())
    }
}

fn root_event(action: &str, root: &SignedRoot, files: Vec<String>) -> json::RootEvent {
    json::RootEvent {
        action: action.into(),
        fleet: root.root.fleet.clone(),
        version: root.root.version,
        epoch: root.root.epoch,
        expires_ms: root.root.expires_ms,
        files,
    }
}

/// Make the next root version: replace keys, change thresholds, extend the expiry.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The new version is signed by a threshold of the current root keys (--root-key) and of its own (a replaced root key's successor signs too), checked as the next step, then written: DIR/roots/N.json and DIR/root.json. A replaced key's files move to DIR/keys/old/NAME.vN.key (N: the last version that listed it); the new key takes its name. Replacing a release key starts a new epoch: every head signed before is refused, however high its seq. Then send it to the fleet: fleetcast fleet push.\n\nExamples:\n  fleetcast fleet rotate --fleet fleet --replace release-1 --root-key fleet/keys/root-1.key --root-key fleet/keys/root-2.key\n  fleetcast fleet rotate --fleet fleet --replace root-1 --root-key fleet/keys/root-1.key --root-key fleet/keys/root-2.key\n  fleetcast fleet rotate --fleet fleet --expires 365d --root-key fleet/keys/root-1.key --root-key fleet/keys/root-3.key   # extend only"
)]
pub struct Rotate {
    /// The fleet directory.
    #[arg(long, value_name = "DIR")]
    pub fleet: PathBuf,
    /// A key to replace by a new one: root-N, release-N or enroll (repeatable).
    #[arg(long, value_name = "NAME")]
    pub replace: Vec<String>,
    /// A current root key's secret file (repeatable; a threshold of them signs).
    #[arg(long, value_name = "FILE", required = true)]
    pub root_key: Vec<PathBuf>,
    /// The new version's lifetime from now (default: the current expiry).
    #[arg(long, value_name = "LIFETIME")]
    pub expires: Option<Lifetime>,
    /// A new root threshold.
    #[arg(long, value_name = "N")]
    pub root_threshold: Option<u32>,
    /// A new release threshold (changing it starts a new epoch).
    #[arg(long, value_name = "N")]
    pub release_threshold: Option<u32>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Builds, checks and writes the next root from `spec` (the shared part of rotate and
/// revoke): new keys first under `.next` names, then the root, then the keys moved in place.
pub fn next_version(
    dir: &FleetDir,
    spec: &RotateSpec,
    root_keys: &[PathBuf],
) -> Result<(SignedRoot, Vec<String>)> {
    let current = dir.load_root()?;
    let signers = read_keys(root_keys)?;
    let (next, new_keys) = fleetdir::build_next(&current, &dir.key_names(), spec, &signers)?;
    let staged = |k: &NamedKey| dir.key_file(&format!("{}.next", k.name));
    for k in &new_keys {
        for p in [staged(k), staged(k).with_extension("pub")] {
            if p.exists() {
                std::fs::remove_file(&p)
                    .map_err(|e| CliError::usage(format!("cannot remove {}: {e}", p.display())))?;
            }
        }
        fleetdir::write_key_pair(&staged(k), &k.key)?;
    }
    dir.write_root(&next)?;
    let mut files = vec![
        dir.root_file().display().to_string(),
        dir.version_file(next.root.version).display().to_string(),
    ];
    for k in &new_keys {
        dir.retire_key(&k.name, current.root.version)?;
        for ext in ["key", "pub"] {
            let from = staged(k).with_extension(ext);
            let to = dir.keys_dir().join(format!("{}.{ext}", k.name));
            std::fs::rename(&from, &to)
                .map_err(|e| CliError::usage(format!("cannot move {}: {e}", from.display())))?;
        }
        files.push(dir.key_file(&k.name).display().to_string());
    }
    Ok((next, files))
}

impl Rotate {
    pub fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json);
        if self.replace.is_empty()
            && self.expires.is_none()
            && self.root_threshold.is_none()
            && self.release_threshold.is_none()
        {
            return Err(CliError::usage(
                "nothing to change: give --replace NAME, --expires, --root-threshold or --release-threshold",
            ));
        }
        let dir = FleetDir::new(&self.fleet);
        let now = now_ms();
        let spec = RotateSpec {
            replace: self.replace.clone(),
            root_threshold: self.root_threshold,
            release_threshold: self.release_threshold,
            revoke: Vec::new(),
            now_ms: now,
            expires_ms: self.expires.map(|l| l.from(now)),
        };
        let before = dir.load_root()?.root.epoch;
        let (next, files) = next_version(&dir, &spec, &self.root_key)?;
        let r = &next.root;
        out.say(format!(
            "wrote {}: version {} (epoch {}{}), signed by {}, expires {}",
            dir.root_file().display(),
            r.version,
            r.epoch,
            if r.epoch != before {
                ": the release role changed, so heads of earlier epochs are refused"
            } else {
                ""
            },
            plural(next.signatures.len() as u64, "root key"),
            utc(r.expires_ms)
        ));
        for name in &self.replace {
            out.say(format!(
                "replaced {name}: new {}, the old one moved to {}/old/{name}.v{}.key",
                dir.key_file(name).display(),
                dir.keys_dir().display(),
                r.version - 1
            ));
        }
        out.say(format!(
            "next: fleetcast fleet push --fleet {} --peer HOST:PORT --key {}/release-N.key",
            self.fleet.display(),
            dir.keys_dir().display()
        ));
        out.emit(Event::Root(root_event("rotate", &next, files)));
        Ok(())
    }
}

/// Send the fleet's root chain to an agent; it adopts each version that follows the one it
/// holds and spreads them through the mesh.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Connect with a key the agent admits now (a release key of the root it holds, which after a rotation may be one that the new root drops). Waits until the agent holds the newest version.\n\nExample:\n  fleetcast fleet push --fleet fleet --peer 127.0.0.1:7401 --key fleet/keys/release-2.key"
)]
pub struct Push {
    /// The fleet directory.
    #[arg(long, value_name = "DIR")]
    pub fleet: PathBuf,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// How long `fleet push` waits for the agent to adopt the newest root.
pub const ADOPT_WITHIN: Duration = Duration::from_secs(10);

/// Sends `chain` (the versions after the one the agent holds) through `s` and waits until the
/// agent holds the newest; returns the versions sent and the agent's trust after.
pub async fn push_chain(
    s: &mut Session,
    chain: &[SignedRoot],
) -> Result<(Vec<u64>, fleetcast_protocol::TrustStatus)> {
    let newest = chain.last().map_or(0, |r| r.root.version);
    let st = s.status(STATUS_TIMEOUT).await?;
    if st.trust.version > newest {
        return Err(CliError::usage(format!(
            "the agent holds root version {}, newer than this directory's {newest}: use the fleet directory that made it",
            st.trust.version
        )));
    }
    let send: Vec<SignedRoot> = chain
        .iter()
        .filter(|r| r.root.version > st.trust.version)
        .cloned()
        .collect();
    if send.is_empty() {
        return Ok((Vec::new(), st.trust));
    }
    s.push_roots(&send)?;
    let sent = send.iter().map(|r| r.root.version).collect();
    let deadline = tokio::time::Instant::now() + ADOPT_WITHIN;
    loop {
        let st = s.status(STATUS_TIMEOUT).await.map_err(|e| {
            CliError::new(
                e.kind,
                format!(
                    "{e} (after the roots were sent: the agent may have re-checked this CLI's key against the new root; connect with a release key that stays, and check with fleetcast status --key ...)"
                ),
            )
        })?;
        if st.trust.version >= newest {
            return Ok((sent, st.trust));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::refused(format!(
                "the agent still holds root version {} (epoch {}) {} after root versions up to {newest} were sent: it refused them (an agent without a root, configured with trusted_keys, takes none; see its log)",
                st.trust.version,
                st.trust.epoch,
                crate::target::secs(ADOPT_WITHIN)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Push {
    pub async fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json);
        let chain = FleetDir::new(&self.fleet).load_chain()?;
        let key = self.identity.read()?;
        let target = Target::from_args(&self.target).await?;
        let mut s = Session::connect_as(&target, key.as_ref()).await?;
        let (sent, trust) = push_chain(&mut s, &chain).await?;
        if sent.is_empty() {
            out.say(format!(
                "the agent at {} already holds root version {} (epoch {}): nothing to send",
                s.addr(),
                trust.version,
                trust.epoch
            ));
        } else {
            out.say(format!(
                "sent root versions {}..={} to {} (agent {}); it holds version {} (epoch {}) and spreads it through the mesh",
                sent[0],
                sent[sent.len() - 1],
                s.addr(),
                s.peer().short(),
                trust.version,
                trust.epoch
            ));
        }
        out.emit(Event::RootsPushed(json::RootsPushed {
            peer: s.addr().to_string(),
            peer_node: s.peer().to_string(),
            sent,
            agent_version: trust.version,
            agent_epoch: trust.epoch,
        }));
        Ok(())
    }
}

/// Show the fleet root: roles and their keys, thresholds, expiry, versions, epoch, revoked.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  fleetcast fleet show --fleet fleet\n  fleetcast fleet show --fleet fleet --json"
)]
pub struct Show {
    /// The fleet directory.
    #[arg(long, value_name = "DIR")]
    pub fleet: PathBuf,
    #[command(flatten)]
    pub out: OutArgs,
}

impl Show {
    pub fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json);
        let dir = FleetDir::new(&self.fleet);
        let chain = dir.load_chain()?;
        let show = show_json(&chain, &dir.key_names());
        out.print(&render_show(&show, now_ms()));
        out.emit(Event::Fleet(Box::new(show)));
        Ok(())
    }
}

/// The `fleet show` object of `chain` (oldest first), keys named by `names`.
pub fn show_json(
    chain: &[SignedRoot],
    names: &[(String, fleetcast_protocol::PublicKey)],
) -> json::FleetShow {
    let r = &chain.last().expect("a chain has a root").root;
    let role = |name: &str, role: &fleetcast_protocol::Role| json::RoleJson {
        role: name.into(),
        threshold: role.threshold,
        keys: role
            .keys
            .iter()
            .map(|k| json::KeyJson {
                name: names.iter().find(|(_, p)| p == k).map(|(n, _)| n.clone()),
                key: k.to_string(),
            })
            .collect(),
    };
    json::FleetShow {
        fleet: r.fleet.clone(),
        version: r.version,
        epoch: r.epoch,
        issued_ms: r.issued_ms,
        expires_ms: r.expires_ms,
        roles: vec![
            role("root", &r.roles.root),
            role("release", &r.roles.release),
            role("nodes", &r.roles.nodes),
        ],
        revoked: r.revoked.iter().map(|n| n.to_string()).collect(),
        versions: chain
            .iter()
            .map(|s| json::VersionJson {
                version: s.root.version,
                epoch: s.root.epoch,
                issued_ms: s.root.issued_ms,
                expires_ms: s.root.expires_ms,
                signatures: s.signatures.len(),
            })
            .collect(),
    }
}

/// `fleet show` as text.
pub fn render_show(f: &json::FleetShow, now: u64) -> String {
    let mut o = String::new();
    let left = if f.expires_ms > now {
        format!("in {}", days(f.expires_ms - now))
    } else {
        "EXPIRED: agents accept no new head; fleetcast fleet rotate --expires 365d".into()
    };
    let _ = writeln!(
        o,
        "fleet {:?}: root version {}, epoch {}, expires {} ({left})",
        f.fleet,
        f.version,
        f.epoch,
        utc(f.expires_ms)
    );
    let _ = writeln!(o);
    let mut t = Table::new(&["ROLE", "THRESHOLD", "NAME", "KEY"]);
    for r in &f.roles {
        for (i, k) in r.keys.iter().enumerate() {
            t.row(vec![
                if i == 0 {
                    r.role.clone()
                } else {
                    String::new()
                },
                if i == 0 {
                    format!("{} of {}", r.threshold, r.keys.len())
                } else {
                    String::new()
                },
                k.name.clone().unwrap_or_else(|| "?".into()),
                k.key[..16].to_string(),
            ]);
        }
    }
    o.push_str(&t.render(""));
    let _ = writeln!(o);
    let mut t = Table::new(&["VERSION", "EPOCH", "ISSUED", "EXPIRES", "SIGNATURES"]);
    for v in &f.versions {
        t.row(vec![
            v.version.to_string(),
            v.epoch.to_string(),
            utc(v.issued_ms),
            utc(v.expires_ms),
            v.signatures.to_string(),
        ]);
    }
    o.push_str(&t.render(""));
    if f.revoked.is_empty() {
        let _ = writeln!(o, "\nno node revoked");
    } else {
        let _ = writeln!(o, "\nrevoked nodes:");
        for n in &f.revoked {
            let _ = writeln!(o, "  {n}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleetdir::tests::{NOW, spec};

    #[test]
    fn show_names_each_key_and_lists_versions() {
        let (root, keys) = fleetdir::build_init(&spec()).unwrap();
        let names: Vec<_> = keys
            .iter()
            .map(|k| {
                (
                    k.name.clone(),
                    fleetcast_protocol::PublicKey::from(&k.key.verifying_key()),
                )
            })
            .collect();
        let f = show_json(std::slice::from_ref(&root), &names);
        assert_eq!(f.roles[1].role, "release");
        assert_eq!(f.roles[1].threshold, 2);
        assert_eq!(f.roles[1].keys[0].name.as_deref(), Some("release-1"));
        assert_eq!(f.roles[2].keys[0].name.as_deref(), Some("enroll"));
        let text = render_show(&f, NOW);
        assert!(text.contains("root version 1, epoch 1"), "{text}");
        assert!(text.contains("(in 365 days)"), "{text}");
        assert!(text.contains("release  2 of 3     release-1"), "{text}");
        assert!(text.contains("no node revoked"), "{text}");
        let text = render_show(&f, NOW + 366 * 86_400_000);
        assert!(text.contains("EXPIRED"), "{text}");
    }
}
