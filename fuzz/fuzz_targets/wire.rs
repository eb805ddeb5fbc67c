//! The wire frame decoder over an arbitrary byte stream, fed in arbitrary chunk sizes, with
//! every frame body decoded as the control message its type names.
//!
//! Input: byte 0 picks the chunk size (1..=256), byte 1 picks tight or default limits; the
//! rest is the stream.
#![no_main]

use edgeray_runtime::codec;
use edgeray_runtime::identity::NodeId;
use edgeray_runtime::node::messages::{
    Goodbye, Gossip, Heartbeat, Join, StatusReply, StatusRequest,
};
use edgeray_runtime::protocol::{self, Hello, HelloReply, StreamOpen};
use edgeray_runtime::security::ClusterId;
use edgeray_runtime::wire::{Frame, FrameDecoder, FrameError, FrameLimits, TypeSet, WireMessage};
use libfuzzer_sys::fuzz_target;

fn body<M: WireMessage>(f: &Frame) -> Option<M> {
    f.decode::<M>().ok()
}

/// Decodes the body as the message its type names; a Hello is also checked as the acceptor
/// would check it.
fn decode_body(f: &Frame) {
    match f.msg_type {
        Hello::TYPE => {
            if let Some(h) = body::<Hello>(f) {
                let _ = protocol::check_hello(
                    &h,
                    h.node_id,
                    &[ClusterId([7; 32])],
                    NodeId([9; 32]),
                    protocol::SUPPORTED_VERSIONS,
                );
            }
        }
        HelloReply::TYPE => drop(body::<HelloReply>(f)),
        StreamOpen::TYPE => drop(body::<StreamOpen>(f)),
        Join::TYPE => drop(body::<Join>(f)),
        Heartbeat::TYPE => drop(body::<Heartbeat>(f)),
        Gossip::TYPE => drop(body::<Gossip>(f)),
        Goodbye::TYPE => drop(body::<Goodbye>(f)),
        StatusRequest::TYPE => drop(body::<StatusRequest>(f)),
        StatusReply::TYPE => drop(body::<StatusReply>(f)),
        _ => drop(codec::decode::<(u64, String)>(&f.body)),
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk, mode, stream @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk) + 1;
    let limits = if mode & 1 == 0 {
        FrameLimits::default()
    } else {
        FrameLimits {
            max_body: 64,
            max_tail: 64,
        }
    };
    let types = if mode & 2 == 0 {
        TypeSet::all()
    } else {
        TypeSet::new([protocol::TRANSPORT_TYPES, protocol::MEMBERSHIP_TYPES])
    };
    let mut dec = FrameDecoder::new(limits, types.clone());
    let mut frames = Vec::new();
    let mut failed = false;
    'feed: for piece in stream.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    assert!(!matches!(e, FrameError::Poisoned));
                    // A poisoned decoder keeps refusing and holds no bytes.
                    assert!(matches!(dec.next_frame(), Err(FrameError::Poisoned)));
                    assert_eq!(dec.buffered(), 0);
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    if !failed {
        let _ = dec.finish();
    }
    let mut consumed = 0usize;
    for f in &frames {
        let h = f
            .header(&limits)
            .expect("a decoded frame is within the limits");
        assert!(types.contains(h.msg_type));
        decode_body(f);
        // Re-encoding a decoded frame gives back exactly the bytes it was read from.
        let bytes = f.encode(&limits).expect("re-encodes");
        assert_eq!(&stream[consumed..consumed + bytes.len()], &bytes[..]);
        consumed += bytes.len();
        let mut again = FrameDecoder::new(limits, types.clone());
        again.push(&bytes);
        assert_eq!(again.next_frame().unwrap().as_ref(), Some(f));
    }
});
