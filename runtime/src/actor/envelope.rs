//! Message envelopes: a typed (serde) message plus an optional raw byte tail, and the node the
//! runtime received it from.

use bytes::Bytes;

use crate::identity::NodeId;

/// A message for an actor: a typed part that goes through the codec and a raw byte `tail`
/// (e.g. tensor data) that is carried as-is, bypassing serde.
///
/// An envelope delivered to a handler also says which node sent it ([`Envelope::sender`]): the
/// runtime fills that in from the authenticated connection the message arrived on, so a sender
/// cannot claim to be another node. Envelopes built by the sender never carry one.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<M> {
    /// The typed message.
    pub msg: M,
    /// Raw bytes sent after the encoded message without serialization (may be empty).
    pub tail: Bytes,
    /// The peer node the message arrived from; `None` when it was sent in this process.
    sender: Option<NodeId>,
}

impl<M> Envelope<M> {
    /// An envelope without a tail.
    pub fn new(msg: M) -> Self {
        Envelope {
            msg,
            tail: Bytes::new(),
            sender: None,
        }
    }

    /// An envelope with a raw byte tail.
    pub fn with_tail(msg: M, tail: impl Into<Bytes>) -> Self {
        Envelope {
            msg,
            tail: tail.into(),
            sender: None,
        }
    }

    /// An envelope received from the authenticated peer `node` (set by the runtime only).
    pub(crate) fn from_peer(msg: M, tail: Bytes, node: NodeId) -> Self {
        Envelope {
            msg,
            tail,
            sender: Some(node),
        }
    }

    /// The node that sent this message, as the runtime authenticated it: the peer whose
    /// connection (mutual TLS, certificate pinned to its node id) the message arrived on.
    /// `None` for a message sent from this process (by one of this node's own actors or
    /// tasks); see [`Envelope::sent_by`] to resolve that to this node's id.
    pub fn sender(&self) -> Option<NodeId> {
        self.sender
    }

    /// The sending node, with a message from this process counted as sent by `this_node`.
    pub fn sent_by(&self, this_node: NodeId) -> NodeId {
        self.sender.unwrap_or(this_node)
    }

    /// Maps the typed message with a fallible function, keeping the tail and the sender.
    pub fn try_map<N, E>(self, f: impl FnOnce(M) -> Result<N, E>) -> Result<Envelope<N>, E> {
        Ok(Envelope {
            msg: f(self.msg)?,
            tail: self.tail,
            sender: self.sender,
        })
    }

    /// Splits the envelope into its message and tail (the sender is dropped).
    pub fn into_parts(self) -> (M, Bytes) {
        (self.msg, self.tail)
    }

    /// Maps the typed message, keeping the tail and the sender.
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> Envelope<N> {
        Envelope {
            msg: f(self.msg),
            tail: self.tail,
            sender: self.sender,
        }
    }
}

impl<M> From<M> for Envelope<M> {
    fn from(msg: M) -> Self {
        Envelope::new(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_runtime_sets_a_sender_and_map_keeps_it() {
        let here = NodeId([1; 32]);
        let peer = NodeId([2; 32]);
        let e = Envelope::with_tail(5u8, Bytes::from_static(b"t"));
        assert_eq!(e.sender(), None);
        assert_eq!(e.sent_by(here), here);
        let e = Envelope::from_peer(5u8, Bytes::new(), peer).map(|m| m as u32 + 1);
        assert_eq!(e.sender(), Some(peer));
        assert_eq!(e.sent_by(here), peer);
        assert_eq!(e.msg, 6);
    }
}
