//! Publisher key files: `NAME.key` (secret, mode 0600) and `NAME.pub` (public), each one line of
//! hex with a type tag, so a file of the wrong kind is a clear error rather than a bad key.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

const SECRET_TAG: &str = "fleetcast-ed25519-secret";
const PUBLIC_TAG: &str = "fleetcast-ed25519-public";

/// What went wrong with a key file. Nothing is left half-written: a refused `generate` writes
/// nothing, and reads change nothing.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} already exists: pick another --out or remove it first", .0.display())]
    Exists(PathBuf),
    #[error("{action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot read {what} file {}: {error}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a {what} file ({hint})", path.display())]
    WrongKind {
        path: PathBuf,
        what: &'static str,
        hint: String,
    },
    #[error("{} has a damaged key: expected 64 hex digits", .0.display())]
    Damaged(PathBuf),
    #[error("{} does not hold a valid ed25519 public key", .0.display())]
    InvalidPublic(PathBuf),
}

type Result<T, E = KeyError> = std::result::Result<T, E>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.to_path_buf();
    move |error| KeyError::Io {
        action,
        path,
        error,
    }
}

/// Writes a new keypair to `out` (secret) and `out` with extension `.pub` (public).
/// Refuses to overwrite. Returns the public file's path.
pub fn generate(out: &Path) -> Result<(PathBuf, VerifyingKey)> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = out.with_extension("pub");
    for p in [out, public.as_path()] {
        if p.exists() {
            return Err(KeyError::Exists(p.to_path_buf()));
        }
    }
    write_secret(
        out,
        &format!("{SECRET_TAG} {}\n", hex::encode(key.to_bytes())),
    )?;
    let vk = key.verifying_key();
    std::fs::write(
        &public,
        format!("{PUBLIC_TAG} {}\n", hex::encode(vk.to_bytes())),
    )
    .map_err(io("writing", &public))?;
    Ok((public, vk))
}

#[cfg(unix)]
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))?;
    f.write_all(text.as_bytes()).map_err(io("writing", path))
}

#[cfg(not(unix))]
fn write_secret(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io("writing", path))
}

fn read_tagged(path: &Path, tag: &str, what: &'static str) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).map_err(|error| KeyError::Read {
        what,
        path: path.to_path_buf(),
        error,
    })?;
    let mut parts = text.split_whitespace();
    let (found, hexkey) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if found != tag {
        let hint = if found == SECRET_TAG || found == PUBLIC_TAG {
            format!("it holds a {found} key: did you swap the .key and .pub files?")
        } else {
            "create one with `fleetcast keygen --out NAME.key`".to_string()
        };
        return Err(KeyError::WrongKind {
            path: path.to_path_buf(),
            what,
            hint,
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hexkey, &mut out).map_err(|_| KeyError::Damaged(path.to_path_buf()))?;
    Ok(out)
}

/// Reads a secret key written by [`generate`].
pub fn read_secret(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_tagged(
        path,
        SECRET_TAG,
        "fleetcast secret key",
    )?))
}

/// Reads a public key written by [`generate`].
pub fn read_public(path: &Path) -> Result<VerifyingKey> {
    let bytes = read_tagged(path, PUBLIC_TAG, "fleetcast public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublic(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_read_back_and_refuse_wrong_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ops.key");
        let (public, vk) = generate(&out).unwrap();
        assert_eq!(read_secret(&out).unwrap().verifying_key(), vk);
        assert_eq!(read_public(&public).unwrap(), vk);
        let err = read_public(&out).unwrap_err().to_string();
        assert!(err.contains("swap"), "{err}");
        assert!(
            generate(&out)
                .unwrap_err()
                .to_string()
                .contains("already exists")
        );
        std::fs::write(dir.path().join("x.pub"), "hello").unwrap();
        let err = read_public(&dir.path().join("x.pub"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fleetcast keygen"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
