//! The one place that serializes typed messages (bincode 2 through serde).
//!
//! Every other module calls [`encode`] / [`decode`]; swapping the serialization format only
//! touches this file. Decoding is bounded: a body larger than [`MAX_BODY`] is refused, and
//! bincode is configured with the same byte limit so a lying length inside the body cannot make
//! it allocate more than that.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded message body accepted or produced (1 MiB). Bulk data (tensors) travels in a
/// frame's raw tail, not through the codec.
pub const MAX_BODY: usize = 1 << 20;

/// Errors encoding or decoding a message body.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Serialization failed.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The body is larger than [`MAX_BODY`].
    #[error("message body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Actual size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Decoding left unread bytes (the sender used another message type or version).
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Encodes `msg` in a self-describing format (CBOR) for types bincode cannot carry, such as
/// internally tagged enums (which need `deserialize_any`). Same [`MAX_BODY`] limit as [`encode`];
/// the result travels as an envelope's raw tail.
pub fn encode_self_describing<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    ciborium::into_writer(msg, &mut out).map_err(|e| CodecError::Encode(e.to_string()))?;
    if out.len() > MAX_BODY {
        return Err(CodecError::TooLarge {
            len: out.len(),
            max: MAX_BODY,
        });
    }
    Ok(out)
}

/// Decodes what [`encode_self_describing`] produced; input over [`MAX_BODY`] is refused unread.
pub fn decode_self_describing<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_BODY {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_BODY,
        });
    }
    ciborium::from_reader(bytes).map_err(|e| CodecError::Decode(e.to_string()))
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BODY>()
}

/// Serializes a message body.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_BODY {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_BODY,
        });
    }
    Ok(bytes)
}

/// Deserializes a message body; the whole slice must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_BODY {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_BODY,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        a: u32,
        s: String,
        v: Vec<u16>,
    }

    #[test]
    fn round_trip() {
        let m = Msg {
            a: 7,
            s: "hi".into(),
            v: vec![1, 2, 3],
        };
        let b = encode(&m).unwrap();
        assert_eq!(decode::<Msg>(&b).unwrap(), m);
    }

    #[test]
    fn trailing_and_truncated_are_errors() {
        let mut b = encode(&Msg {
            a: 1,
            s: "x".into(),
            v: vec![],
        })
        .unwrap();
        assert!(matches!(
            decode::<Msg>(&b[..b.len() - 1]),
            Err(CodecError::Decode(_))
        ));
        b.push(0);
        assert!(matches!(decode::<Msg>(&b), Err(CodecError::Trailing(1))));
    }

    #[test]
    fn lying_length_does_not_allocate() {
        // A Vec<u8> claiming u32::MAX elements (varint 0xFC + 4 bytes) with no data.
        let bytes = [0xFCu8, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        let bytes = [0xFDu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }

    #[test]
    fn oversized_is_refused() {
        let big = vec![0u8; MAX_BODY + 1];
        assert!(encode(&big).is_err());
        assert!(matches!(
            decode::<Vec<u8>>(&big),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "kind")]
    enum Tagged {
        Left { n: u32 },
        Right { s: String },
    }

    #[test]
    fn self_describing_carries_internally_tagged_enums() {
        let v = vec![Tagged::Left { n: 7 }, Tagged::Right { s: "x".into() }];
        // bincode cannot decode these (it has no `deserialize_any`)...
        assert!(decode::<Vec<Tagged>>(&encode(&v).unwrap()).is_err());
        // ...the self-describing encoding can.
        let bytes = encode_self_describing(&v).unwrap();
        assert_eq!(decode_self_describing::<Vec<Tagged>>(&bytes).unwrap(), v);
        assert!(matches!(
            decode_self_describing::<Vec<Tagged>>(&bytes[..bytes.len() - 1]),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode_self_describing::<Vec<u8>>(&vec![0u8; MAX_BODY + 1]),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
