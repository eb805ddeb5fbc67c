//! Message envelopes: a typed (serde) message plus an optional raw byte tail.

use bytes::Bytes;

/// A message for an actor: a typed part that goes through the codec and a raw byte `tail`
/// (e.g. tensor data) that is carried as-is, bypassing serde.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<M> {
    /// The typed message.
    pub msg: M,
    /// Raw bytes sent after the encoded message without serialization (may be empty).
    pub tail: Bytes,
}

impl<M> Envelope<M> {
    /// An envelope without a tail.
    pub fn new(msg: M) -> Self {
        Envelope {
            msg,
            tail: Bytes::new(),
        }
    }

    /// An envelope with a raw byte tail.
    pub fn with_tail(msg: M, tail: impl Into<Bytes>) -> Self {
        Envelope {
            msg,
            tail: tail.into(),
        }
    }

    /// Maps the typed message, keeping the tail.
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> Envelope<N> {
        Envelope {
            msg: f(self.msg),
            tail: self.tail,
        }
    }
}

impl<M> From<M> for Envelope<M> {
    fn from(msg: M) -> Self {
        Envelope::new(msg)
    }
}
