//! Pure, I/O-free frame encoding and decoding.
//!
//! A frame is a fixed 14-byte header, a codec-encoded body and an optional raw byte tail:
//!
//! ```text
//! offset size field
//!      0    1 magic     0xED
//!      1    1 version   1 (FRAME_VERSION)
//!      2    2 msg_type  u16 big-endian (see `crate::protocol` for the allocated ranges)
//!      4    2 flags     u16 big-endian, carried as-is for the upper layer
//!      6    4 body_len  u32 big-endian, <= FrameLimits::max_body
//!     10    4 tail_len  u32 big-endian, <= FrameLimits::max_tail
//!     14    . body      body_len bytes (crate::codec encoding of the typed message)
//!      .    . tail      tail_len bytes, raw (tensors never go through serde)
//! ```
//!
//! The header is validated (magic, version, accepted type, both lengths within limits) before
//! any body byte is read or buffer allocated, so a lying length prefix is an error, not an
//! allocation.

use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};

/// First header byte of every frame.
pub const FRAME_MAGIC: u8 = 0xED;
/// Frame format version (second header byte).
pub const FRAME_VERSION: u8 = 1;
/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 14;
/// Default limit on a frame body (1 MiB, = [`codec::MAX_BODY`]).
pub const DEFAULT_MAX_BODY: u32 = codec::MAX_BODY as u32;
/// Default limit on a frame tail (64 MiB).
pub const DEFAULT_MAX_TAIL: u32 = 64 << 20;

/// A typed message that can travel in a frame body.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// The message type number written in the frame header. Must be unique in the protocol
    /// (see the ranges in [`crate::protocol`]).
    const TYPE: u16;
}

/// Errors of the frame format.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The first byte is not [`FRAME_MAGIC`].
    #[error("bad frame magic 0x{0:02x}")]
    BadMagic(u8),
    /// The frame version is not [`FRAME_VERSION`].
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    /// The message type is not accepted on this stream.
    #[error("unknown message type 0x{0:04x}")]
    UnknownType(u16),
    /// The body length exceeds the limit.
    #[error("frame body of {len} bytes exceeds the {max}-byte limit")]
    BodyTooLarge {
        /// Announced or actual length.
        len: u64,
        /// Limit.
        max: u32,
    },
    /// The tail length exceeds the limit.
    #[error("frame tail of {len} bytes exceeds the {max}-byte limit")]
    TailTooLarge {
        /// Announced or actual length.
        len: u64,
        /// Limit.
        max: u32,
    },
    /// The input ended inside a frame.
    #[error("truncated frame: {missing} more bytes expected")]
    Truncated {
        /// Bytes still missing for the current frame (at least).
        missing: u64,
    },
    /// A frame of another type was received than the one expected.
    #[error("expected message type 0x{expected:04x}, got 0x{got:04x}")]
    UnexpectedType {
        /// Expected type.
        expected: u16,
        /// Received type.
        got: u16,
    },
    /// The body is not a valid encoding of the message type.
    #[error("bad message body: {0}")]
    Codec(#[from] CodecError),
    /// A [`FrameDecoder`] is used again after it reported an error.
    #[error("frame decoder used after an error")]
    Poisoned,
}

/// Size limits applied to every frame read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest body (codec-encoded message), bytes.
    pub max_body: u32,
    /// Largest raw tail, bytes.
    pub max_tail: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_body: DEFAULT_MAX_BODY,
            max_tail: DEFAULT_MAX_TAIL,
        }
    }
}

/// The set of message types accepted on a stream (a list of inclusive ranges).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSet(Arc<[RangeInclusive<u16>]>);

impl TypeSet {
    /// Accepts exactly the given ranges.
    pub fn new(ranges: impl IntoIterator<Item = RangeInclusive<u16>>) -> TypeSet {
        TypeSet(ranges.into_iter().collect())
    }

    /// Accepts exactly one type.
    pub fn single(t: u16) -> TypeSet {
        TypeSet::new([t..=t])
    }

    /// Accepts every type (the caller checks types itself).
    pub fn all() -> TypeSet {
        TypeSet::new([0..=u16::MAX])
    }

    /// Whether `t` is accepted.
    pub fn contains(&self, t: u16) -> bool {
        self.0.iter().any(|r| r.contains(&t))
    }
}

/// A validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message type.
    pub msg_type: u16,
    /// Flags (opaque to the wire layer).
    pub flags: u16,
    /// Body length.
    pub body_len: u32,
    /// Tail length.
    pub tail_len: u32,
}

impl FrameHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = FRAME_MAGIC;
        h[1] = FRAME_VERSION;
        h[2..4].copy_from_slice(&self.msg_type.to_be_bytes());
        h[4..6].copy_from_slice(&self.flags.to_be_bytes());
        h[6..10].copy_from_slice(&self.body_len.to_be_bytes());
        h[10..14].copy_from_slice(&self.tail_len.to_be_bytes());
        h
    }

    /// Decodes and validates a header against the limits and accepted types.
    pub fn decode(
        h: &[u8; HEADER_LEN],
        limits: &FrameLimits,
        types: &TypeSet,
    ) -> Result<FrameHeader, FrameError> {
        if h[0] != FRAME_MAGIC {
            return Err(FrameError::BadMagic(h[0]));
        }
        if h[1] != FRAME_VERSION {
            return Err(FrameError::BadVersion(h[1]));
        }
        let msg_type = u16::from_be_bytes([h[2], h[3]]);
        let flags = u16::from_be_bytes([h[4], h[5]]);
        let body_len = u32::from_be_bytes([h[6], h[7], h[8], h[9]]);
        let tail_len = u32::from_be_bytes([h[10], h[11], h[12], h[13]]);
        if !types.contains(msg_type) {
            return Err(FrameError::UnknownType(msg_type));
        }
        if body_len > limits.max_body {
            return Err(FrameError::BodyTooLarge {
                len: body_len.into(),
                max: limits.max_body,
            });
        }
        if tail_len > limits.max_tail {
            return Err(FrameError::TailTooLarge {
                len: tail_len.into(),
                max: limits.max_tail,
            });
        }
        Ok(FrameHeader {
            msg_type,
            flags,
            body_len,
            tail_len,
        })
    }
}

/// One frame: message type, flags, encoded body and raw tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Message type.
    pub msg_type: u16,
    /// Flags (opaque to the wire layer).
    pub flags: u16,
    /// Codec-encoded body.
    pub body: Bytes,
    /// Raw tail (may be empty).
    pub tail: Bytes,
}

impl Frame {
    /// Encodes a typed message with a raw tail into a frame.
    pub fn from_message<M: WireMessage>(msg: &M, tail: Bytes) -> Result<Frame, FrameError> {
        Ok(Frame {
            msg_type: M::TYPE,
            flags: 0,
            body: Bytes::from(codec::encode(msg)?),
            tail,
        })
    }

    /// Decodes the body as `M`, checking the message type first.
    pub fn decode<M: WireMessage>(&self) -> Result<M, FrameError> {
        if self.msg_type != M::TYPE {
            return Err(FrameError::UnexpectedType {
                expected: M::TYPE,
                got: self.msg_type,
            });
        }
        Ok(codec::decode(&self.body)?)
    }

    /// The header of this frame, checked against `limits`.
    pub fn header(&self, limits: &FrameLimits) -> Result<FrameHeader, FrameError> {
        if self.body.len() > limits.max_body as usize {
            return Err(FrameError::BodyTooLarge {
                len: self.body.len() as u64,
                max: limits.max_body,
            });
        }
        if self.tail.len() > limits.max_tail as usize {
            return Err(FrameError::TailTooLarge {
                len: self.tail.len() as u64,
                max: limits.max_tail,
            });
        }
        Ok(FrameHeader {
            msg_type: self.msg_type,
            flags: self.flags,
            body_len: self.body.len() as u32,
            tail_len: self.tail.len() as u32,
        })
    }

    /// Header + body + tail as one contiguous buffer (tests and small frames; the stream
    /// writer avoids copying the tail).
    pub fn encode(&self, limits: &FrameLimits) -> Result<Vec<u8>, FrameError> {
        let h = self.header(limits)?;
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len() + self.tail.len());
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.tail);
        Ok(out)
    }
}

/// Incremental decoder over a byte stream: feed bytes with [`FrameDecoder::push`], take frames
/// with [`FrameDecoder::next_frame`]. Buffers at most what was pushed; after an error the
/// decoder is poisoned (the stream cannot be resynchronised).
#[derive(Debug)]
pub struct FrameDecoder {
    limits: FrameLimits,
    types: TypeSet,
    buf: BytesMut,
    header: Option<FrameHeader>,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder with the given limits and accepted types.
    pub fn new(limits: FrameLimits, types: TypeSet) -> FrameDecoder {
        FrameDecoder {
            limits,
            types,
            buf: BytesMut::new(),
            header: None,
            failed: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Err(FrameError::Poisoned);
        }
        let r = self.next_inner();
        if r.is_err() {
            self.failed = true;
            self.buf = BytesMut::new();
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<Frame>, FrameError> {
        let h = match self.header {
            Some(h) => h,
            None => {
                if self.buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(&self.buf[..HEADER_LEN]);
                let h = FrameHeader::decode(&raw, &self.limits, &self.types)?;
                self.buf.advance(HEADER_LEN);
                self.header = Some(h);
                h
            }
        };
        let need = h.body_len as usize + h.tail_len as usize;
        if self.buf.len() < need {
            return Ok(None);
        }
        let body = self.buf.split_to(h.body_len as usize).freeze();
        let tail = self.buf.split_to(h.tail_len as usize).freeze();
        self.header = None;
        Ok(Some(Frame {
            msg_type: h.msg_type,
            flags: h.flags,
            body,
            tail,
        }))
    }

    /// Declares the end of input: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        let missing = match self.header {
            Some(h) => {
                (h.body_len as u64 + h.tail_len as u64).saturating_sub(self.buf.len() as u64)
            }
            None if self.buf.is_empty() => return Ok(()),
            None => (HEADER_LEN - self.buf.len()) as u64,
        };
        if missing == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated { missing })
        }
    }

    /// Bytes buffered and not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u64,
    }
    impl WireMessage for Ping {
        const TYPE: u16 = 0x0F01;
    }

    #[test]
    fn header_layout() {
        let h = FrameHeader {
            msg_type: 0x0102,
            flags: 3,
            body_len: 5,
            tail_len: 7,
        };
        let b = h.encode();
        assert_eq!(b, [0xED, 1, 1, 2, 0, 3, 0, 0, 0, 5, 0, 0, 0, 7]);
        assert_eq!(
            FrameHeader::decode(&b, &FrameLimits::default(), &TypeSet::all()).unwrap(),
            h
        );
    }

    #[test]
    fn typed_round_trip() {
        let f = Frame::from_message(&Ping { n: 42 }, Bytes::from_static(b"raw")).unwrap();
        let bytes = f.encode(&FrameLimits::default()).unwrap();
        let mut d = FrameDecoder::new(FrameLimits::default(), TypeSet::single(Ping::TYPE));
        d.push(&bytes);
        let g = d.next_frame().unwrap().unwrap();
        assert_eq!(g.decode::<Ping>().unwrap(), Ping { n: 42 });
        assert_eq!(&g.tail[..], b"raw");
        d.finish().unwrap();
    }

    #[test]
    fn unknown_type_and_wrong_type() {
        let f = Frame::from_message(&Ping { n: 1 }, Bytes::new()).unwrap();
        let bytes = f.encode(&FrameLimits::default()).unwrap();
        let mut d = FrameDecoder::new(FrameLimits::default(), TypeSet::single(7));
        d.push(&bytes);
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::UnknownType(0x0F01))
        ));
        let other = Frame { msg_type: 9, ..f };
        assert!(matches!(
            other.decode::<Ping>(),
            Err(FrameError::UnexpectedType {
                expected: 0x0F01,
                got: 9
            })
        ));
    }

    #[test]
    fn lying_lengths_are_refused_before_buffering() {
        let limits = FrameLimits {
            max_body: 100,
            max_tail: 1000,
        };
        let h = FrameHeader {
            msg_type: 1,
            flags: 0,
            body_len: u32::MAX,
            tail_len: 0,
        }
        .encode();
        assert!(matches!(
            FrameHeader::decode(&h, &limits, &TypeSet::all()),
            Err(FrameError::BodyTooLarge {
                len: 4294967295,
                max: 100
            })
        ));
        let h = FrameHeader {
            msg_type: 1,
            flags: 0,
            body_len: 0,
            tail_len: 1001,
        }
        .encode();
        assert!(matches!(
            FrameHeader::decode(&h, &limits, &TypeSet::all()),
            Err(FrameError::TailTooLarge { .. })
        ));
    }

    #[test]
    fn oversized_frames_are_not_encoded() {
        let limits = FrameLimits {
            max_body: 4,
            max_tail: 4,
        };
        let f = Frame {
            msg_type: 1,
            flags: 0,
            body: Bytes::from_static(b"12345"),
            tail: Bytes::new(),
        };
        assert!(matches!(
            f.encode(&limits),
            Err(FrameError::BodyTooLarge { .. })
        ));
    }
}
