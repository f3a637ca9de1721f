//! The `fleetcast-agent` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use fleetcast_protocol::trust::Admission;

use crate::config::AgentConfig;

#[derive(Parser, Debug)]
#[command(
    name = "fleetcast-agent",
    version,
    about = "fleetcast edge agent: receives signed releases over the QUIC mesh and serves them with wasmtime",
    after_help = "Example:\n  fleetcast-agent run --config /etc/fleetcast/agent.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent.
    #[command(
        after_help = "Example:\n  fleetcast-agent run --config /etc/fleetcast/agent.toml\n  fleetcast-agent run --data-dir ./edge1 --root root.json --node-cert edge1.cert --listen 127.0.0.1:7401 --http 127.0.0.1:8401 --contact 127.0.0.1:7402\n  fleetcast-agent run --data-dir ./lab1 --trusted-key ops.pub   # a lab fleet: no root, open admission"
    )]
    Run(RunArgs),
    /// Print this agent's node id (its transport key, 64 hex characters), creating the identity
    /// in the data directory if there is none yet. Enroll the node with it.
    #[command(
        after_help = "Examples:\n  fleetcast-agent id --data-dir /var/lib/fleetcast\n  fleetcast node enroll --node $(fleetcast-agent id --data-dir /var/lib/fleetcast) --out node.cert"
    )]
    Id(IdArgs),
    /// Roll an app back on this node only, to a release it keeps compiled, without the network
    /// (through the running agent's local admin endpoint). Shown as a local override in status
    /// until the next head for the app arrives.
    #[command(
        after_help = "Example:\n  fleetcast-agent rollback --app shop\n  fleetcast-agent rollback --app shop --to 1.3.0 --admin 127.0.0.1:9401"
    )]
    Rollback(RollbackArgs),
    /// Print the running agent's status (JSON, from its local admin endpoint).
    #[command(
        after_help = "The JSON goes to stdout; one line with the fleet root's version, epoch and expiry goes to stderr.\n\nExamples:\n  fleetcast-agent status                              # the agent on this host (admin 127.0.0.1:9401)\n  fleetcast-agent status --admin 127.0.0.1:9402       # another agent's admin endpoint\n  fleetcast-agent status --config /etc/fleetcast/agent.toml | jq '.apps[] | {app, state}'"
    )]
    Status(AdminArgs),
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// Data directory (where node.key lives).
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// `open` or `enrolled`.
fn parse_admission(s: &str) -> Result<Admission, String> {
    match s {
        "open" => Ok(Admission::Open),
        "enrolled" => Ok(Admission::Enrolled),
        other => Err(format!("{other:?} is not an admission: open or enrolled")),
    }
}

/// Where the running agent's admin endpoint is.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The admin endpoint's address (default: from --config, else 127.0.0.1:9401).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// The agent's config file, to find its admin address.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl AdminArgs {
    fn addr(&self) -> Result<SocketAddr> {
        if let Some(a) = self.admin {
            return Ok(a);
        }
        if let Some(path) = &self.config {
            return AgentConfig::load(path)?.admin.listen.with_context(|| {
                format!(
                    "{} disables the admin endpoint ([admin] listen is unset)",
                    path.display()
                )
            });
        }
        Ok(crate::config::default_admin())
    }
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// The app to roll back.
    #[arg(long)]
    pub app: String,
    /// The version to serve (default: the newest cached release that is neither serving nor
    /// the last one that failed on this node).
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags override the config file.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Agent config file (TOML); see deploy/agent.example.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Fleet name.
    #[arg(long)]
    pub fleet: Option<String>,
    /// QUIC listen address for the mesh.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address for the apps.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Data directory (node identity and sled store).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The fleet root file (root.json; config `root`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// This agent's node certificate file (config `node_cert`).
    #[arg(long)]
    pub node_cert: Option<PathBuf>,
    /// Who may connect: enrolled (default with a root) or open (config `admission`).
    #[arg(long, value_parser = parse_admission)]
    pub admission: Option<Admission>,
    /// A trusted publisher public key file, for a lab fleet without a root (repeatable;
    /// replaces the config's list).
    #[arg(long = "trusted-key")]
    pub trusted_keys: Vec<PathBuf>,
    /// A bootstrap contact: an agent to join the mesh through (repeatable; replaces the
    /// config's `contacts`).
    #[arg(long = "contact")]
    pub contacts: Vec<SocketAddr>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Admin endpoint address (status, metrics, local rollback); `off` disables it.
    #[arg(long)]
    pub admin: Option<String>,
}

impl RunArgs {
    /// The effective config: the file (if any) with the flags applied on top.
    pub fn config(&self) -> Result<AgentConfig> {
        let mut cfg = match (&self.config, &self.data_dir) {
            (Some(path), _) => AgentConfig::load(path)?,
            (None, Some(dir)) => AgentConfig::with_data_dir(dir.clone()),
            (None, None) => {
                anyhow::bail!("pass --config FILE or at least --data-dir DIR (see --help)")
            }
        };
        if let Some(v) = &self.fleet {
            cfg.fleet = v.clone();
        }
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = self.http {
            cfg.http = v;
        }
        if let Some(v) = &self.data_dir {
            cfg.data_dir = v.clone();
        }
        if !self.trusted_keys.is_empty() {
            cfg.trusted_keys = self.trusted_keys.clone();
        }
        if let Some(v) = &self.root {
            cfg.root = Some(v.clone());
        }
        if let Some(v) = &self.node_cert {
            cfg.node_cert = Some(v.clone());
        }
        if let Some(v) = self.admission {
            cfg.admission = Some(v);
        }
        if !self.contacts.is_empty() {
            cfg.contacts = self.contacts.clone();
        }
        if let Some(v) = &self.log_format {
            cfg.log_format = v.clone();
        }
        match self.admin.as_deref() {
            None => {}
            Some("off") => cfg.admin.listen = None,
            Some(a) => {
                cfg.admin.listen = Some(a.parse().with_context(|| {
                    format!("--admin {a:?} is not an address like 127.0.0.1:9401 (or `off`)")
                })?)
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

impl Cli {
    pub fn execute(self) -> Result<()> {
        match self.command {
            Command::Run(args) => {
                let cfg = args.config()?;
                fleetcast_net::logging::init(&cfg.log_format);
                let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
                rt.block_on(async move {
                    let agent = crate::agent::start(cfg).await?;
                    // One machine-readable line for supervisors and `fleetcast demo`.
                    let admin = agent
                        .admin_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "off".into());
                    println!(
                        "fleetcast-agent ready node={} quic={} http={} admin={admin}",
                        agent.node_id(),
                        agent.quic_addr(),
                        agent.http_addr()
                    );
                    shutdown_signal().await;
                    tracing::info!("shutting down");
                    agent.shutdown().await;
                    Ok(())
                })
            }
            Command::Id(args) => {
                println!("{}", node_id(&args.data_dir)?);
                Ok(())
            }
            Command::Rollback(args) => {
                let addr = args.admin.addr()?;
                let mut path = format!("/apps/{}/rollback", args.app);
                if let Some(v) = &args.to {
                    path.push_str(&format!("?to={v}"));
                }
                let (status, body) = admin_request(addr, "POST", &path)?;
                if status != 200 {
                    anyhow::bail!("rollback refused: {}", body.trim());
                }
                let v: serde_json::Value = serde_json::from_str(&body)
                    .with_context(|| format!("unexpected answer from the agent: {body}"))?;
                println!(
                    "{}: now serving {} (was {}), local override; serving after {} µs, durable after {} µs",
                    v["app"].as_str().unwrap_or_default(),
                    v["to"].as_str().unwrap_or_default(),
                    v["from"].as_str().unwrap_or("nothing"),
                    v["serving_after_us"],
                    v["durable_after_us"]
                );
                Ok(())
            }
            Command::Status(args) => {
                let (status, body) = admin_request(args.addr()?, "GET", "/status")?;
                if status != 200 {
                    anyhow::bail!("status failed: {}", body.trim());
                }
                if let Some(line) = trust_line(&body) {
                    eprintln!("{line}");
                }
                for line in app_lines(&body) {
                    eprintln!("{line}");
                }
                println!("{}", body.trim_end());
                Ok(())
            }
        }
    }
}

/// The node id of the agent whose data directory is `data_dir` (`node.key`, created if
/// missing: the id a node is enrolled with before its first start).
pub fn node_id(data_dir: &std::path::Path) -> Result<fleetcast_protocol::wire::NodeId> {
    let identity = fleetcast_net::Identity::load_or_create(data_dir.join("node.key"))
        .with_context(|| format!("node identity in {}", data_dir.display()))?;
    Ok(identity.node_id())
}

/// The status's fleet root in one line: version, epoch, expiry (and a warning when it expired
/// or expires soon). `None` when the answer carries no trust.
pub fn trust_line(status_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(status_json).ok()?;
    let t: fleetcast_protocol::trust::TrustStatus =
        serde_json::from_value(v.get("trust")?.clone()).ok()?;
    if t.version == 0 {
        return Some(format!(
            "fleet {}: no root (trusted_keys, a lab setting): heads need 1 of {} key(s), nothing expires",
            t.fleet, t.release_keys
        ));
    }
    let expires = if t.expires_ms == u64::MAX {
        "never".to_string()
    } else {
        let days = t.expires_ms.saturating_sub(t.now_ms) / (24 * 3600 * 1000);
        format!("{} (unix ms; in {days} days)", t.expires_ms)
    };
    let warn = if t.expired {
        " — EXPIRED: no new head is accepted until a newer root arrives (fleetcast fleet push)"
    } else if t.expires_soon {
        " — expires soon: sign and push a new root version"
    } else {
        ""
    };
    Some(format!(
        "fleet {}: root version {} epoch {}, expires {expires}; heads need {} of {} release keys, {} revoked{warn}",
        t.fleet, t.version, t.epoch, t.release_threshold, t.release_keys, t.revoked
    ))
}

/// One line per app of the status: what serves and what is staged for a later wave.
pub fn app_lines(status_json: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(status_json) else {
        return Vec::new();
    };
    v.get("apps")
        .and_then(|a| a.as_array())
        .map(|apps| {
            apps.iter()
                .filter_map(|a| a.get("summary")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One HTTP/1.1 request to the local admin endpoint (plain std: no runtime needed).
pub fn admin_request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .with_context(|| {
            format!("cannot reach the agent's admin endpoint at {addr}; is the agent running (pass --admin or --config)?")
        })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer from {addr}"))?;
    Ok((status, body.to_string()))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_creates_the_identity_once_and_prints_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("edge1");
        let run = || {
            Cli::try_parse_from([
                "fleetcast-agent",
                "id",
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .unwrap()
            .execute()
            .unwrap()
        };
        run();
        let key = data.join("node.key");
        let id = node_id(&data).unwrap();
        let before = std::fs::read(&key).unwrap();
        run();
        assert_eq!(std::fs::read(&key).unwrap(), before, "not created again");
        assert_eq!(id.to_string().len(), 64);
        assert_eq!(node_id(&data).unwrap(), id);
        assert!(
            Cli::try_parse_from(["fleetcast-agent", "id"]).is_err(),
            "--data-dir is required"
        );
    }

    #[test]
    fn run_flags_set_root_node_cert_and_admission() {
        let cli = Cli::try_parse_from([
            "fleetcast-agent",
            "run",
            "--data-dir",
            "d",
            "--root",
            "r.json",
            "--node-cert",
            "n.cert",
            "--admission",
            "open",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let cfg = args.config().unwrap();
        assert_eq!(cfg.root, Some(PathBuf::from("r.json")));
        assert_eq!(cfg.node_cert, Some(PathBuf::from("n.cert")));
        assert_eq!(cfg.admission(), Admission::Open);
        let err = Cli::try_parse_from(["fleetcast-agent", "run", "--admission", "all"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("open or enrolled"), "{err}");
        // Both trust sources: an error naming both keys.
        let cli = Cli::try_parse_from([
            "fleetcast-agent",
            "run",
            "--data-dir",
            "d",
            "--root",
            "r.json",
            "--trusted-key",
            "ops.pub",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let err = format!("{:#}", args.config().unwrap_err());
        assert!(
            err.contains("root") && err.contains("trusted_keys"),
            "{err}"
        );
    }

    #[test]
    fn the_status_trust_line_names_version_epoch_and_expiry() {
        let t = fleetcast_protocol::trust::TrustStatus {
            fleet: "prod".into(),
            version: 3,
            epoch: 2,
            expires_ms: 11 * 24 * 3600 * 1000,
            now_ms: 24 * 3600 * 1000,
            expires_soon: true,
            release_keys: 3,
            release_threshold: 2,
            ..Default::default()
        };
        let body = serde_json::json!({ "node": "x", "trust": t }).to_string();
        let line = trust_line(&body).unwrap();
        assert!(
            line.contains("root version 3 epoch 2") && line.contains("in 10 days"),
            "{line}"
        );
        assert!(
            line.contains("2 of 3 release keys") && line.contains("expires soon"),
            "{line}"
        );
        let expired = fleetcast_protocol::trust::TrustStatus { expired: true, ..t };
        let body = serde_json::json!({ "trust": expired }).to_string();
        assert!(trust_line(&body).unwrap().contains("EXPIRED"));
        let legacy = fleetcast_protocol::trust::Trust::legacy("lab".into(), vec![]).status();
        let body = serde_json::json!({ "trust": legacy }).to_string();
        assert!(trust_line(&body).unwrap().contains("no root"));
        assert_eq!(trust_line("{}"), None);
    }
}
