//! Raw quinn bulk-copy baseline: what the same QUIC stack moves on loopback with no protocol on
//! top, for benches that compare mesh propagation against it in the same run.
//!
//! Plain quinn endpoints with a self-signed ECDSA certificate (rcgen, rustls + ring, TLS 1.3)
//! and the mesh's own transport parameters ([`fleetcast_net::tls::transport_config`]), so
//! flow-control windows match the agents'.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ClientConfig, Connection, Endpoint, ServerConfig};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::task::JoinSet;

const SERVER_NAME: &str = "localhost";
const ALPN: &[u8] = b"fleetcast-bulk";

/// Copies `bytes_each` bytes to each of `n_receivers` receiver endpoints from `senders` sender
/// endpoints (receiver `i` is served by sender `i % senders`), all transfers concurrent, one
/// unidirectional stream per receiver, on 127.0.0.1 in the current tokio runtime.
///
/// Connections are established before timing starts. Returns the wall time from just before
/// the first send to the moment the last receiver read its last byte. Fails unless every
/// receiver got exactly `bytes_each` bytes.
pub async fn raw_quinn_bulk_copy(
    n_receivers: usize,
    bytes_each: usize,
    senders: usize,
) -> Result<Duration> {
    ensure!(
        n_receivers > 0 && senders > 0,
        "need at least one receiver and one sender"
    );
    let (server_cfg, client_cfg) = configs()?;
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let receivers = (0..n_receivers)
        .map(|_| Endpoint::server(server_cfg.clone(), loopback))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind a receiver endpoint")?;
    let sender_eps = (0..senders)
        .map(|_| {
            let mut ep = Endpoint::client(loopback)?;
            ep.set_default_client_config(client_cfg.clone());
            Ok(ep)
        })
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind a sender endpoint")?;

    let pairs = connect_all(&receivers, &sender_eps).await;
    let result = match pairs {
        Ok(pairs) => copy(&pairs, bytes_each).await,
        Err(e) => Err(e),
    };
    for ep in receivers.iter().chain(&sender_eps) {
        ep.close(0u32.into(), b"done");
    }
    result
}

/// (sender side, receiver side) of one connection per receiver, in receiver order.
async fn connect_all(
    receivers: &[Endpoint],
    senders: &[Endpoint],
) -> Result<Vec<(Connection, Connection)>> {
    let mut set = JoinSet::new();
    for (i, rx_ep) in receivers.iter().enumerate() {
        let rx_ep = rx_ep.clone();
        let tx_ep = senders[i % senders.len()].clone();
        set.spawn(async move {
            let addr = rx_ep.local_addr()?;
            let connecting = tx_ep.connect(addr, SERVER_NAME)?;
            let accepting = async {
                let incoming = rx_ep
                    .accept()
                    .await
                    .ok_or_else(|| anyhow!("receiver endpoint closed"))?;
                Ok::<_, anyhow::Error>(incoming.await?)
            };
            let (out, inc) = tokio::join!(connecting, accepting);
            let out = out.with_context(|| format!("dialing receiver {i} failed"))?;
            let inc = inc.with_context(|| format!("receiver {i} failed to accept"))?;
            Ok::<_, anyhow::Error>((i, out, inc))
        });
    }
    let mut pairs = Vec::with_capacity(receivers.len());
    while let Some(joined) = set.join_next().await {
        pairs.push(joined.context("connect task panicked")??);
    }
    pairs.sort_unstable_by_key(|(i, _, _)| *i);
    Ok(pairs.into_iter().map(|(_, out, inc)| (out, inc)).collect())
}

async fn copy(pairs: &[(Connection, Connection)], bytes_each: usize) -> Result<Duration> {
    let payload = Bytes::from(
        (0..bytes_each)
            .map(|i| (i as u8).wrapping_mul(31))
            .collect::<Vec<u8>>(),
    );
    let mut readers = JoinSet::new();
    for (i, (_, inc)) in pairs.iter().enumerate() {
        let conn = inc.clone();
        readers.spawn(async move {
            let mut stream = conn.accept_uni().await?;
            let mut got = 0usize;
            while let Some(chunk) = stream.read_chunk(usize::MAX, true).await? {
                got += chunk.bytes.len();
            }
            let done = Instant::now();
            ensure!(
                got == bytes_each,
                "receiver {i} got {got} of {bytes_each} bytes"
            );
            Ok::<_, anyhow::Error>(done)
        });
    }
    let start = Instant::now();
    let mut writers = JoinSet::new();
    for (i, (out, _)) in pairs.iter().enumerate() {
        let conn = out.clone();
        let payload = payload.clone();
        writers.spawn(async move {
            let sent = async {
                let mut stream = conn.open_uni().await?;
                stream.write_chunk(payload).await?;
                stream.finish()?;
                Ok::<_, anyhow::Error>(())
            }
            .await
            .with_context(|| format!("sending to receiver {i} failed"));
            if sent.is_err() {
                // Unblocks the receiver, which would otherwise wait for a stream forever.
                conn.close(1u32.into(), b"send failed");
            }
            sent
        });
    }
    let mut last = start;
    let mut failure = None;
    while let Some(joined) = readers.join_next().await {
        match joined.context("reader task panicked").and_then(|r| r) {
            Ok(done) => last = last.max(done),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    // A sender's error explains a receiver's, so it is reported first.
    while let Some(joined) = writers.join_next().await {
        joined.context("writer task panicked")??;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    for (out, inc) in pairs {
        out.close(0u32.into(), b"done");
        inc.close(0u32.into(), b"done");
    }
    Ok(last - start)
}

fn configs() -> Result<(ServerConfig, ClientConfig)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));

    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_tls).map_err(|e| anyhow!("QUIC server TLS: {e}"))?,
    ));
    server.transport_config(fleetcast_net::tls::transport_config());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client_tls).map_err(|e| anyhow!("QUIC client TLS: {e}"))?,
    ));
    client.transport_config(fleetcast_net::tls::transport_config());
    Ok((server, client))
}
