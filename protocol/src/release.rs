//! The release model: what a component *is*, independent of who signed it.
//!
//! A [`Release`] names an app, a semver version, the BLAKE3-256 digest and size of the component
//! bytes, and a chunk map (the BLAKE3 of every fixed-size chunk). The chunk map lets a receiver
//! verify each chunk on its own as it arrives, from any peer, before it stores or relays it.
//!
//! **Invariant:** a `Release` that passed [`Release::check_shape`] has a chunk map whose length
//! matches its size and chunk size, so `chunk_len(i)` is defined for every listed chunk.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Default chunk size: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
/// Smallest chunk size a head may declare.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size a head may declare (a chunk travels in one frame).
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;
/// Largest component a release may carry: 256 MiB.
pub const MAX_CONTENT_SIZE: u64 = 256 * 1024 * 1024;
/// Most chunks a release can have.
pub const MAX_CHUNKS: u32 = (MAX_CONTENT_SIZE / MIN_CHUNK_SIZE as u64) as u32;

/// A BLAKE3-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// An app name: a DNS label (`[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most 63 characters), because
/// agents route requests to an app by the first label of the `Host` header.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    /// Validates and wraps `name`.
    pub fn new(name: &str) -> Result<Self, ReleaseError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(AppName(name.to_owned()))
        } else {
            Err(ReleaseError::BadAppName(name.to_owned()))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = ReleaseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AppName::new(&s)
    }
}

impl From<AppName> for String {
    fn from(a: AppName) -> String {
        a.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What a release is: app, version, content digest and size, and the chunk map.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Release {
    pub app: AppName,
    pub version: semver::Version,
    /// BLAKE3-256 of the whole component.
    pub digest: Digest,
    /// Component size in bytes.
    pub size: u64,
    /// Size of every chunk but the last.
    pub chunk_size: u32,
    /// BLAKE3-256 of each chunk, in order.
    pub chunks: Vec<Digest>,
    /// How the release asks to be run and judged (health path, trial window, limits). Signed
    /// with the rest, so a relay cannot loosen it.
    pub policy: RunPolicy,
}

/// Longest health path a release may name.
pub const MAX_HEALTH_PATH: usize = 256;

/// What a release asks of the agent that runs it. Every field is optional: `None` means "the
/// agent's default". Limits are requests: an agent applies the smaller of the release's value
/// and its own maximum, never more than it allows.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct RunPolicy {
    /// Path of a health endpoint (`/health`): before the swap the agent sends one synthetic
    /// `GET` there and requires a 2xx.
    pub health_path: Option<String>,
    /// The trial ends after this many requests (or `trial_secs`, whichever comes first).
    pub trial_requests: Option<u32>,
    /// The trial ends after this many seconds (or `trial_requests`, whichever comes first).
    pub trial_secs: Option<u32>,
    /// Linear memory per instance, MiB.
    pub max_memory_mib: Option<u32>,
    /// Wall-clock deadline per request, milliseconds.
    pub request_timeout_ms: Option<u32>,
    /// Fuel per request (enforced only where the agent meters fuel).
    pub fuel: Option<u64>,
    /// Requests executed at once; more get 503.
    pub max_concurrent: Option<u32>,
    /// Largest request body accepted, bytes; larger gets 413.
    pub max_body_bytes: Option<u64>,
}

impl RunPolicy {
    /// Checks the policy is well formed.
    pub fn check(&self) -> Result<(), ReleaseError> {
        if let Some(path) = &self.health_path {
            let ok = path.starts_with('/')
                && path.len() <= MAX_HEALTH_PATH
                && path.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(ReleaseError::BadPolicy(format!(
                    "health path {path:?} must start with '/', be at most {MAX_HEALTH_PATH} \
                     printable ASCII characters and contain no spaces"
                )));
            }
        }
        let zero = [
            ("trial_requests", self.trial_requests.map(u64::from)),
            ("max_memory_mib", self.max_memory_mib.map(u64::from)),
            ("request_timeout_ms", self.request_timeout_ms.map(u64::from)),
            ("fuel", self.fuel),
            ("max_concurrent", self.max_concurrent.map(u64::from)),
        ];
        for (name, v) in zero {
            if v == Some(0) {
                return Err(ReleaseError::BadPolicy(format!(
                    "{name} is 0; leave it out to use the agent's default"
                )));
            }
        }
        Ok(())
    }
}

impl Release {
    /// Describes `content` as a release of `app` at `version`.
    pub fn build(
        app: AppName,
        version: semver::Version,
        content: &[u8],
        chunk_size: u32,
    ) -> Result<Release, ReleaseError> {
        let release = Release {
            app,
            version,
            digest: Digest::of(content),
            size: content.len() as u64,
            chunk_size,
            chunks: content
                .chunks(chunk_size.max(1) as usize)
                .map(Digest::of)
                .collect(),
            policy: RunPolicy::default(),
        };
        release.check_shape()?;
        Ok(release)
    }

    /// Checks the release is internally consistent and within limits.
    pub fn check_shape(&self) -> Result<(), ReleaseError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ReleaseError::BadChunkSize(self.chunk_size));
        }
        if self.size == 0 || self.size > MAX_CONTENT_SIZE {
            return Err(ReleaseError::BadSize(self.size));
        }
        let expected = self.size.div_ceil(u64::from(self.chunk_size));
        if self.chunks.len() as u64 != expected {
            return Err(ReleaseError::ChunkCount {
                listed: self.chunks.len(),
                expected,
            });
        }
        self.policy.check()
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.chunks.len() as u32
    }

    /// Length of chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = u64::from(index) * u64::from(self.chunk_size);
        (self.size.saturating_sub(start)).min(u64::from(self.chunk_size)) as usize
    }

    /// Verifies one chunk against the chunk map.
    pub fn verify_chunk(&self, index: u32, bytes: &[u8]) -> Result<(), ReleaseError> {
        let Some(want) = self.chunks.get(index as usize) else {
            return Err(ReleaseError::NoSuchChunk(index));
        };
        if bytes.len() != self.chunk_len(index) || Digest::of(bytes) != *want {
            return Err(ReleaseError::ChunkMismatch(index));
        }
        Ok(())
    }

    /// Verifies the whole content against size and digest.
    pub fn verify_content(&self, content: &[u8]) -> Result<(), ReleaseError> {
        if content.len() as u64 != self.size {
            return Err(ReleaseError::ContentSize {
                got: content.len() as u64,
                want: self.size,
            });
        }
        if Digest::of(content) != self.digest {
            return Err(ReleaseError::ContentDigest);
        }
        Ok(())
    }
}

/// Why a release or its content is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "app name {0:?} is not a DNS label: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    BadAppName(String),
    #[error("chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes")]
    BadChunkSize(u32),
    #[error("component size {0} bytes is empty or over the {MAX_CONTENT_SIZE}-byte limit")]
    BadSize(u64),
    #[error("chunk map lists {listed} chunks but the size needs {expected}")]
    ChunkCount { listed: usize, expected: u64 },
    #[error("chunk {0} is not in the chunk map")]
    NoSuchChunk(u32),
    #[error("chunk {0} does not match the signed chunk map")]
    ChunkMismatch(u32),
    #[error("content is {got} bytes but the release says {want}")]
    ContentSize { got: u64, want: u64 },
    #[error("content digest does not match the signed release digest")]
    ContentDigest,
    #[error("run policy: {0}")]
    BadPolicy(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    #[test]
    fn app_names_are_dns_labels() {
        for ok in ["a", "shop", "hello-world", "x1", &"a".repeat(63)] {
            assert!(AppName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Shop", "a.b", "a_b", "é", &"a".repeat(64)] {
            let err = AppName::new(bad).unwrap_err();
            assert!(err.to_string().contains("DNS label"), "{bad}: {err}");
        }
        // Deserialisation goes through the same check.
        let bytes = postcard::to_stdvec(&"Bad Name".to_string()).unwrap();
        assert!(postcard::from_bytes::<AppName>(&bytes).is_err());
    }

    #[test]
    fn chunk_map_covers_content_and_verifies_each_chunk() {
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let r = Release::build(AppName::new("a").unwrap(), v("1.0.0"), &content, 4096).unwrap();
        assert_eq!(r.chunk_count(), 3);
        assert_eq!(r.chunk_len(2), 10_000 - 8192);
        for (i, c) in content.chunks(4096).enumerate() {
            r.verify_chunk(i as u32, c).unwrap();
        }
        let mut bad = content[..4096].to_vec();
        bad[7] ^= 1;
        assert_eq!(r.verify_chunk(0, &bad), Err(ReleaseError::ChunkMismatch(0)));
        assert_eq!(
            r.verify_chunk(1, &content[..4096]),
            Err(ReleaseError::ChunkMismatch(1))
        );
        assert_eq!(r.verify_chunk(3, b"x"), Err(ReleaseError::NoSuchChunk(3)));
        r.verify_content(&content).unwrap();
        let mut tampered = content.clone();
        tampered[9_999] ^= 0x80;
        assert_eq!(
            r.verify_content(&tampered),
            Err(ReleaseError::ContentDigest)
        );
        assert!(matches!(
            r.verify_content(&content[..9_999]),
            Err(ReleaseError::ContentSize { .. })
        ));
    }

    #[test]
    fn shape_rules() {
        let content = vec![7u8; 5000];
        let good = Release::build(AppName::new("a").unwrap(), v("1.0.0"), &content, 4096).unwrap();
        let mut r = good.clone();
        r.chunks.pop();
        assert!(matches!(
            r.check_shape(),
            Err(ReleaseError::ChunkCount { .. })
        ));
        let mut r = good.clone();
        r.chunk_size = 100;
        assert_eq!(r.check_shape(), Err(ReleaseError::BadChunkSize(100)));
        let mut r = good;
        r.size = 0;
        assert_eq!(r.check_shape(), Err(ReleaseError::BadSize(0)));
        assert!(
            Release::build(AppName::new("a").unwrap(), v("1.0.0"), &[], 4096).is_err(),
            "empty content is refused"
        );
    }
}
