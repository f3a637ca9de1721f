//! Node identity and the TLS 1.3 / QUIC configuration of the mesh.
//!
//! Invariants:
//! - A node's identity *is* its ed25519 key: [`NodeId`] is the raw 32-byte public key. The
//!   X.509 certificate is only a container for that key (self-signed, no expiry or name checks).
//! - Both sides authenticate (mutual TLS). The verifiers here accept any single self-signed
//!   ed25519 certificate (admission control is a later feature), but they always verify the
//!   TLS 1.3 `CertificateVerify` signature with the ring provider, so a peer's [`NodeId`] is
//!   proven: the peer holds the matching secret key. TLS 1.2 is disabled and its signatures
//!   are rejected.
//! - Only `rustls::crypto::ring::default_provider()` is used; nothing relies on a process-wide
//!   default provider.
//! - Transport identity is never used for content safety: releases are verified by signature
//!   in the protocol core, independently of who relayed them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::codec;

/// A node's identity: the raw ed25519 public key (defined with the wire format).
pub use fleetcast_protocol::wire::NodeId;

/// Identity and TLS set-up errors. None changes state: nothing is bound, written or dialled.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read node identity key file {}: {error}", path.display())]
    ReadIdentity {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write node identity key file {}: {error}", path.display())]
    WriteIdentity {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "node identity key file {} is corrupt: expected exactly 32 bytes, found {len}; \
         restore it from backup, or delete it to generate a new identity \
         (this changes the node id)",
        path.display()
    )]
    CorruptIdentity { path: PathBuf, len: usize },
    #[error("cannot build the node certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC TLS config: {0}")]
    Quic(String),
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("unexpected peer identity type")]
    IdentityType,
    #[error("peer presented an empty certificate chain")]
    EmptyChain,
}

type Result<T, E = TlsError> = std::result::Result<T, E>;

/// TLS server name used when dialing; identity is checked by key, never by name.
pub const SERVER_NAME: &str = "fleetcast";

/// The node's ed25519 keypair. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.node_id())
    }
}

impl Identity {
    /// A fresh ephemeral identity (not persisted).
    pub fn generate() -> Identity {
        Identity {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Builds an identity from a 32-byte ed25519 secret (seed).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// Loads the 32-byte secret at `path`, or creates it (mode 0600, written atomically via a
    /// temporary file + rename) if the file does not exist.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Identity> {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(bytes) => Self::parse_file(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::generate();
                write_secret(path, &id.key.to_bytes())?;
                tracing::info!(path = %path.display(), node = %id.node_id(), "created node identity");
                Ok(id)
            }
            Err(error) => Err(TlsError::ReadIdentity {
                path: path.to_path_buf(),
                error,
            }),
        }
    }

    fn parse_file(path: &Path, bytes: &[u8]) -> Result<Identity> {
        let secret: [u8; 32] = bytes.try_into().map_err(|_| TlsError::CorruptIdentity {
            path: path.to_path_buf(),
            len: bytes.len(),
        })?;
        Ok(Self::from_secret_bytes(&secret))
    }

    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The secret key as an unencrypted PKCS#8 v1 document (RFC 8410).
    fn pkcs8_der(&self) -> Vec<u8> {
        // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = PREFIX.to_vec();
        der.extend_from_slice(&self.key.to_bytes());
        der
    }

    /// A self-signed certificate for this key plus the key in the form rustls wants.
    pub fn certificate(&self) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
        let pkcs8 = PrivatePkcs8KeyDer::from(self.pkcs8_der());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.node_id().to_string());
        let cert = params.self_signed(&key_pair)?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
    }
}

fn write_secret(path: &Path, secret: &[u8; 32]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| TlsError::WriteIdentity {
            path: path.to_path_buf(),
            error,
        })?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            // `mode` only applies on creation; a stale temp file may have other permissions.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(secret)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|error| TlsError::WriteIdentity {
        path: path.to_path_buf(),
        error,
    })
}

/// DER prefix of an ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Extracts the [`NodeId`] from a certificate's SubjectPublicKeyInfo. Fails unless the
/// certificate parses and carries a valid ed25519 public key.
pub fn node_id_from_cert(cert: &CertificateDer<'_>) -> Result<NodeId, rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    let spki = parsed.subject_public_key_info();
    let raw = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| reject("the certificate key is not ed25519".into()))?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|_| reject("the certificate key is not a valid ed25519 point".into()))?;
    Ok(NodeId(raw))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Shared logic of both verifiers: any single ed25519 certificate, TLS 1.3 signatures only.
#[derive(Debug)]
struct PeerVerifier {
    algs: WebPkiSupportedAlgorithms,
    /// Client side only: the server must present this key.
    expected: Option<NodeId>,
}

impl PeerVerifier {
    fn new(expected: Option<NodeId>) -> Self {
        PeerVerifier {
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            expected,
        }
    }

    fn check_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(reject("expected a single self-signed certificate".into()));
        }
        let node = node_id_from_cert(end_entity)?;
        match self.expected {
            Some(expected) if expected != node => Err(reject(format!(
                "peer identity {node} does not match the expected {expected}"
            ))),
            _ => Ok(()),
        }
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn reject12() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }
}

/// A certificate rejection with a human-readable reason (it ends up in the QUIC close).
#[derive(Debug)]
struct Rejected(String);

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

fn reject(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Rejected(reason),
    ))))
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_cert(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::reject12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_cert(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::reject12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// rustls server config: TLS 1.3 only, ALPN [`codec::ALPN`] and the [`codec::ALPN_PREVIOUS`] versions (so
/// an older peer can be told to upgrade), client certificate required.
pub fn rustls_server_config(identity: &Identity) -> Result<rustls::ServerConfig> {
    let (cert, key) = identity.certificate()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerVerifier::new(None)))
        .with_single_cert(vec![cert], key)?;
    cfg.alpn_protocols = codec::alpn_protocols();
    Ok(cfg)
}

/// rustls client config: TLS 1.3 only, offers [`codec::ALPN`] first, then [`codec::ALPN_PREVIOUS`]; presents
/// our certificate; if
/// `expected` is set, the server must present exactly that key.
pub fn rustls_client_config(
    identity: &Identity,
    expected: Option<NodeId>,
) -> Result<rustls::ClientConfig> {
    let (cert, key) = identity.certificate()?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(expected)))
        .with_client_auth_cert(vec![cert], key)?;
    cfg.alpn_protocols = codec::alpn_protocols();
    Ok(cfg)
}

/// Transport parameters shared by both directions.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s is a valid timeout"),
    ));
    t.max_concurrent_uni_streams(1024u32.into());
    // The mesh only uses unidirectional streams.
    t.max_concurrent_bidi_streams(0u32.into());
    // Bound what a peer can make us buffer per connection (flow control).
    t.receive_window((16u32 * 1024 * 1024).into());
    Arc::new(t)
}

pub fn quinn_server_config(identity: &Identity) -> Result<quinn::ServerConfig> {
    let tls = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_server_config(identity)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(tls));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

pub fn quinn_client_config(
    identity: &Identity,
    expected: Option<NodeId>,
) -> Result<quinn::ClientConfig> {
    let tls = quinn::crypto::rustls::QuicClientConfig::try_from(rustls_client_config(
        identity, expected,
    )?)
    .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(tls));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

/// The verified [`NodeId`] of a connection's peer.
pub fn peer_node_id(conn: &quinn::Connection) -> Result<NodeId> {
    let identity = conn.peer_identity().ok_or(TlsError::NoCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::IdentityType)?;
    match certs.first() {
        Some(cert) => Ok(node_id_from_cert(cert)?),
        None => Err(TlsError::EmptyChain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ALPN;

    #[test]
    fn node_id_display_short_parse() {
        let id = Identity::from_secret_bytes(&[7; 32]).node_id();
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(id.short(), s[..8]);
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert!("zz".parse::<NodeId>().is_err());
    }

    #[test]
    fn certificate_carries_node_id() {
        let id = Identity::generate();
        let (cert, _) = id.certificate().unwrap();
        assert_eq!(node_id_from_cert(&cert).unwrap(), id.node_id());
    }

    #[test]
    fn configs_build() {
        let id = Identity::generate();
        quinn_server_config(&id).unwrap();
        quinn_client_config(&id, Some(id.node_id())).unwrap();
    }

    #[test]
    fn load_or_create_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.key");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn load_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"not a key").unwrap();
        let err = format!("{:#}", Identity::load_or_create(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains("corrupt") && err.contains("delete it"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn server_requires_a_client_certificate() {
        let server_id = Identity::generate();
        let server = quinn::Endpoint::server(
            quinn_server_config(&server_id).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let incoming = server.accept().await.unwrap();
            incoming.await.map(|_| ()).map_err(|e| e.to_string())
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(None)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let cfg = quinn::ClientConfig::new(Arc::new(tls));
        let deadline = Duration::from_secs(20);
        // TLS 1.3: the client may finish before the server rejects its empty chain, so wait
        // for the connection to end either way.
        tokio::time::timeout(deadline, async {
            if let Ok(conn) = client.connect_with(cfg, addr, SERVER_NAME).unwrap().await {
                conn.closed().await;
            }
        })
        .await
        .unwrap();
        let server_side = tokio::time::timeout(deadline, accept)
            .await
            .unwrap()
            .unwrap();
        assert!(
            server_side.is_err(),
            "server accepted a client without certificate"
        );
    }
}
