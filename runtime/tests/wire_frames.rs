//! Property tests of the pure frame format: round trips under arbitrary chunking, garbage,
//! truncated and oversized input.

use bytes::Bytes;
use edgeray_runtime::wire::{
    Frame, FrameDecoder, FrameError, FrameHeader, FrameLimits, HEADER_LEN, TypeSet, WireMessage,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Msg {
    id: u64,
    name: String,
    values: Vec<i32>,
    opt: Option<(u8, bool)>,
}

impl WireMessage for Msg {
    const TYPE: u16 = 0x0301;
}

fn limits() -> FrameLimits {
    FrameLimits {
        max_body: 4096,
        max_tail: 8192,
    }
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        0x0300u16..0x0310,
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(t, flags, body, tail)| Frame {
            msg_type: t,
            flags,
            body: Bytes::from(body),
            tail: Bytes::from(tail),
        })
}

fn arb_msg() -> impl Strategy<Value = Msg> {
    (
        any::<u64>(),
        ".{0,40}",
        proptest::collection::vec(any::<i32>(), 0..50),
        any::<Option<(u8, bool)>>(),
    )
        .prop_map(|(id, name, values, opt)| Msg {
            id,
            name,
            values,
            opt,
        })
}

fn feed(dec: &mut FrameDecoder, bytes: &[u8], chunk: usize) -> Result<Vec<Frame>, FrameError> {
    let mut out = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        dec.push(c);
        while let Some(f) = dec.next_frame()? {
            out.push(f);
        }
        assert!(dec.buffered() <= bytes.len());
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn frames_round_trip_under_any_chunking(frames in proptest::collection::vec(arb_frame(), 0..8), chunk in 1usize..200) {
        let mut stream = Vec::new();
        for f in &frames {
            stream.extend(f.encode(&limits()).unwrap());
        }
        let mut dec = FrameDecoder::new(limits(), TypeSet::new([0x0300..=0x030F]));
        let got = feed(&mut dec, &stream, chunk).unwrap();
        prop_assert_eq!(got, frames);
        prop_assert!(dec.finish().is_ok());
    }

    #[test]
    fn typed_messages_round_trip(m in arb_msg(), tail in proptest::collection::vec(any::<u8>(), 0..100)) {
        let f = Frame::from_message(&m, Bytes::from(tail.clone())).unwrap();
        let bytes = f.encode(&FrameLimits::default()).unwrap();
        let mut dec = FrameDecoder::new(FrameLimits::default(), TypeSet::single(Msg::TYPE));
        dec.push(&bytes);
        let g = dec.next_frame().unwrap().unwrap();
        prop_assert_eq!(g.decode::<Msg>().unwrap(), m);
        prop_assert_eq!(&g.tail[..], &tail[..]);
    }

    #[test]
    fn garbage_never_panics_and_never_overbuffers(garbage in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
        let mut dec = FrameDecoder::new(limits(), TypeSet::all());
        // Either an error, or frames whose sizes are within the limits.
        if let Ok(frames) = feed(&mut dec, &garbage, chunk) {
            for f in frames {
                prop_assert!(f.body.len() <= 4096 && f.tail.len() <= 8192);
            }
        }
        prop_assert!(dec.buffered() <= garbage.len());
    }

    #[test]
    fn garbage_bodies_do_not_decode_as_messages(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let f = Frame { msg_type: Msg::TYPE, flags: 0, body: Bytes::from(body), tail: Bytes::new() };
        // Must not panic; either a valid Msg (whose re-encoding is the same bytes) or an error.
        if let Ok(m) = f.decode::<Msg>() {
            let again = Frame::from_message(&m, Bytes::new()).unwrap();
            prop_assert_eq!(again.body, f.body);
        }
    }

    #[test]
    fn truncated_input_is_reported(f in arb_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = f.encode(&limits()).unwrap();
        let at = cut.index(bytes.len()); // < len: strictly truncated
        let mut dec = FrameDecoder::new(limits(), TypeSet::all());
        dec.push(&bytes[..at]);
        prop_assert!(dec.next_frame().unwrap().is_none());
        let truncated = matches!(dec.finish(), Err(FrameError::Truncated { .. }));
        prop_assert!(truncated || at == 0);
    }

    #[test]
    fn oversized_lengths_are_refused_from_the_header_alone(body_len in 4097u32.., tail_len in 8193u32.., which in 0u8..2) {
        let (b, t) = if which == 0 { (body_len, 0) } else { (0, tail_len) };
        let h = FrameHeader { msg_type: 0x0300, flags: 0, body_len: b, tail_len: t }.encode();
        let mut dec = FrameDecoder::new(limits(), TypeSet::all());
        dec.push(&h);
        let err = dec.next_frame().unwrap_err();
        let ok = matches!(err, FrameError::BodyTooLarge { .. } | FrameError::TailTooLarge { .. });
        prop_assert!(ok);
        prop_assert!(dec.buffered() == 0, "nothing kept after the error");
    }

    #[test]
    fn unknown_types_are_rejected_not_misdecoded(t in any::<u16>()) {
        prop_assume!(!(0x0300..=0x030F).contains(&t));
        let f = Frame { msg_type: t, flags: 0, body: Bytes::new(), tail: Bytes::new() };
        let mut dec = FrameDecoder::new(limits(), TypeSet::new([0x0300..=0x030F]));
        dec.push(&f.encode(&limits()).unwrap());
        let unknown = matches!(dec.next_frame(), Err(FrameError::UnknownType(x)) if x == t);
        prop_assert!(unknown);
    }
}

#[test]
fn bad_magic_and_version() {
    let mut h = FrameHeader {
        msg_type: 0x0300,
        flags: 0,
        body_len: 0,
        tail_len: 0,
    }
    .encode();
    h[0] = 0x00;
    let mut dec = FrameDecoder::new(limits(), TypeSet::all());
    dec.push(&h);
    assert!(matches!(dec.next_frame(), Err(FrameError::BadMagic(0))));
    let mut h = FrameHeader {
        msg_type: 0x0300,
        flags: 0,
        body_len: 0,
        tail_len: 0,
    }
    .encode();
    h[1] = 9;
    let mut dec = FrameDecoder::new(limits(), TypeSet::all());
    dec.push(&h);
    assert!(matches!(dec.next_frame(), Err(FrameError::BadVersion(9))));
    assert_eq!(HEADER_LEN, 14);
}
