//! Serde for fixed-size byte strings: hex in human-readable formats (JSON), raw bytes in
//! postcard (exactly as `[u8; N]` encodes, so the wire and disk formats do not change).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) fn serialize<const N: usize, S: Serializer>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error>
where
    [u8; N]: Serialize,
{
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(b))
    } else {
        b.serialize(s)
    }
}

pub(crate) fn deserialize<'de, const N: usize, D: Deserializer<'de>>(
    d: D,
) -> Result<[u8; N], D::Error>
where
    [u8; N]: Deserialize<'de>,
{
    if d.is_human_readable() {
        let text = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(text.trim(), &mut out)
            .map_err(|e| D::Error::custom(format!("expected {} hex characters: {e}", 2 * N)))?;
        Ok(out)
    } else {
        <[u8; N]>::deserialize(d)
    }
}

/// An ed25519 signature: hex in JSON; in postcard exactly as `ed25519_dalek` encodes it.
pub(crate) mod signature {
    use ed25519_dalek::Signature;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(sig.to_bytes()))
        } else {
            sig.serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let mut out = [0u8; 64];
            hex::decode_to_slice(text.trim(), &mut out)
                .map_err(|e| D::Error::custom(format!("expected 128 hex characters: {e}")))?;
            Ok(Signature::from_bytes(&out))
        } else {
            Signature::deserialize(d)
        }
    }
}
