//! The wire codec: how a [`Message`] becomes one frame and back, and which protocol version a
//! connection speaks.
//!
//! **API Boundary.** A frame is the postcard encoding of exactly one [`Message`]; on the wire it
//! travels as a big-endian `u32` length, then the frame, on its own unidirectional QUIC stream
//! (see [`crate::endpoint`]). Nothing decoded here is trusted: heads are verified by the
//! protocol core, chunks against the signed chunk map, and reports are informational only.
//!
//! Invariant: **one version per connection.** The version is the TLS ALPN ([`ALPN`]); a peer
//! that negotiates an older one ([`ALPN_PREVIOUS`]) is closed right after the handshake with
//! [`CLOSE_VERSION`] and a reason that names both versions and says to upgrade, before any of
//! its frames is read.
//!
//! Then **admission**: each side sends one [`Hello`] (what it is, with its node certificate)
//! on its first unidirectional stream ([`encode_hello`], at most [`MAX_HELLO`] bytes); a peer
//! its policy refuses is closed with [`CLOSE_ADMISSION`] and the reason (see `handshake.rs`).

use fleetcast_protocol::release::MAX_CHUNK_SIZE;
use fleetcast_protocol::trust::Hello;
use fleetcast_protocol::wire::Message;

/// QUIC ALPN of the protocol version this build speaks (version 6: staged rollouts, heads with
/// a rollout plan, tallies with the fleet's size, waves and health; version 5: the fleet root,
/// node certificates and the admission `Hello`, heads with an epoch; version 4: the census and
/// the runtime's view in the status; version 3: messages nested per layer; version 2 added the
/// release's run policy).
pub const ALPN: &[u8] = b"fleetcast/6";

/// Earlier versions, recognised only so that a peer speaking one is refused with a reason that
/// says to upgrade (instead of a bare TLS "no application protocol" alert).
pub const ALPN_PREVIOUS: &[&[u8]] = &[
    b"fleetcast/5",
    b"fleetcast/4",
    b"fleetcast/3",
    b"fleetcast/2",
];

/// Application close code: the peer speaks an older protocol version.
pub const CLOSE_VERSION: u32 = 3;

/// Application close code: the peer was refused by the admission policy (at the handshake,
/// or later by [`crate::NetHandle::recheck`]); the close reason says why.
pub const CLOSE_ADMISSION: u32 = 5;

/// Largest [`Hello`] accepted (a certificate with a few signatures is well under 1 KiB).
pub const MAX_HELLO: usize = 8 * 1024;

/// Largest frame: one maximal chunk plus headroom for the envelope.
pub const MAX_FRAME: usize = MAX_CHUNK_SIZE as usize + 64 * 1024;

/// Encoding and decoding errors. Neither changes any state: the frame is not sent, or (on
/// receipt) its sender is disconnected with this text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("frame does not decode as a {} message: {reason}", version_name(ALPN))]
    Undecodable { reason: String },
}

/// Encodes a message as one frame of at most `max` bytes.
pub fn encode(msg: &Message, max: usize) -> Result<Vec<u8>, CodecError> {
    let bytes = postcard::to_stdvec(msg).map_err(|e| CodecError::Undecodable {
        reason: e.to_string(),
    })?;
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Decodes one frame of at most `max` bytes. Trailing bytes are an error: a frame is exactly
/// one message.
pub fn decode(bytes: &[u8], max: usize) -> Result<Message, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    match postcard::take_from_bytes::<Message>(bytes) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(CodecError::Undecodable {
            reason: format!("{} trailing bytes after the message", rest.len()),
        }),
        Err(e) => Err(CodecError::Undecodable {
            reason: e.to_string(),
        }),
    }
}

/// Encodes the [`Hello`] a side sends on its first stream (postcard, then FIN).
pub fn encode_hello(hello: &Hello) -> Result<Vec<u8>, CodecError> {
    let bytes = postcard::to_stdvec(hello).map_err(|e| CodecError::Undecodable {
        reason: e.to_string(),
    })?;
    if bytes.len() > MAX_HELLO {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max: MAX_HELLO,
        });
    }
    Ok(bytes)
}

/// Decodes a peer's [`Hello`]: exactly one, at most [`MAX_HELLO`] bytes.
pub fn decode_hello(bytes: &[u8]) -> Result<Hello, CodecError> {
    if bytes.len() > MAX_HELLO {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max: MAX_HELLO,
        });
    }
    match postcard::take_from_bytes::<Hello>(bytes) {
        Ok((hello, [])) => Ok(hello),
        Ok((_, rest)) => Err(CodecError::Undecodable {
            reason: format!("{} trailing bytes after the hello", rest.len()),
        }),
        Err(e) => Err(CodecError::Undecodable {
            reason: format!("hello: {e}"),
        }),
    }
}

/// Every ALPN this endpoint offers or accepts, the current version first.
pub(crate) fn alpn_protocols() -> Vec<Vec<u8>> {
    std::iter::once(ALPN)
        .chain(ALPN_PREVIOUS.iter().copied())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Why a connection that negotiated `alpn` must be refused, if it must.
pub(crate) fn refuse_version(alpn: Option<&[u8]>) -> Option<String> {
    match alpn {
        Some(p) if p == ALPN => None,
        Some(p) => Some(format!(
            "protocol version mismatch: the peer speaks {}, this node speaks {}; upgrade the \
             older node to the same fleetcast release",
            version_name(p),
            version_name(ALPN)
        )),
        None => Some(format!(
            "the peer negotiated no protocol version; this node speaks {}",
            version_name(ALPN)
        )),
    }
}

/// `fleetcast/6` for display.
pub(crate) fn version_name(alpn: &[u8]) -> String {
    String::from_utf8_lossy(alpn).into_owned()
}

#[cfg(test)]
mod tests {
    use fleetcast_protocol::release::Digest;
    use fleetcast_protocol::wire::{BroadcastMsg, ContentMsg, Payload};

    use super::*;

    fn chunk(len: usize) -> Message {
        ContentMsg::Chunk {
            digest: Digest([7; 32]),
            index: 3,
            data: Payload(vec![5u8; len].into()),
        }
        .into()
    }

    #[test]
    fn round_trip_and_bounds() {
        for m in [Message::StatusRequest, chunk(0), chunk(100_000)] {
            let bytes = encode(&m, MAX_FRAME).unwrap();
            assert_eq!(decode(&bytes, MAX_FRAME).unwrap(), m);
        }
        let big = chunk(MAX_FRAME);
        assert!(matches!(
            encode(&big, MAX_FRAME),
            Err(CodecError::TooLarge { .. })
        ));
        let err = decode(&vec![0u8; MAX_FRAME + 1], MAX_FRAME).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "frame of {} bytes exceeds the maximum of {MAX_FRAME} bytes",
                MAX_FRAME + 1
            )
        );
        let mut bytes = encode(&Message::StatusRequest, MAX_FRAME).unwrap();
        bytes.push(0);
        let err = decode(&bytes, MAX_FRAME).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff], MAX_FRAME),
            Err(CodecError::Undecodable { .. })
        ));
        // A maximal chunk fits in a frame.
        let max_chunk = ContentMsg::Chunk {
            digest: Digest([0; 32]),
            index: u32::MAX,
            data: Payload(vec![0; MAX_CHUNK_SIZE as usize].into()),
        };
        assert!(encode(&max_chunk.into(), MAX_FRAME).is_ok());
        // No prefix of a frame decodes.
        let full = encode(
            &BroadcastMsg::Graft {
                app: fleetcast_protocol::AppName::new("a").unwrap(),
                seq: 9,
                id: Digest([1; 32]),
            }
            .into(),
            MAX_FRAME,
        )
        .unwrap();
        for n in 0..full.len() {
            assert!(
                decode(&full[..n], MAX_FRAME).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn versions() {
        assert_eq!(refuse_version(Some(ALPN)), None);
        assert_eq!(ALPN, b"fleetcast/6");
        assert!(ALPN_PREVIOUS.contains(&&b"fleetcast/5"[..]));
        assert!(ALPN_PREVIOUS.contains(&&b"fleetcast/4"[..]));
        let why = refuse_version(Some(b"fleetcast/5")).unwrap();
        assert!(
            why.contains("fleetcast/5") && why.contains("fleetcast/6"),
            "{why}"
        );
        assert!(why.contains("upgrade"), "{why}");
        assert!(refuse_version(None).is_some());
        assert_eq!(alpn_protocols()[0], ALPN);
        assert!(!ALPN_PREVIOUS.contains(&ALPN));
    }

    #[test]
    fn hello_round_trip_and_bounds() {
        for h in [Hello::Operator, Hello::Node { cert: None }] {
            assert_eq!(decode_hello(&encode_hello(&h).unwrap()).unwrap(), h);
        }
        let mut bytes = encode_hello(&Hello::Operator).unwrap();
        bytes.push(0);
        let err = decode_hello(&bytes).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        assert!(decode_hello(&[]).is_err());
        assert!(matches!(
            decode_hello(&vec![0; MAX_HELLO + 1]),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
