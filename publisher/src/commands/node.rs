//! `fleetcast node`: enroll a node (a certificate signed by the enroll key) and revoke one (a
//! new root version listing it).

use std::path::PathBuf;

use fleetcast_protocol::NodeId;

use super::fleet::next_version;
use crate::error::{CliError, Result};
use crate::fleetdir::{
    self, DEFAULT_EXPIRES, FleetDir, Lifetime, RotateSpec, now_ms, write_atomic,
};
use crate::json::{self, Event};
use crate::out::{Out, OutArgs};
use crate::signing::read_key;
use crate::table::utc;

/// Nodes of the fleet: enroll, revoke.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  fleetcast node enroll --fleet fleet --node $(fleetcast-agent id --data-dir edge1) --out edge1/node.cert\n  fleetcast node revoke --fleet fleet --node 3f1c...e9 --root-key fleet/keys/root-1.key --root-key fleet/keys/root-2.key"
)]
pub struct Node {
    #[command(subcommand)]
    pub cmd: NodeCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum NodeCmd {
    Enroll(Enroll),
    Revoke(Revoke),
}

impl Node {
    pub fn json(&self) -> bool {
        match &self.cmd {
            NodeCmd::Enroll(c) => c.format.json,
            NodeCmd::Revoke(c) => c.out.json,
        }
    }

    pub fn execute(self) -> Result<()> {
        match self.cmd {
            NodeCmd::Enroll(c) => c.execute(),
            NodeCmd::Revoke(c) => c.execute(),
        }
    }
}

fn node_id(s: &str) -> std::result::Result<NodeId, String> {
    s.parse::<NodeId>().map_err(|e| {
        format!("{e}: the agent prints its node id with `fleetcast-agent id --data-dir DIR`")
    })
}

/// Write a node certificate: "node ID belongs to this fleet until T", signed by the enroll key.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Give the certificate to the agent (node_cert = \"node.cert\" in its config, or --node-cert). It is checked against the fleet root before it is written.\n\nExample:\n  fleetcast node enroll --fleet fleet --node $(fleetcast-agent id --data-dir edge1) --out edge1/node.cert --expires 365d"
)]
pub struct Enroll {
    /// The fleet directory.
    #[arg(long, value_name = "DIR")]
    pub fleet: PathBuf,
    /// The node's id (64 hex characters: `fleetcast-agent id --data-dir DIR`).
    #[arg(long, value_name = "ID", value_parser = node_id)]
    pub node: NodeId,
    /// Where to write the certificate (JSON).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The nodes role's key; default DIR/keys/enroll.key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// How long the certificate is valid.
    #[arg(long, value_name = "LIFETIME", default_value = DEFAULT_EXPIRES)]
    pub expires: Lifetime,
    #[command(flatten)]
    pub format: OutArgs,
}

impl Enroll {
    pub fn execute(self) -> Result<()> {
        let out = Out::new(self.format.json);
        let dir = FleetDir::new(&self.fleet);
        let root = dir.load_root()?;
        let key_file = self.key.clone().unwrap_or_else(|| dir.key_file("enroll"));
        let key = read_key(&key_file)?;
        let now = now_ms();
        let cert = fleetdir::build_cert(&root, self.node, &key, now, self.expires.from(now))?;
        let mut text = serde_json::to_string_pretty(&cert).expect("a certificate serialises");
        text.push('\n');
        write_atomic(&self.out, text.as_bytes(), false)?;
        out.say(format!(
            "wrote {}: node {} in fleet {:?} until {}, signed by {}; set node_cert = \"{}\" in that agent's config",
            self.out.display(),
            self.node,
            root.root.fleet,
            utc(cert.cert.expires_ms),
            key_file.display(),
            self.out.display()
        ));
        out.emit(Event::Enrolled(json::Enrolled {
            node: self.node.to_string(),
            fleet: root.root.fleet.clone(),
            cert_file: self.out.display().to_string(),
            expires_ms: cert.cert.expires_ms,
        }));
        Ok(())
    }
}

/// Revoke nodes: a new root version that lists them; agents refuse them whatever their
/// certificates say, once it reaches them (fleetcast fleet push).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  fleetcast node revoke --fleet fleet --node 3f1c...e9 --root-key fleet/keys/root-1.key --root-key fleet/keys/root-2.key\n  fleetcast fleet push --fleet fleet --peer 127.0.0.1:7401 --key fleet/keys/release-1.key"
)]
pub struct Revoke {
    /// The fleet directory.
    #[arg(long, value_name = "DIR")]
    pub fleet: PathBuf,
    /// A node id to revoke (repeatable).
    #[arg(long, value_name = "ID", value_parser = node_id, required = true)]
    pub node: Vec<NodeId>,
    /// A current root key's secret file (repeatable; a threshold of them signs).
    #[arg(long, value_name = "FILE", required = true)]
    pub root_key: Vec<PathBuf>,
    /// The new version's lifetime from now (default: the current expiry).
    #[arg(long, value_name = "LIFETIME")]
    pub expires: Option<Lifetime>,
    #[command(flatten)]
    pub out: OutArgs,
}

impl Revoke {
    pub fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json);
        let dir = FleetDir::new(&self.fleet);
        let now = now_ms();
        let spec = RotateSpec {
            revoke: self.node.clone(),
            now_ms: now,
            expires_ms: self.expires.map(|l| l.from(now)),
            ..Default::default()
        };
        let (next, files) = next_version(&dir, &spec, &self.root_key)?;
        if next.root.revoked.is_empty() {
            return Err(CliError::usage("no node revoked"));
        }
        for n in &self.node {
            out.say(format!("revoked node {n}"));
        }
        out.say(format!(
            "wrote {}: version {} (epoch {}) lists {} revoked; next: fleetcast fleet push --fleet {} --peer HOST:PORT --key {}",
            dir.root_file().display(),
            next.root.version,
            next.root.epoch,
            next.root.revoked.len(),
            self.fleet.display(),
            dir.key_file("release-1").display()
        ));
        out.emit(Event::Root(json::RootEvent {
            action: "revoke".into(),
            fleet: next.root.fleet.clone(),
            version: next.root.version,
            epoch: next.root.epoch,
            expires_ms: next.root.expires_ms,
            files,
        }));
        Ok(())
    }
}
