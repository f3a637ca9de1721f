use std::path::PathBuf;

use crate::error::{CliError, Result};
use crate::json::{self, Event};
use crate::out::{Out, OutArgs};

/// Create a publisher signing key (NAME.key, secret) and its public half (NAME.pub).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  fleetcast keygen --out ops.key   # writes ops.key (mode 0600) and ops.pub\n  Give ops.pub to every agent (trusted_keys); keep ops.key for `fleetcast release --key`."
)]
pub struct Keygen {
    /// Where to write the secret key; the public key goes beside it with extension .pub.
    #[arg(long, default_value = "fleetcast.key")]
    pub out: PathBuf,
    #[command(flatten)]
    pub format: OutArgs,
}

impl Keygen {
    pub fn execute(self) -> Result<()> {
        let out = Out::new(self.format.json);
        let (public, vk) =
            fleetcast_net::keys::generate(&self.out).map_err(|e| CliError::usage(e.to_string()))?;
        out.say(format!(
            "wrote {} (secret, keep it safe) and {}",
            self.out.display(),
            public.display()
        ));
        out.say(format!("public key {}", hex::encode(vk.to_bytes())));
        out.emit(Event::Keygen(json::Keygen {
            secret_file: self.out.display().to_string(),
            public_file: public.display().to_string(),
            public_key: hex::encode(vk.to_bytes()),
        }));
        Ok(())
    }
}
