//! The agent's one HTTP serve loop, shared by the app server ([`crate::http`]) and the admin
//! endpoint ([`crate::admin`]); each supplies only its service function.
//!
//! [`run`] takes an already-bound [`TcpListener`] (so a test binds `127.0.0.1:0` and owns the
//! address) and a shutdown future. It:
//!
//! - accepts connections, sets `TCP_NODELAY` on each, and serves each in its own task with
//!   hyper-util's auto builder (HTTP/1.1 and h2, prior knowledge);
//! - never spins and never gives up on accept errors: a per-connection error (reset or aborted
//!   before it was accepted) is skipped; any other (e.g. `EMFILE`, out of file descriptors) is
//!   logged and followed by a pause that doubles from [`BACKOFF_START`] up to [`BACKOFF_MAX`],
//!   back to the start after the next accepted connection;
//! - on shutdown, stops accepting (the listener is closed at once), asks every connection to
//!   close once its in-flight requests are answered (idle ones close now), waits for them up to
//!   the drain deadline, then aborts what is left.
//!
//! [`Server`] runs [`run`] in a task and is its drop guard: dropping it starts the shutdown.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How long [`run`] lets in-flight connections finish after shutdown, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The first pause after an accept error.
pub const BACKOFF_START: Duration = Duration::from_millis(5);
/// The longest pause after repeated accept errors.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}")]
pub struct BindError {
    /// What was to listen there ("HTTP", "the admin endpoint").
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Binds `addr` for [`run`]; `what` names the listener in the error.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

/// Serves `listener` with `service` until `shutdown` resolves, then drains for up to `drain`
/// (see the module doc). `service` answers every request (errors are responses).
pub async fn run<F, Fut, B>(
    listener: TcpListener,
    service: F,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    conns.spawn(connection(builder.clone(), stream, service.clone(), stop_rx.clone()));
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                }
                Err(e) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(error = %e, ?pause, "accept failed; pausing before the next accept");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let in_flight = conns.len();
    let drained =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            in_flight,
            remaining = conns.len(),
            ?drain,
            "connections still open after the drain timeout; aborting them"
        );
        conns.shutdown().await;
    }
}

/// Errors of one incoming connection, not of the listener: accept again at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends or, once `stop` is set, until its in-flight requests
/// are answered.
async fn connection<F, Fut, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    service: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let service = hyper::service::service_fn(move |req| {
        let response = service(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let finished = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = async { let _ = stop.wait_for(|stop| *stop).await; } => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            // Finish the requests in flight, then close (idle connections close now).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Pauses after accept errors: doubling from [`BACKOFF_START`] to [`BACKOFF_MAX`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        pause
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// [`run`] in a task of its own; the drop guard of that task. Dropping it (or calling
/// [`Server::shutdown`]) starts the shutdown and drain.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Spawns [`run`] on `listener` (on the current tokio runtime).
    pub fn spawn<F, Fut, B>(
        listener: TcpListener,
        service: F,
        drain: Duration,
    ) -> io::Result<Server>
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender is a shutdown too.
            let _ = stopped.await;
        };
        let task = tokio::spawn(run(listener, service, shutdown, drain));
        Ok(Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the shutdown and waits for the drain to end.
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping the sender resolves the shutdown future; the task drains on its own.
        drop(self.stop.take());
    }
}

#[cfg(test)]
mod tests;
