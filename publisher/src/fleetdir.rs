//! The fleet directory the operator keeps (`--fleet DIR`), and the pure steps that make each
//! root version from the last (init, rotate, revoke): every new root is checked as the next
//! step of the chain ([`check_step`]) before anything is written, and every file is written
//! atomically (a temporary file in the same directory, then a rename).
//!
//! ```text
//! DIR/root.json          the newest root (what agents are given as `root = "root.json"`)
//! DIR/roots/N.json       every version, 1..=N (what `fleetcast fleet push` sends)
//! DIR/keys/NAME.key      secret keys (mode 0600): root-1.., release-1.., enroll
//! DIR/keys/NAME.pub      their public halves
//! DIR/keys/old/NAME.vN.key, .pub   keys rotated out (N: the last root version that listed them)
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::SigningKey;
use fleetcast_protocol::trust::{
    NodeCert, Role, Roles, Root, SignedNodeCert, SignedRoot, check_step,
};
use fleetcast_protocol::{NodeId, PublicKey, Trust};

use crate::error::{CliError, Result};

/// The fleet name when `--fleet-name` is not given: the agents' default (`fleet = "default"`).
pub const DEFAULT_FLEET: &str = "default";

/// The default lifetime of roots and node certificates.
pub const DEFAULT_EXPIRES: &str = "365d";

const SECRET_TAG: &str = "fleetcast-ed25519-secret";
const PUBLIC_TAG: &str = "fleetcast-ed25519-public";

/// `--expires`: a lifetime such as `365d`, `12h`, `30m` or `90s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub ms: u64,
}

impl FromStr for Lifetime {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?}: expected a lifetime like 365d, 12h, 30m or 90s");
        let (num, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let per = match unit {
            "d" => 86_400_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            _ => return Err(bad()),
        };
        match n.checked_mul(per) {
            Some(ms) if ms > 0 => Ok(Lifetime { ms }),
            _ => Err(bad()),
        }
    }
}

impl Lifetime {
    pub fn from(self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.ms)
    }
}

/// The wall clock, unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fleet directory.
#[derive(Clone, Debug)]
pub struct FleetDir {
    pub path: PathBuf,
}

/// A key and the name it has in `DIR/keys`.
#[derive(Clone, Debug)]
pub struct NamedKey {
    pub name: String,
    pub key: SigningKey,
}

impl FleetDir {
    pub fn new(path: impl Into<PathBuf>) -> FleetDir {
        FleetDir { path: path.into() }
    }

    pub fn root_file(&self) -> PathBuf {
        self.path.join("root.json")
    }

    pub fn version_file(&self, version: u64) -> PathBuf {
        self.path.join("roots").join(format!("{version}.json"))
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.path.join("keys")
    }

    pub fn key_file(&self, name: &str) -> PathBuf {
        self.keys_dir().join(format!("{name}.key"))
    }

    pub fn pub_file(&self, name: &str) -> PathBuf {
        self.keys_dir().join(format!("{name}.pub"))
    }

    /// The newest root (`root.json`), checked: well formed and signed by a threshold of its
    /// own root keys.
    pub fn load_root(&self) -> Result<SignedRoot> {
        let file = self.root_file();
        let root = read_root(&file).map_err(|e| {
            CliError::usage(format!(
                "{e} (--fleet names the directory `fleetcast fleet init --out DIR` made)"
            ))
        })?;
        Ok(root)
    }

    /// Every version `roots/1.json` ..= the newest, each checked as the step from the one
    /// before it.
    pub fn load_chain(&self) -> Result<Vec<SignedRoot>> {
        let newest = self.load_root()?;
        let mut chain: Vec<SignedRoot> = Vec::new();
        for v in 1..=newest.root.version {
            let r = read_root(&self.version_file(v))?;
            if r.root.version != v {
                return Err(CliError::usage(format!(
                    "{} holds root version {}, not {v}",
                    self.version_file(v).display(),
                    r.root.version
                )));
            }
            if let Some(prev) = chain.last() {
                check_step(&prev.root, &r).map_err(|e| {
                    CliError::usage(format!(
                        "{} does not follow version {}: {e}",
                        self.version_file(v).display(),
                        v - 1
                    ))
                })?;
            }
            chain.push(r);
        }
        if chain.last() != Some(&newest) {
            return Err(CliError::usage(format!(
                "{} differs from {}: the directory was changed by hand; restore it",
                self.root_file().display(),
                self.version_file(newest.root.version).display()
            )));
        }
        Ok(chain)
    }

    /// Writes `root` as `roots/N.json` and then `root.json`, each atomically.
    pub fn write_root(&self, root: &SignedRoot) -> Result<()> {
        let text = root_json(root);
        write_atomic(
            &self.version_file(root.root.version),
            text.as_bytes(),
            false,
        )?;
        write_atomic(&self.root_file(), text.as_bytes(), false)
    }

    /// Writes `key` as `keys/NAME.key` (0600) and `keys/NAME.pub`; refuses to overwrite.
    pub fn write_key(&self, k: &NamedKey) -> Result<()> {
        write_key_pair(&self.key_file(&k.name), &k.key)
    }

    /// Moves `keys/NAME.key` and `.pub` to `keys/old/NAME.vN.key` and `.pub`.
    pub fn retire_key(&self, name: &str, last_version: u64) -> Result<()> {
        let old = self.keys_dir().join("old");
        std::fs::create_dir_all(&old).map_err(|e| io_err("cannot create", &old, e))?;
        for ext in ["key", "pub"] {
            let from = self.keys_dir().join(format!("{name}.{ext}"));
            if !from.exists() {
                continue;
            }
            let to = old.join(format!("{name}.v{last_version}.{ext}"));
            std::fs::rename(&from, &to).map_err(|e| io_err("cannot move", &from, e))?;
        }
        Ok(())
    }

    /// The names of the public keys in `keys/` (`root-1` → its key).
    pub fn key_names(&self) -> Vec<(String, PublicKey)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.keys_dir()) else {
            return out;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pub")
                && let (Some(stem), Ok(vk)) = (
                    p.file_stem().and_then(|s| s.to_str()),
                    fleetcast_net::keys::read_public(&p),
                )
            {
                out.push((stem.to_string(), PublicKey::from(&vk)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The name `key` has in `keys/`, if any.
    pub fn name_of(&self, key: &PublicKey) -> Option<String> {
        self.key_names()
            .into_iter()
            .find(|(_, k)| k == key)
            .map(|(n, _)| n)
    }
}

/// A root file, read and checked as self-signed.
pub fn read_root(file: &Path) -> Result<SignedRoot> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
    let root: SignedRoot = serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!("{} is not a fleet root file: {e}", file.display()))
    })?;
    root.check_self_signed()
        .map_err(|e| CliError::usage(format!("{} does not verify: {e}", file.display())))?;
    Ok(root)
}

/// A root as `root.json` holds it: pretty JSON, keys and signatures in hex.
pub fn root_json(root: &SignedRoot) -> String {
    let mut s = serde_json::to_string_pretty(root).expect("a root serialises");
    s.push('\n');
    s
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::usage(format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, never half of one. `secret`: mode 0600 (else
/// 0644). Creates the parent directory.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".fleetcast-")
        .tempfile_in(&dir)
        .map_err(|e| io_err("cannot create a file in", &dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io_err("cannot write", path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("cannot set the mode of", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    tmp.persist(path)
        .map_err(|e| io_err("cannot write", path, e.error))?;
    Ok(())
}

/// Writes a key pair in the format of `fleetcast keygen` (`fleetcast_net::keys`): `path`
/// (secret, 0600) and `path` with extension `.pub`. Refuses to overwrite either.
pub fn write_key_pair(path: &Path, key: &SigningKey) -> Result<()> {
    let public = path.with_extension("pub");
    for p in [path, public.as_path()] {
        if p.exists() {
            return Err(CliError::usage(format!(
                "{} already exists: remove it first or pick another directory",
                p.display()
            )));
        }
    }
    let secret = format!("{SECRET_TAG} {}\n", hex::encode(key.to_bytes()));
    write_atomic(path, secret.as_bytes(), true)?;
    let pk = format!(
        "{PUBLIC_TAG} {}\n",
        hex::encode(key.verifying_key().to_bytes())
    );
    write_atomic(&public, pk.as_bytes(), false)
}

fn generate(name: impl Into<String>) -> NamedKey {
    NamedKey {
        name: name.into(),
        key: SigningKey::generate(&mut rand::rngs::OsRng),
    }
}

fn pk(k: &SigningKey) -> PublicKey {
    PublicKey::from(&k.verifying_key())
}

/// What `fleetcast fleet init` makes.
#[derive(Clone, Debug)]
pub struct InitSpec {
    pub fleet: String,
    pub root_keys: usize,
    pub root_threshold: u32,
    pub release_keys: usize,
    pub release_threshold: u32,
    pub now_ms: u64,
    pub expires_ms: u64,
}

/// Version 1 of a new fleet's root and its keys (`root-1..`, `release-1..`, `enroll`), signed
/// by the first `root_threshold` root keys; checked as self-signed.
pub fn build_init(spec: &InitSpec) -> Result<(SignedRoot, Vec<NamedKey>)> {
    let check = |what: &str, n: usize, t: u32| {
        if n == 0 || n > fleetcast_protocol::trust::root::MAX_ROLE_KEYS {
            return Err(CliError::usage(format!(
                "--{what}-keys {n}: a role has 1 to {} keys",
                fleetcast_protocol::trust::root::MAX_ROLE_KEYS
            )));
        }
        if t == 0 || t as usize > n {
            return Err(CliError::usage(format!(
                "--{what}-threshold {t} with {n} keys: the threshold is 1 to {n}"
            )));
        }
        Ok(())
    };
    check("root", spec.root_keys, spec.root_threshold)?;
    check("release", spec.release_keys, spec.release_threshold)?;
    let roots: Vec<NamedKey> = (1..=spec.root_keys)
        .map(|i| generate(format!("root-{i}")))
        .collect();
    let releases: Vec<NamedKey> = (1..=spec.release_keys)
        .map(|i| generate(format!("release-{i}")))
        .collect();
    let enroll = generate("enroll");
    let root = Root {
        fleet: spec.fleet.clone(),
        version: 1,
        epoch: 1,
        issued_ms: spec.now_ms,
        expires_ms: spec.expires_ms,
        roles: Roles {
            root: Role::new(
                roots.iter().map(|k| pk(&k.key)).collect(),
                spec.root_threshold,
            ),
            release: Role::new(
                releases.iter().map(|k| pk(&k.key)).collect(),
                spec.release_threshold,
            ),
            nodes: Role::new(vec![pk(&enroll.key)], 1),
        },
        revoked: Vec::new(),
    };
    let mut signed = SignedRoot {
        root,
        signatures: Vec::new(),
    };
    for k in roots.iter().take(spec.root_threshold as usize) {
        signed.add_signature(&k.key);
    }
    signed
        .check_self_signed()
        .map_err(|e| CliError::usage(format!("the new root does not verify: {e}")))?;
    let mut keys = roots;
    keys.extend(releases);
    keys.push(enroll);
    Ok((signed, keys))
}

/// Which role a key name belongs to: `root-N`, `release-N`, `enroll` (the nodes role).
fn role_of(name: &str) -> Option<&'static str> {
    if name == "enroll" {
        Some("nodes")
    } else if name.starts_with("root-") {
        Some("root")
    } else if name.starts_with("release-") {
        Some("release")
    } else {
        None
    }
}

fn role_mut<'a>(roles: &'a mut Roles, which: &str) -> &'a mut Role {
    match which {
        "root" => &mut roles.root,
        "release" => &mut roles.release,
        _ => &mut roles.nodes,
    }
}

/// What changes in a rotation.
#[derive(Clone, Debug, Default)]
pub struct RotateSpec {
    /// Key names to replace by new keys (`release-1`, `root-2`, `enroll`).
    pub replace: Vec<String>,
    /// New thresholds, if given.
    pub root_threshold: Option<u32>,
    pub release_threshold: Option<u32>,
    /// Node ids to revoke.
    pub revoke: Vec<NodeId>,
    pub now_ms: u64,
    /// `None`: keep the current expiry (it must still be ahead).
    pub expires_ms: Option<u64>,
}

/// The next root after `current`: keys replaced (new ones generated under the same names),
/// thresholds changed, nodes revoked; the epoch fixed ([`Root::fix_epoch`]); signed by
/// `root_signers` (keys of the current root role) and by every new root key; checked with
/// [`check_step`]. `names` maps key names to the current public keys (`keys/*.pub`). Returns
/// the root and the new keys (not written).
pub fn build_next(
    current: &SignedRoot,
    names: &[(String, PublicKey)],
    spec: &RotateSpec,
    root_signers: &[SigningKey],
) -> Result<(SignedRoot, Vec<NamedKey>)> {
    let cur = &current.root;
    let expires = match spec.expires_ms {
        Some(e) => e,
        None if cur.expires_ms > spec.now_ms => cur.expires_ms,
        None => {
            return Err(CliError::usage(format!(
                "root version {} has expired: give the new one a lifetime (--expires 365d)",
                cur.version
            )));
        }
    };
    if expires <= spec.now_ms {
        return Err(CliError::usage("--expires must lie in the future"));
    }
    for k in root_signers {
        if !cur.roles.root.contains(&pk(k)) {
            return Err(CliError::usage(format!(
                "--root-key {} is not a root key of root version {}: sign with the current root keys (fleet/keys/root-N.key)",
                pk(k).short(),
                cur.version
            )));
        }
    }
    let mut next = cur.next(spec.now_ms, expires);
    let mut new_keys: Vec<NamedKey> = Vec::new();
    for name in &spec.replace {
        let Some(which) = role_of(name) else {
            return Err(CliError::usage(format!(
                "--replace {name}: name a key of the fleet directory (root-N, release-N or enroll)"
            )));
        };
        let Some((_, old)) = names.iter().find(|(n, _)| n == name) else {
            return Err(CliError::usage(format!(
                "--replace {name}: there is no keys/{name}.pub in the fleet directory"
            )));
        };
        let role = role_mut(&mut next.roles, which);
        let Some(slot) = role.keys.iter().position(|k| k == old) else {
            return Err(CliError::usage(format!(
                "--replace {name}: key {} is not in the {which} role of root version {}",
                old.short(),
                cur.version
            )));
        };
        let k = generate(name.clone());
        role.keys[slot] = pk(&k.key);
        new_keys.push(k);
    }
    if let Some(t) = spec.root_threshold {
        next.roles.root.threshold = t;
    }
    if let Some(t) = spec.release_threshold {
        next.roles.release.threshold = t;
    }
    for n in &spec.revoke {
        if next.revoked.contains(n) {
            return Err(CliError::usage(format!(
                "node {n} is already revoked (root version {})",
                cur.version
            )));
        }
        next.revoked.push(*n);
    }
    next.fix_epoch(cur);
    next.check_shape()
        .map_err(|e| CliError::usage(format!("the new root would be malformed: {e}")))?;
    let mut signed = SignedRoot {
        root: next,
        signatures: Vec::new(),
    };
    for k in root_signers {
        signed.add_signature(k);
    }
    for k in new_keys.iter().filter(|k| role_of(&k.name) == Some("root")) {
        signed.add_signature(&k.key);
    }
    check_step(cur, &signed).map_err(|e| {
        CliError::usage(format!(
            "root version {} cannot be made: {e}; pass --root-key for a threshold ({}) of fleet/keys/root-N.key",
            signed.root.version, cur.roles.root.threshold
        ))
    })?;
    Ok((signed, new_keys))
}

/// A node certificate for `node`, signed by `enroll`, checked against `root` before it is
/// returned (the enroll key must be in the nodes role).
pub fn build_cert(
    root: &SignedRoot,
    node: NodeId,
    enroll: &SigningKey,
    now_ms: u64,
    expires_ms: u64,
) -> Result<SignedNodeCert> {
    if root.root.is_revoked(&node) {
        return Err(CliError::usage(format!(
            "node {node} is revoked by root version {}: a revoked node id cannot be enrolled again; give the machine a new identity",
            root.root.version
        )));
    }
    let cert = NodeCert {
        fleet: root.root.fleet.clone(),
        node,
        issued_ms: now_ms,
        expires_ms,
    }
    .sign(enroll);
    let mut trust = Trust::with_root(root.clone())
        .map_err(|e| CliError::usage(format!("the fleet root does not verify: {e}")))?;
    trust.set_now(now_ms);
    trust.check_cert(node, &cert).map_err(|e| {
        CliError::usage(format!(
            "the certificate would not be admitted: {e} (--key names the nodes role's key, fleet/keys/enroll.key)"
        ))
    })?;
    Ok(cert)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NOW: u64 = 1_796_179_019_000;

    pub(crate) fn spec() -> InitSpec {
        InitSpec {
            fleet: DEFAULT_FLEET.into(),
            root_keys: 3,
            root_threshold: 2,
            release_keys: 3,
            release_threshold: 2,
            now_ms: NOW,
            expires_ms: NOW + 365 * 86_400_000,
        }
    }

    pub(crate) fn init_root() -> SignedRoot {
        build_init(&spec()).unwrap().0
    }

    fn names(keys: &[NamedKey]) -> Vec<(String, PublicKey)> {
        keys.iter().map(|k| (k.name.clone(), pk(&k.key))).collect()
    }

    fn key<'a>(keys: &'a [NamedKey], name: &str) -> &'a SigningKey {
        &keys.iter().find(|k| k.name == name).unwrap().key
    }

    #[test]
    fn init_makes_a_self_signed_version_1_with_every_key() {
        let (root, keys) = build_init(&spec()).unwrap();
        root.check_self_signed().unwrap();
        assert_eq!((root.root.version, root.root.epoch), (1, 1));
        assert_eq!(root.signatures.len(), 2, "signed by 2 of 3 root keys");
        assert_eq!(root.root.roles.release.threshold, 2);
        assert_eq!(root.root.roles.release.keys.len(), 3);
        assert_eq!(root.root.roles.nodes.keys, vec![pk(key(&keys, "enroll"))]);
        let mut got: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "enroll",
                "release-1",
                "release-2",
                "release-3",
                "root-1",
                "root-2",
                "root-3"
            ]
        );
        // JSON round trip, as root.json.
        let back: SignedRoot = serde_json::from_str(&root_json(&root)).unwrap();
        assert_eq!(back, root);
        assert!(root_json(&root).contains(&pk(key(&keys, "root-1")).to_string()));
        let mut bad = spec();
        bad.release_threshold = 4;
        assert!(build_init(&bad).unwrap_err().message.contains("threshold"));
    }

    #[test]
    fn rotating_a_release_key_is_a_step_check_step_accepts_with_a_new_epoch() {
        let (root, keys) = build_init(&spec()).unwrap();
        let s = RotateSpec {
            replace: vec!["release-1".into()],
            now_ms: NOW + 1,
            ..Default::default()
        };
        let signers = [key(&keys, "root-1").clone(), key(&keys, "root-2").clone()];
        let (next, new) = build_next(&root, &names(&keys), &s, &signers).unwrap();
        check_step(&root.root, &next).unwrap();
        assert_eq!((next.root.version, next.root.epoch), (2, 2));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].name, "release-1");
        assert!(next.root.roles.release.contains(&pk(&new[0].key)));
        assert!(
            !next
                .root
                .roles
                .release
                .contains(&pk(key(&keys, "release-1")))
        );
        assert_eq!(next.root.expires_ms, root.root.expires_ms, "expiry kept");
        // One root key is not a threshold: refused, nothing made.
        let e = build_next(&root, &names(&keys), &s, &signers[..1]).unwrap_err();
        assert!(e.message.contains("--root-key"), "{e}");
        // A release key is no root key.
        let e =
            build_next(&root, &names(&keys), &s, &[key(&keys, "release-2").clone()]).unwrap_err();
        assert!(e.message.contains("not a root key"), "{e}");
    }

    #[test]
    fn rotating_a_root_key_signs_with_old_and_new_and_keeps_the_epoch() {
        let (root, keys) = build_init(&spec()).unwrap();
        let s = RotateSpec {
            replace: vec!["root-1".into()],
            now_ms: NOW + 1,
            expires_ms: Some(NOW + 730 * 86_400_000),
            ..Default::default()
        };
        let signers = [key(&keys, "root-1").clone(), key(&keys, "root-2").clone()];
        let (next, new) = build_next(&root, &names(&keys), &s, &signers).unwrap();
        check_step(&root.root, &next).unwrap();
        assert_eq!((next.root.version, next.root.epoch), (2, 1));
        assert!(next.root.roles.root.contains(&pk(&new[0].key)));
        assert_eq!(next.root.expires_ms, NOW + 730 * 86_400_000);
    }

    #[test]
    fn revoking_lists_the_node_in_a_next_version_and_not_twice() {
        let (root, keys) = build_init(&spec()).unwrap();
        let node = NodeId([7; 32]);
        let s = RotateSpec {
            revoke: vec![node],
            now_ms: NOW + 1,
            ..Default::default()
        };
        let signers = [key(&keys, "root-2").clone(), key(&keys, "root-3").clone()];
        let (next, new) = build_next(&root, &names(&keys), &s, &signers).unwrap();
        check_step(&root.root, &next).unwrap();
        assert!(new.is_empty());
        assert_eq!(next.root.revoked, vec![node]);
        assert_eq!(next.root.epoch, 1, "the release role did not change");
        let e = build_next(&next, &names(&keys), &s, &signers).unwrap_err();
        assert!(e.message.contains("already revoked"), "{e}");
        // A revoked node cannot be enrolled again.
        let e = build_cert(&next, node, key(&keys, "enroll"), NOW + 2, NOW + 10_000).unwrap_err();
        assert!(e.message.contains("revoked"), "{e}");
    }

    #[test]
    fn a_certificate_is_signed_by_the_enroll_key_and_checked() {
        let (root, keys) = build_init(&spec()).unwrap();
        let node = NodeId([9; 32]);
        let cert = build_cert(&root, node, key(&keys, "enroll"), NOW, NOW + 1000).unwrap();
        assert_eq!(cert.cert.node, node);
        assert_eq!(cert.cert.fleet, DEFAULT_FLEET);
        let e = build_cert(&root, node, key(&keys, "release-1"), NOW, NOW + 1000).unwrap_err();
        assert!(e.message.contains("enroll.key"), "{e}");
    }

    #[test]
    fn the_directory_keeps_every_version_and_reads_the_chain_back() {
        let dir = tempfile::tempdir().unwrap();
        let fd = FleetDir::new(dir.path().join("fleet"));
        let (root, keys) = build_init(&spec()).unwrap();
        for k in &keys {
            fd.write_key(k).unwrap();
        }
        fd.write_root(&root).unwrap();
        assert_eq!(fd.load_root().unwrap(), root);
        // Keys read back with fleetcast_net's reader; secrets are 0600.
        let back = fleetcast_net::keys::read_secret(&fd.key_file("release-2")).unwrap();
        assert_eq!(pk(&back), pk(key(&keys, "release-2")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(fd.key_file("root-1"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(fd.write_key(&keys[0]).is_err(), "no overwrite");
        let s = RotateSpec {
            replace: vec!["release-1".into()],
            now_ms: NOW + 1,
            ..Default::default()
        };
        let signers = [key(&keys, "root-1").clone(), key(&keys, "root-3").clone()];
        let (next, new) = build_next(&root, &fd.key_names(), &s, &signers).unwrap();
        fd.retire_key("release-1", 1).unwrap();
        fd.write_key(&new[0]).unwrap();
        fd.write_root(&next).unwrap();
        assert!(fd.keys_dir().join("old/release-1.v1.key").exists());
        assert_eq!(fd.load_chain().unwrap(), vec![root, next.clone()]);
        assert_eq!(fd.name_of(&pk(&new[0].key)).as_deref(), Some("release-1"));
        // A damaged root.json is refused.
        let mut bad = next.clone();
        bad.root.expires_ms += 1;
        std::fs::write(fd.root_file(), root_json(&bad)).unwrap();
        assert!(fd.load_root().is_err());
    }

    #[test]
    fn lifetimes_parse_with_units() {
        assert_eq!("365d".parse::<Lifetime>().unwrap().ms, 365 * 86_400_000);
        assert_eq!("12h".parse::<Lifetime>().unwrap().ms, 12 * 3_600_000);
        assert_eq!("90s".parse::<Lifetime>().unwrap().ms, 90_000);
        for bad in ["", "d", "10", "0d", "-1d", "1y"] {
            assert!(bad.parse::<Lifetime>().is_err(), "{bad}");
        }
    }
}
