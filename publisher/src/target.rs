//! Which agent a command talks to (`--peer HOST:PORT` or `IP:PORT`) and how long it waits for
//! one to answer (`--connect-timeout SECS`, the same flag and default on every command that
//! talks to an agent).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{CliError, Result};

/// The default of `--connect-timeout`, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: &str = "1";

/// How long library callers (tests, benches) wait for the handshake: a loaded test machine
/// may take longer than the CLI's one second.
pub const LIBRARY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `--peer`: a socket address, or a host name and port resolved when the command runs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PeerAddr {
    Ip(SocketAddr),
    Host { host: String, port: u16 },
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected HOST:PORT or IP:PORT (like localhost:7401 or 127.0.0.1:7401), the agent's QUIC listen address"
            )
        };
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(PeerAddr::Ip(a));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if port == 0 || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(PeerAddr::Host {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(a) => write!(f, "{a}"),
            PeerAddr::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A number of seconds given on the command line (fractions allowed: `0.5`), kept as typed
/// for messages.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Secs(pub Duration);

impl FromStr for Secs {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(Secs(Duration::from_secs_f64(v))),
            _ => Err(format!(
                "{s:?}: expected a number of seconds above 0 (like 1 or 2.5)"
            )),
        }
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", secs(self.0))
    }
}

/// `d` as a short number of seconds: `1s`, `2.5s`, `0.25s`.
pub fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0'))
    }
}

/// `--connect-timeout`, shared by every command that talks to an agent.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Seconds to wait for the agent to answer the QUIC handshake (re-dialled every 250 ms
    /// meanwhile); a script that just started its agents can pass more to wait for them.
    #[arg(long, value_name = "SECS", default_value = DEFAULT_CONNECT_TIMEOUT_SECS)]
    pub connect_timeout: Secs,
}

/// `--peer` and `--connect-timeout`.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "The agent to talk to")]
pub struct TargetArgs {
    /// The agent to talk to: its QUIC listen address (`listen`, printed as quic= in its ready
    /// line), as HOST:PORT or IP:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: PeerAddr,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `--peer` where a command can do without an agent (`release --sign-only --seq`), and
/// `--connect-timeout`.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "The agent to talk to")]
pub struct OptTargetArgs {
    /// The agent to talk to: its QUIC listen address (`listen`, printed as quic= in its ready
    /// line), as HOST:PORT or IP:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Option<PeerAddr>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl OptTargetArgs {
    /// The flags with `--peer` given, or a usage error saying `what` needs it.
    pub fn required(&self, what: &str) -> Result<TargetArgs> {
        match &self.peer {
            Some(p) => Ok(TargetArgs {
                peer: p.clone(),
                connect: self.connect.clone(),
            }),
            None => Err(CliError::usage(format!(
                "{what} needs --peer HOST:PORT: the agent's QUIC listen address"
            ))),
        }
    }
}

/// An agent to dial: the addresses `--peer` resolved to, and how long to try.
#[derive(Clone, Debug)]
pub struct Target {
    /// As the operator wrote it (for messages).
    pub label: String,
    pub addrs: Vec<SocketAddr>,
    pub connect_timeout: Duration,
}

impl Target {
    /// One known address (library callers).
    pub fn addr(addr: SocketAddr, connect_timeout: Duration) -> Target {
        Target {
            label: addr.to_string(),
            addrs: vec![addr],
            connect_timeout,
        }
    }

    /// Resolves `--peer` (a host name through the system resolver; every address it returns is
    /// tried).
    pub async fn resolve(peer: &PeerAddr, connect_timeout: Duration) -> Result<Target> {
        let addrs = match peer {
            PeerAddr::Ip(a) => vec![*a],
            PeerAddr::Host { host, port } => {
                let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| {
                        CliError::unreachable(format!(
                            "cannot resolve {host} (--peer {peer}): {e}; check the name, or give the agent's IP:PORT"
                        ))
                    })?
                    .collect();
                addrs.dedup();
                if addrs.is_empty() {
                    return Err(CliError::unreachable(format!(
                        "{host} (--peer {peer}) resolves to no address; give the agent's IP:PORT"
                    )));
                }
                addrs
            }
        };
        Ok(Target {
            label: peer.to_string(),
            addrs,
            connect_timeout,
        })
    }

    /// [`Target::resolve`] from the flags.
    pub async fn from_args(args: &TargetArgs) -> Result<Target> {
        Target::resolve(&args.peer, args.connect.connect_timeout.0).await
    }

    /// The label, and the addresses when a name resolved to something else.
    pub fn describe(&self) -> String {
        let plain: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        if plain.len() == 1 && plain[0] == self.label {
            self.label.clone()
        } else {
            format!("{} ({})", self.label, plain.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_takes_ip_port_or_host_port_and_says_what_it_expects() {
        assert_eq!(
            "127.0.0.1:7401".parse::<PeerAddr>().unwrap(),
            PeerAddr::Ip("127.0.0.1:7401".parse().unwrap())
        );
        assert_eq!(
            "[::1]:7401".parse::<PeerAddr>().unwrap(),
            PeerAddr::Ip("[::1]:7401".parse().unwrap())
        );
        assert_eq!(
            "localhost:7401".parse::<PeerAddr>().unwrap(),
            PeerAddr::Host {
                host: "localhost".into(),
                port: 7401
            }
        );
        assert_eq!(
            "edge-1.example.com:7401"
                .parse::<PeerAddr>()
                .unwrap()
                .to_string(),
            "edge-1.example.com:7401"
        );
        for bad in [
            "7401",
            "localhost",
            "localhost:",
            "localhost:http",
            "localhost:0",
            "local host:7401",
            "-x:7401",
            ":7401",
            "a..b:7401",
        ] {
            let e = bad.parse::<PeerAddr>().unwrap_err();
            assert!(e.contains("expected HOST:PORT or IP:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn seconds_parse_with_fractions_and_print_short() {
        assert_eq!("1".parse::<Secs>().unwrap().0, Duration::from_secs(1));
        assert_eq!("2.5".parse::<Secs>().unwrap().to_string(), "2.5s");
        assert_eq!(secs(Duration::from_millis(250)), "0.25s");
        assert_eq!(secs(Duration::from_secs(60)), "60s");
        for bad in ["0", "-1", "x", ""] {
            assert!(bad.parse::<Secs>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_addresses() {
        let t = Target::resolve(&"localhost:7401".parse().unwrap(), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(!t.addrs.is_empty());
        assert!(
            t.addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7401),
            "{:?}",
            t.addrs
        );
        assert!(
            t.describe().starts_with("localhost:7401 ("),
            "{}",
            t.describe()
        );
    }
}
