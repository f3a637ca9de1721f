//! `fleetcast sign`: add a release key's signature to a head file (after checking the
//! signatures it carries).

use std::path::PathBuf;

use super::release::say_signed;
use crate::error::{CliError, Result};
use crate::fleetdir::FleetDir;
use crate::headfile::HeadFile;
use crate::out::{Out, OutArgs};
use crate::signing::{self, public, read_keys};

/// Add a signature to a head file written by `fleetcast release --sign-only`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The signatures the head carries are verified first; a key that already signed is refused. With --fleet the key must be a release key of the root, the head must carry the root's fleet and epoch, and the line says how many of the signatures needed it has (\"2 of 2 needed\").\n\nExample:\n  fleetcast sign shop-1.0.1.head --key fleet/keys/release-3.key --fleet fleet\n  fleetcast push shop-1.0.1.head --peer 127.0.0.1:7401 --key fleet/keys/release-3.key"
)]
pub struct Sign {
    /// The head file.
    pub file: PathBuf,
    /// A release key's secret file (repeatable).
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The fleet directory, to check the key and count the signatures against its root.
    #[arg(long, value_name = "DIR")]
    pub fleet: Option<PathBuf>,
    /// Write the signed head here instead of back to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub format: OutArgs,
}

/// Adds signatures by `keys` to `hf`, checked against `root` when given.
pub fn sign_file(
    hf: &mut HeadFile,
    keys: &[ed25519_dalek::SigningKey],
    root: Option<&fleetcast_protocol::SignedRoot>,
) -> Result<()> {
    signing::check_signatures(&hf.head)?;
    if let Some(r) = root {
        let (h, r) = (&hf.head.head, &r.root);
        if h.fleet != r.fleet {
            return Err(CliError::usage(format!(
                "the head is for fleet {:?} but the --fleet root is for {:?}",
                h.fleet, r.fleet
            )));
        }
        if h.epoch != r.epoch {
            return Err(CliError::usage(format!(
                "the head is signed under epoch {} but root version {} is epoch {}: the release keys were rotated since; sign a new head (fleetcast release --sign-only)",
                h.epoch, r.version, r.epoch
            )));
        }
        for k in keys {
            if !r.roles.release.contains(&public(k)) {
                return Err(CliError::usage(format!(
                    "key {} is not a release key of root version {}: its signature would count for nothing (fleetcast fleet show lists the release keys)",
                    public(k).short(),
                    r.version
                )));
            }
        }
    }
    for k in keys {
        signing::add_signature(&mut hf.head, k)?;
    }
    Ok(())
}

impl Sign {
    pub fn execute(self) -> Result<()> {
        let out = Out::new(self.format.json);
        let keys = read_keys(&self.keys)?;
        let root = match &self.fleet {
            Some(d) => Some(FleetDir::new(d).load_root()?),
            None => None,
        };
        let mut hf = HeadFile::read(&self.file)?;
        sign_file(&mut hf, &keys, root.as_ref())?;
        let dest = self.out.clone().unwrap_or_else(|| self.file.clone());
        if dest != self.file
            && let Some(c) = hf.component_path(&self.file)
        {
            hf.component = Some(crate::headfile::relative_component(&dest, &c));
        }
        hf.write(&dest)?;
        let count = signing::tally(&hf.head, root.as_ref(), None);
        say_signed(&out, &dest, &hf, &count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleetdir::build_init;
    use crate::fleetdir::tests::spec;
    use crate::signing::sign_all;
    use crate::signing::tests::head;

    #[test]
    fn signing_in_turn_reaches_the_threshold_of_the_root() {
        let (root, keys) = build_init(&spec()).unwrap();
        let k = |n: &str| keys.iter().find(|k| k.name == n).unwrap().key.clone();
        let mut hf = HeadFile::new(sign_all(head(1, 1), &[k("release-1")]), None);
        let c = signing::tally(&hf.head, Some(&root), None);
        assert_eq!((c.have, c.need, c.complete()), (1, Some(2), false));
        assert_eq!(c.describe(), "1 of 2 needed");
        sign_file(&mut hf, &[k("release-3")], Some(&root)).unwrap();
        let c = signing::tally(&hf.head, Some(&root), None);
        assert_eq!(c.describe(), "2 of 2 needed");
        assert!(c.complete());
        // Not a release key; the same key again; another epoch.
        let e = sign_file(&mut hf, &[k("enroll")], Some(&root)).unwrap_err();
        assert!(e.message.contains("not a release key"), "{e}");
        let e = sign_file(&mut hf, &[k("release-1")], Some(&root)).unwrap_err();
        assert!(e.message.contains("already signed"), "{e}");
        let mut old = HeadFile::new(sign_all(head(0, 1), &[k("release-1")]), None);
        let e = sign_file(&mut old, &[k("release-2")], Some(&root)).unwrap_err();
        assert!(e.message.contains("epoch"), "{e}");
    }
}
