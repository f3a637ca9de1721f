//! Test helpers shared by the runtime and http unit tests: guest bytes, small
//! runtimes, a served listener on 127.0.0.1:0 and a tiny HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{DeployedMeta, Prepared, Runtime, RuntimeConfig};

pub(crate) const HELLO_V1: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/hello-v1.wasm"
));
pub(crate) const HELLO_V2: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/hello-v2.wasm"
));
pub(crate) const NOT_A_COMPONENT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/not-a-component.wasm"
));
pub(crate) const GARBAGE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/garbage.bin"
));
pub(crate) const WRONG_WORLD: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/wrong-world.wasm"
));

/// Any error of a test helper.
pub(crate) type TestError = Box<dyn std::error::Error + Send + Sync>;

/// Upper bound for any single wait in tests.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A `wasi:http/incoming-handler` component (text format) whose `handle`
/// runs `body` (a core wasm instruction sequence) and never sets a response.
pub(crate) fn handler_wat(body: &str) -> Vec<u8> {
    format!(
        r#"(component
  (import "wasi:http/types@0.2.12" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))
  (core module $m (func (export "handle") (param i32 i32) {body}))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.12" (instance $handler)))"#
    )
    .into_bytes()
}

/// Compiles a text-format component (bypassing the binary-only header check
/// of [`Runtime::compile`]) and links it like `compile` does.
pub(crate) fn prepare_wat(rt: &Runtime, wat: &[u8]) -> Result<Prepared, super::CompileError> {
    let component = wasmtime::component::Component::new(&rt.engine.engine, wat).expect("valid wat");
    let pre = rt.link(&component)?;
    let artifact = component.serialize().expect("serialize");
    Ok(Prepared {
        pre,
        artifact: artifact.into(),
    })
}

/// A runtime small enough that many can exist at once in the test process.
pub(crate) fn small_runtime() -> Arc<Runtime> {
    runtime_with(RuntimeConfig {
        max_instances: 16,
        ..RuntimeConfig::default()
    })
}

pub(crate) fn runtime_with(cfg: RuntimeConfig) -> Arc<Runtime> {
    Runtime::new(&cfg).expect("runtime")
}

pub(crate) async fn compile(
    rt: &Arc<Runtime>,
    wasm: impl AsRef<[u8]> + Send + 'static,
) -> Prepared {
    let rt = rt.clone();
    tokio::task::spawn_blocking(move || rt.compile(wasm.as_ref()))
        .await
        .expect("compile task")
        .expect("compile")
}

pub(crate) fn meta(app: &str, version: &str, seq: u64) -> DeployedMeta {
    DeployedMeta {
        app: app.into(),
        version: version.into(),
        digest: blake3::hash(version.as_bytes()).to_hex().to_string(),
        seq,
    }
}

/// `serve` running on 127.0.0.1:0 until [`TestServer::stop`].
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start(rt: Arc<Runtime>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::http::serve(listener, rt, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub(crate) async fn stop(mut self) -> Result<(), TestError> {
        let _ = self.stop.take().map(|s| s.send(()));
        Ok(tokio::time::timeout(DEADLINE, &mut self.task).await??)
    }
}

pub(crate) type TestClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GET `path` with the given Host header; errors are returned, not panicked.
pub(crate) async fn get(
    client: &TestClient,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<Reply, TestError> {
    let req = Request::get(format!("http://{addr}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::new())?;
    let fut = async {
        let resp = client.request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, TestError>(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec())?,
        })
    };
    tokio::time::timeout(DEADLINE, fut).await?
}
