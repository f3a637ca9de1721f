//! Head files: a signed head kept on disk between `release --sign-only`, `sign` and `push`.
//!
//! A head file is JSON (pretty, keys and signatures in hex):
//!
//! ```json
//! {
//!   "format": "fleetcast-head/1",
//!   "head": { "head": { "fleet": "default", "app": "shop", "seq": 2, "epoch": 1, ... },
//!             "signatures": [ { "key": "…64 hex…", "sig": "…128 hex…" } ] },
//!   "component": "app.wasm"
//! }
//! ```
//!
//! `component` points at the component's bytes (a path relative to the head file's directory,
//! or absolute); `fleetcast push` reads them, checks them against the signed release (digest
//! and chunk map) and serves them. It is `null` for a rollback (agents hold the release).

use std::path::{Path, PathBuf};

use fleetcast_protocol::SignedHead;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};
use crate::fleetdir::write_atomic;

pub const FORMAT: &str = "fleetcast-head/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadFile {
    pub format: String,
    pub head: SignedHead,
    /// The component's bytes, relative to the head file's directory (or absolute).
    pub component: Option<PathBuf>,
}

impl HeadFile {
    pub fn new(head: SignedHead, component: Option<PathBuf>) -> HeadFile {
        HeadFile {
            format: FORMAT.into(),
            head,
            component,
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a head file serialises");
        s.push('\n');
        s
    }

    pub fn parse(text: &str, file: &Path) -> Result<HeadFile> {
        let hf: HeadFile = serde_json::from_str(text).map_err(|e| {
            CliError::usage(format!(
                "{} is not a head file: {e} (make one with fleetcast release --sign-only --out FILE)",
                file.display()
            ))
        })?;
        if hf.format != FORMAT {
            return Err(CliError::usage(format!(
                "{} is a head file of format {:?}; this fleetcast reads {FORMAT:?}",
                file.display(),
                hf.format
            )));
        }
        Ok(hf)
    }

    pub fn read(file: &Path) -> Result<HeadFile> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
        HeadFile::parse(&text, file)
    }

    /// Writes the file atomically.
    pub fn write(&self, file: &Path) -> Result<()> {
        write_atomic(file, self.to_json().as_bytes(), false)
    }

    /// The component path as seen from here: relative paths are relative to `file`'s directory.
    pub fn component_path(&self, file: &Path) -> Option<PathBuf> {
        let c = self.component.as_ref()?;
        if c.is_absolute() {
            return Some(c.clone());
        }
        let dir = file.parent().unwrap_or(Path::new(""));
        Some(dir.join(c))
    }

    /// The component's bytes, checked against the signed release; `None` without a component.
    pub fn component_bytes(&self, file: &Path) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.component_path(file) else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            CliError::usage(format!(
                "cannot read {} (the component {} names): {e}",
                path.display(),
                file.display()
            ))
        })?;
        self.head.head.release.verify_content(&bytes).map_err(|e| {
            CliError::usage(format!(
                "{} does not match the signed release of {}: {e}",
                path.display(),
                file.display()
            ))
        })?;
        Ok(Some(bytes))
    }
}

/// The `component` a head file at `head_file` records for `component`: relative to the head
/// file's directory when both are relative, else absolute.
pub fn relative_component(head_file: &Path, component: &Path) -> PathBuf {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        }
    };
    let (h, c) = (abs(head_file), abs(component));
    match h.parent().and_then(|d| c.strip_prefix(d).ok()) {
        Some(rel) => rel.to_path_buf(),
        None => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::sign_all;
    use crate::signing::tests::{head, key};

    #[test]
    fn a_head_file_round_trips_and_checks_its_component() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"bytes").unwrap();
        let file = dir.path().join("shop-1.0.1.head");
        let sh = sign_all(head(1, 2), &[key(1), key(2)]);
        let comp = relative_component(&file, &dir.path().join("app.wasm"));
        assert_eq!(comp, PathBuf::from("app.wasm"));
        HeadFile::new(sh.clone(), Some(comp)).write(&file).unwrap();
        let back = HeadFile::read(&file).unwrap();
        assert_eq!(back.head, sh);
        assert_eq!(back.component_bytes(&file).unwrap().unwrap(), b"bytes");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("\"format\": \"fleetcast-head/1\""), "{text}");
        assert!(
            text.contains(&sh.signatures[0].key.to_string()),
            "keys in hex: {text}"
        );
        // Other bytes under the signed release are refused.
        std::fs::write(dir.path().join("app.wasm"), b"other").unwrap();
        assert!(back.component_bytes(&file).is_err());
        // Not a head file, another format.
        assert!(HeadFile::parse("{}", &file).is_err());
        let other = text.replace("fleetcast-head/1", "fleetcast-head/9");
        assert!(
            HeadFile::parse(&other, &file)
                .unwrap_err()
                .message
                .contains("format")
        );
    }
}
