//! Tests of the serve loop itself, with a plain service (no wasmtime): it serves HTTP/1.1 and
//! h2, drains in-flight requests on shutdown, stops accepting, and aborts at the deadline.
//! Every wait has a deadline; nothing sleeps to synchronise.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use super::*;

/// Upper bound for any single wait.
const DEADLINE: Duration = Duration::from_secs(30);

/// The test service: `/slow` reports that it started, then waits for `release`;
/// `/never` reports and never answers; anything else answers at once with its path.
#[derive(Clone)]
struct Svc {
    started: mpsc::UnboundedSender<String>,
    release: Arc<Notify>,
}

impl Svc {
    fn new() -> (Svc, mpsc::UnboundedReceiver<String>, Arc<Notify>) {
        let (started, rx) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let svc = Svc {
            started,
            release: release.clone(),
        };
        (svc, rx, release)
    }

    async fn call(self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/slow" => {
                let released = self.release.notified();
                let _ = self.started.send(path.clone());
                released.await;
            }
            "/never" => {
                let _ = self.started.send(path.clone());
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        Response::new(Full::new(Bytes::from(format!("served {path}"))))
    }
}

async fn start(drain: Duration) -> (Server, mpsc::UnboundedReceiver<String>, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (svc, started, release) = Svc::new();
    let server = Server::spawn(listener, move |req| svc.clone().call(req), drain).unwrap();
    (server, started, release)
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done before the deadline"))
}

/// GET `path` over HTTP/1.1 (or h2 with prior knowledge); the status and body.
async fn get(addr: SocketAddr, path: &str, h2: bool) -> Result<(StatusCode, String), String> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http::<Empty<Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok((status, String::from_utf8_lossy(&body.to_bytes()).into()))
}

/// Waits, without sleeping, until a connection to `addr` is refused.
async fn until_refused(addr: SocketAddr) {
    within("listener closed", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http1_and_h2() {
    let (server, _started, _release) = start(DEFAULT_DRAIN_TIMEOUT).await;
    let addr = server.local_addr();
    for h2 in [false, true] {
        let reply = within("GET", get(addr, "/hello", h2)).await.unwrap();
        assert_eq!(
            reply,
            (StatusCode::OK, "served /hello".to_string()),
            "h2: {h2}"
        );
    }
    within("shutdown", server.shutdown()).await;
}

/// A request in flight when shutdown begins gets its response; meanwhile the listener is
/// closed, and the shutdown ends once that request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_in_flight_request() {
    let (server, mut started, release) = start(DEFAULT_DRAIN_TIMEOUT).await;
    let addr = server.local_addr();
    let in_flight = tokio::spawn(get(addr, "/slow", false));
    assert_eq!(
        within("request started", started.recv()).await.unwrap(),
        "/slow"
    );
    let shutdown = tokio::spawn(server.shutdown());
    until_refused(addr).await;
    assert!(!shutdown.is_finished(), "the drain waits for the request");
    release.notify_one();
    let reply = within("in-flight reply", in_flight).await.unwrap().unwrap();
    assert_eq!(reply, (StatusCode::OK, "served /slow".to_string()));
    within("drain", shutdown).await.unwrap();
}

/// After shutdown no connection is accepted, and an idle keep-alive connection is closed at
/// once (the drain does not wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_accepting_and_closes_idle_connections_after_shutdown() {
    let (server, _started, _release) = start(DEFAULT_DRAIN_TIMEOUT).await;
    let addr = server.local_addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = within("first reply", idle.read(&mut buf)).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The connection is kept alive and idle now. A drain of 30 s must not wait for it.
    within("shutdown", server.shutdown()).await;
    let n = within("idle connection closed", idle.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no connection is accepted after shutdown"
    );
}

/// A request still unanswered at the drain deadline is aborted, and the shutdown ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_at_the_drain_deadline_are_aborted() {
    let (server, mut started, _release) = start(Duration::from_millis(50)).await;
    let addr = server.local_addr();
    let stuck = tokio::spawn(get(addr, "/never", false));
    assert_eq!(
        within("request started", started.recv()).await.unwrap(),
        "/never"
    );
    within("shutdown after the drain deadline", server.shutdown()).await;
    let reply = within("aborted reply", stuck).await.unwrap();
    assert!(reply.is_err(), "the connection was aborted: {reply:?}");
}

/// Dropping the server is a shutdown: the listener closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_shuts_it_down() {
    let (server, _started, _release) = start(DEFAULT_DRAIN_TIMEOUT).await;
    let addr = server.local_addr();
    assert!(within("GET", get(addr, "/", false)).await.is_ok());
    drop(server);
    until_refused(addr).await;
}

#[test]
fn accept_error_pauses_double_up_to_the_cap_and_reset() {
    let mut b = Backoff::default();
    let pauses: Vec<Duration> = (0..12).map(|_| b.next_pause()).collect();
    assert_eq!(pauses[0], BACKOFF_START);
    assert_eq!(pauses[1], BACKOFF_START * 2);
    assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
    assert_eq!(*pauses.last().unwrap(), BACKOFF_MAX);
    assert!(pauses.iter().all(|p| *p <= BACKOFF_MAX));
    b.reset();
    assert_eq!(b.next_pause(), BACKOFF_START);
}

#[tokio::test]
async fn bind_errors_name_the_listener_and_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = bind(addr, "HTTP").await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot listen for HTTP on {addr}"));
    assert!(err.source().is_some());
}
