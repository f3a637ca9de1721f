use std::path::PathBuf;

use anyhow::Result;

/// Create a publisher signing key (NAME.key, secret) and its public half (NAME.pub).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  fleetcast keygen --out ops.key   # writes ops.key (mode 0600) and ops.pub\n  Give ops.pub to every agent (trusted_keys); keep ops.key for `fleetcast release --key`."
)]
pub struct Keygen {
    /// Where to write the secret key; the public key goes beside it with extension .pub.
    #[arg(long, default_value = "fleetcast.key")]
    pub out: PathBuf,
}

impl Keygen {
    pub fn execute(self) -> Result<()> {
        let (public, vk) = fleetcast_net::keys::generate(&self.out)?;
        println!(
            "wrote {} (secret, keep it safe) and {}",
            self.out.display(),
            public.display()
        );
        println!("public key {}", hex::encode(vk.to_bytes()));
        Ok(())
    }
}
