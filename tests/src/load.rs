//! Closed-loop HTTP/1.1 load generator, for benchmarks that compare the agent's HTTP front with
//! other hosts (`wasmtime serve`) under the same client.
//!
//! [`run`] opens `connections` persistent keep-alive connections (hyper's low-level
//! `client::conn::http1` over a `TcpStream` with `TCP_NODELAY`), one task each, and sends `GET`
//! requests back to back on each: a new request goes out as soon as the previous response body
//! has been read in full. Requests that start during the warm-up are not recorded; every
//! request that starts after it is a [`Sample`] in the [`LoadReport`], failures included.
//!
//! Accounting rules:
//! - a response of any status is a sample with that status; a failed connect, a failed send or
//!   a body that breaks off is a sample with status `0` (transport error), after which the task
//!   opens a new connection (after a connect failure it waits [`RECONNECT_PAUSE`] first, so a
//!   dead server does not turn into a busy loop);
//! - a connection the server closed cleanly between two requests (keep-alive not honoured) is
//!   replaced without an error and counted in [`LoadReport::reconnects`];
//! - requests still in flight when the measured window ends are abandoned and counted in
//!   [`LoadReport::unfinished`], not as samples (their latency is unknown). A server that
//!   never answers therefore shows up as `unfinished`, not as slow samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Pause after a failed connect before the next attempt.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// What to load and for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server address to connect to.
    pub addr: SocketAddr,
    /// `Host` header of every request (the agent routes on it).
    pub host: String,
    /// Request target in origin form, e.g. `/` or `/health?x=1`.
    pub path: String,
    /// Concurrent connections, one outstanding request each (at least 1).
    pub connections: usize,
    /// Measured window, after the warm-up (must be non-zero).
    pub duration: Duration,
    /// Warm-up: requests starting in it are sent but not recorded.
    pub warmup: Duration,
}

/// One recorded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the request started, in µs after the end of the warm-up.
    pub at_us: u64,
    /// From just before the request was sent to the end of its body (or to the error), in µs
    /// (saturates at `u32::MAX`, about 71 minutes). A request that needed a new connection
    /// includes the connect and handshake.
    pub latency_us: u32,
    /// HTTP status; `0` = transport error (connect, send or body failure).
    pub status: u16,
}

impl Sample {
    /// A 2xx response.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn latency(&self) -> Duration {
        Duration::from_micros(u64::from(self.latency_us))
    }
}

/// Everything one [`run`] recorded.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Every recorded request, sorted by `at_us`.
    pub samples: Vec<Sample>,
    /// Length of the measured window (the configured `duration`).
    pub window: Duration,
    /// Connections used.
    pub connections: usize,
    /// Requests abandoned in flight when the window ended (not in `samples`).
    pub unfinished: u64,
    /// Connections replaced after the server closed one cleanly between requests.
    pub reconnects: u64,
}

impl LoadReport {
    /// Recorded requests.
    pub fn requests(&self) -> u64 {
        self.samples.len() as u64
    }

    /// Requests answered with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.samples.iter().filter(|s| s.is_ok()).count() as u64
    }

    /// Requests that failed: a status outside 2xx, or a transport error (status 0).
    pub fn failed(&self) -> u64 {
        self.requests() - self.ok()
    }

    /// Recorded requests (failed ones included) per second of the measured window.
    pub fn throughput_rps(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.samples.len() as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency quantile `q` (0.0 ..= 1.0, e.g. 0.99) over all samples; see [`percentile_of`].
    pub fn percentile(&self, q: f64) -> Duration {
        percentile_of(&self.samples, q)
    }

    /// The largest latency recorded (zero when there is none).
    pub fn max_latency(&self) -> Duration {
        self.samples
            .iter()
            .map(Sample::latency)
            .max()
            .unwrap_or_default()
    }

    /// Failed requests by status (`0` = transport error).
    pub fn failures_by_status(&self) -> BTreeMap<u16, u64> {
        let mut by_status = BTreeMap::new();
        for s in self.samples.iter().filter(|s| !s.is_ok()) {
            *by_status.entry(s.status).or_insert(0) += 1;
        }
        by_status
    }

    /// One line: requests, failures by status, throughput, latency quantiles in µs.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} requests in {:.1} s over {} connections, {} failed",
            self.requests(),
            self.window.as_secs_f64(),
            self.connections,
            self.failed()
        );
        let failures = self.failures_by_status();
        if !failures.is_empty() {
            let list: Vec<String> = failures
                .iter()
                .map(|(status, n)| match status {
                    0 => format!("transport error: {n}"),
                    s => format!("{s}: {n}"),
                })
                .collect();
            let _ = write!(line, " ({})", list.join(", "));
        }
        let _ = write!(
            line,
            ", {:.0} req/s, latency p50 {} µs p90 {} µs p99 {} µs max {} µs",
            self.throughput_rps(),
            self.percentile(0.50).as_micros(),
            self.percentile(0.90).as_micros(),
            self.percentile(0.99).as_micros(),
            self.max_latency().as_micros()
        );
        if self.unfinished > 0 {
            let _ = write!(line, ", {} unfinished", self.unfinished);
        }
        if self.reconnects > 0 {
            let _ = write!(line, ", {} reconnects", self.reconnects);
        }
        line
    }

    /// The same figures as [`summary`](Self::summary) as one line of JSON: `requests`, `ok`,
    /// `failed`, `failures` (object: status → count, `"0"` = transport error), `rps`,
    /// `p50_us`, `p90_us`, `p99_us`, `max_us`, `duration_s`, `connections`, `unfinished`,
    /// `reconnects`.
    pub fn json(&self) -> String {
        let failures: Vec<String> = self
            .failures_by_status()
            .iter()
            .map(|(status, n)| format!("\"{status}\":{n}"))
            .collect();
        format!(
            "{{\"requests\":{},\"ok\":{},\"failed\":{},\"failures\":{{{}}},\"rps\":{:.1},\
             \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"duration_s\":{},\
             \"connections\":{},\"unfinished\":{},\"reconnects\":{}}}",
            self.requests(),
            self.ok(),
            self.failed(),
            failures.join(","),
            self.throughput_rps(),
            self.percentile(0.50).as_micros(),
            self.percentile(0.90).as_micros(),
            self.percentile(0.99).as_micros(),
            self.max_latency().as_micros(),
            self.window.as_secs_f64(),
            self.connections,
            self.unfinished,
            self.reconnects
        )
    }
}

/// Latency quantile `q` of `samples` by the nearest-rank method: the smallest latency that at
/// least `q` of the samples do not exceed. `q` is clamped to 0.0 ..= 1.0 (0 = minimum,
/// 1 = maximum); zero for no samples. Filter first for a subset, e.g. only 2xx responses.
pub fn percentile_of(samples: &[Sample], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut latencies: Vec<u32> = samples.iter().map(|s| s.latency_us).collect();
    latencies.sort_unstable();
    let n = latencies.len();
    // ceil(q * n) is the 1-based rank; a NaN q casts to 0, i.e. the minimum.
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    Duration::from_micros(u64::from(latencies[index]))
}

/// Runs the closed loop described in the [module docs](self) for `cfg.warmup + cfg.duration`
/// in the current tokio runtime and returns what the measured window recorded.
///
/// Fails at once on an invalid configuration or when the server cannot be reached at all
/// (one probe connection before the load starts); errors after that are counted, not returned.
pub async fn run(cfg: &LoadConfig) -> Result<LoadReport> {
    ensure!(cfg.connections > 0, "need at least one connection");
    ensure!(
        !cfg.duration.is_zero(),
        "the measured duration must be non-zero"
    );
    // Build one request now so that a bad host or path is reported before any load.
    request(cfg).context("invalid request")?;
    TcpStream::connect(cfg.addr)
        .await
        .with_context(|| format!("cannot connect to {}", cfg.addr))?;

    let measured_from = Instant::now() + cfg.warmup;
    let until = measured_from + cfg.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..cfg.connections {
        tasks.spawn(connection_loop(cfg.clone(), measured_from, until));
    }

    let mut report = LoadReport {
        window: cfg.duration,
        connections: cfg.connections,
        ..LoadReport::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|e| anyhow!("a load connection task failed: {e}"))?;
        report.samples.extend(tally.samples);
        report.unfinished += tally.unfinished;
        report.reconnects += tally.reconnects;
    }
    report.samples.sort_by_key(|s| s.at_us);
    Ok(report)
}

/// What one connection task recorded.
#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    unfinished: u64,
    reconnects: u64,
}

/// A live connection: the request half and the task driving the socket.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Why a step did not complete.
enum Outcome {
    /// It failed (a transport error).
    Failed,
    /// The window ended first.
    TimedOut,
}

async fn connection_loop(cfg: LoadConfig, measured_from: Instant, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut opened_before = false;
    loop {
        let started = Instant::now();
        if started >= until {
            return tally;
        }
        let record = |tally: &mut Tally, status: u16| {
            if started >= measured_from {
                tally.samples.push(Sample {
                    at_us: micros(started - measured_from),
                    latency_us: u32::try_from(micros(started.elapsed())).unwrap_or(u32::MAX),
                    status,
                });
            }
        };

        // A connection the server closed between requests is replaced without an error.
        if let Some(open) = conn.as_mut() {
            match tokio::time::timeout_at(until, open.sender.ready()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => conn = None,
                Err(_) => return tally,
            }
        }
        let open = match conn.as_mut() {
            Some(open) => open,
            None => match tokio::time::timeout_at(until, connect(cfg.addr)).await {
                Ok(Some(new)) => {
                    if opened_before {
                        tally.reconnects += 1;
                    }
                    opened_before = true;
                    conn.insert(new)
                }
                Ok(None) => {
                    record(&mut tally, 0);
                    tokio::time::sleep_until((Instant::now() + RECONNECT_PAUSE).min(until)).await;
                    continue;
                }
                Err(_) => return tally,
            },
        };

        // `request` succeeded once in `run`, with the same inputs.
        let Ok(req) = request(&cfg) else {
            return tally;
        };
        match exchange(open, req, until).await {
            Ok(status) => record(&mut tally, status),
            Err(Outcome::Failed) => {
                record(&mut tally, 0);
                conn = None;
                // A new connection right away; it is not counted as a reconnect.
                opened_before = false;
            }
            Err(Outcome::TimedOut) => {
                if started >= measured_from {
                    tally.unfinished += 1;
                }
                return tally;
            }
        }
    }
}

/// Sends `req` and reads the whole response body; the status, or why not.
async fn exchange(
    conn: &mut Conn,
    req: Request<Empty<Bytes>>,
    until: Instant,
) -> Result<u16, Outcome> {
    let round_trip = async {
        let response = conn
            .sender
            .send_request(req)
            .await
            .map_err(|_| Outcome::Failed)?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|_| Outcome::Failed)?;
        Ok(status)
    };
    tokio::time::timeout_at(until, round_trip)
        .await
        .unwrap_or(Err(Outcome::TimedOut))
}

/// A new keep-alive HTTP/1.1 connection, or `None` when connecting or the handshake failed.
async fn connect(addr: SocketAddr) -> Option<Conn> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    let driver = tokio::spawn(async move {
        // Ends when the server closes the connection or the sender is dropped; an error here
        // surfaces to the sender as a failed request.
        let _ = connection.await;
    });
    Some(Conn { sender, driver })
}

fn request(cfg: &LoadConfig) -> Result<Request<Empty<Bytes>>> {
    Request::get(cfg.path.as_str())
        .header(header::HOST, cfg.host.as_str())
        .body(Empty::new())
        .with_context(|| format!("bad host {:?} or path {:?}", cfg.host, cfg.path))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use http::{Response, StatusCode};
    use http_body_util::Full;
    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    fn sample(at_us: u64, latency_us: u32, status: u16) -> Sample {
        Sample {
            at_us,
            latency_us,
            status,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        // Latencies 1..=100 µs, shuffled by a fixed permutation (37 is coprime to 100).
        let samples: Vec<Sample> = (0..100u32)
            .map(|i| sample(u64::from(i), (i * 37) % 100 + 1, 200))
            .collect();
        let us = |d: Duration| d.as_micros();
        assert_eq!(us(percentile_of(&samples, 0.0)), 1);
        assert_eq!(us(percentile_of(&samples, 0.01)), 1);
        assert_eq!(us(percentile_of(&samples, 0.011)), 2);
        assert_eq!(us(percentile_of(&samples, 0.5)), 50);
        assert_eq!(us(percentile_of(&samples, 0.9)), 90);
        assert_eq!(us(percentile_of(&samples, 0.99)), 99);
        assert_eq!(us(percentile_of(&samples, 0.999)), 100);
        assert_eq!(us(percentile_of(&samples, 1.0)), 100);
        // Out of range and NaN are clamped, not a panic.
        assert_eq!(us(percentile_of(&samples, 7.0)), 100);
        assert_eq!(us(percentile_of(&samples, -1.0)), 1);
        assert_eq!(us(percentile_of(&samples, f64::NAN)), 1);
        assert_eq!(percentile_of(&[], 0.5), Duration::ZERO);
        assert_eq!(
            us(percentile_of(&samples[..1], 0.99)),
            samples[0].latency_us as u128
        );

        // A report over a mix of statuses; quantiles over a filtered subset.
        let mut mixed = samples.clone();
        mixed.push(sample(100, 5_000, 503));
        mixed.push(sample(101, 7_000, 503));
        mixed.push(sample(102, 9_000, 0));
        let report = LoadReport {
            samples: mixed,
            window: Duration::from_millis(500),
            connections: 4,
            unfinished: 0,
            reconnects: 0,
        };
        assert_eq!(report.requests(), 103);
        assert_eq!(report.ok(), 100);
        assert_eq!(report.failed(), 3);
        assert_eq!(
            report.failures_by_status(),
            BTreeMap::from([(0, 1), (503, 2)])
        );
        assert!((report.throughput_rps() - 206.0).abs() < 1e-9);
        assert_eq!(report.max_latency(), Duration::from_micros(9_000));
        assert_eq!(us(report.percentile(1.0)), 9_000);
        assert_eq!(us(report.percentile(0.5)), 52);
        let ok: Vec<Sample> = report
            .samples
            .iter()
            .copied()
            .filter(Sample::is_ok)
            .collect();
        assert_eq!(us(percentile_of(&ok, 1.0)), 100);
        let failed: Vec<Sample> = report
            .samples
            .iter()
            .copied()
            .filter(|s| !s.is_ok())
            .collect();
        assert_eq!(us(percentile_of(&failed, 0.5)), 7_000);

        let line = report.summary();
        assert!(
            line.starts_with("103 requests in 0.5 s over 4 connections, 3 failed"),
            "{line}"
        );
        assert!(line.contains("(transport error: 1, 503: 2)"), "{line}");
        assert!(line.contains("206 req/s"), "{line}");
        assert!(
            line.contains("p50 52 µs") && line.contains("max 9000 µs"),
            "{line}"
        );
        let json = report.json();
        assert!(
            json.starts_with("{\"requests\":103,\"ok\":100,\"failed\":3,"),
            "{json}"
        );
        assert!(json.contains("\"failures\":{\"0\":1,\"503\":2}"), "{json}");
        assert!(
            json.contains("\"rps\":206.0") && json.contains("\"max_us\":9000"),
            "{json}"
        );
    }

    /// Serves `ok` with 200, except every 10th request (server-wide), which gets a 503.
    async fn every_tenth_503(listener: TcpListener) {
        let count = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                    let status = if n.is_multiple_of(10) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = server_http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_requests_and_503s_against_a_local_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(every_tenth_503(listener));

        let cfg = LoadConfig {
            addr,
            host: "hello".into(),
            path: "/".into(),
            connections: 4,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
        };
        let report = run(&cfg).await.unwrap();
        server.abort();

        let requests = report.requests();
        assert!(requests > 0, "{}", report.summary());
        let by_status = report.failures_by_status();
        let n503 = by_status.get(&503).copied().unwrap_or(0);
        assert!(n503 > 0, "{}", report.summary());
        assert_eq!(
            by_status.keys().copied().collect::<Vec<_>>(),
            vec![503],
            "{}",
            report.summary()
        );
        assert_eq!(report.failed(), n503);
        assert_eq!(report.ok() + n503, requests);
        // One request in ten server-wide; warm-up and unfinished requests blur it a little.
        let expected = requests / 10;
        assert!(
            n503 + 3 >= expected && n503 <= expected + 3,
            "{n503} 503s in {requests} requests: {}",
            report.summary()
        );
        assert_eq!(report.reconnects, 0, "{}", report.summary());
        assert!(report.samples.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert!(report.samples.iter().all(|s| s.at_us < 300_000));
        assert!(report.throughput_rps() > 0.0);
        assert!(report.percentile(0.5) <= report.max_latency());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error() {
        // Bind then drop: nothing listens on this port any more.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let cfg = LoadConfig {
            addr,
            host: "hello".into(),
            path: "/".into(),
            connections: 1,
            duration: Duration::from_millis(50),
            warmup: Duration::ZERO,
        };
        let err = run(&cfg).await.unwrap_err();
        assert!(format!("{err:#}").contains("cannot connect to"), "{err:#}");
    }
}
