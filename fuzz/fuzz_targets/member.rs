//! What one member sends another's actors, decoded and checked as the receiving actor does:
//! a stage's messages (a `Forward`'s hidden-state tail, its sequence start's sampling settings
//! and output format; a tensor-parallel piece's f32 tail), a sink's messages, the weight
//! receiver's messages (the shard hashes it would turn into file names), and a stage's spawn
//! arguments.
//!
//! Input: byte 0 picks the message kind, bytes 1–2 the body length (little endian); the body
//! follows, the rest is the raw tail.
#![no_main]

use edgeray::pipeline::protocol::hidden::{decode_f32, decode_hidden};
use edgeray::pipeline::protocol::{SinkMsg, StageArgs, StageMsg};
use edgeray::pipeline::stage::{StageClaim, WeightsMsg, check_claim, validate_hash};
use edgeray_model::sampling::Sampler;
use edgeray_model::sampling::constraint::OutputFormat;
use edgeray_runtime::codec;
use libfuzzer_sys::fuzz_target;

/// The hidden size the decoded tails are checked against (any fixed value exercises the
/// length arithmetic; the stage uses its model's).
const D_MODEL: usize = 64;

fn stage(body: &[u8], tail: &[u8]) {
    let Ok(msg) = codec::decode::<StageMsg>(body) else {
        return;
    };
    match msg {
        StageMsg::Forward(f) => {
            let _ = decode_hidden(tail, f.n as usize, D_MODEL, f.dtype);
            if let Some(start) = f.start {
                let _ = Sampler::new(start.sampling);
                if let Some(c) = start.constraint
                    && let Ok(format) = OutputFormat::from_wire(&c)
                {
                    let _ = format.check();
                }
            }
        }
        StageMsg::TpPiece(p) => {
            if let Ok(v) = decode_f32(tail) {
                assert_eq!(v.len() * 4, tail.len());
            }
            let _ = (p.cols_start, p.cols_end, p.width);
        }
        _ => {}
    }
}

fn weights(body: &[u8]) {
    let Ok(msg) = codec::decode::<WeightsMsg>(body) else {
        return;
    };
    let hash = match &msg {
        WeightsMsg::Offer { hash, .. }
        | WeightsMsg::Chunk { hash, .. }
        | WeightsMsg::Finish { hash, .. } => hash,
    };
    // A hash that passes names a file in the shard folder: it must stay a plain name.
    if validate_hash(hash).is_ok() {
        assert!(!hash.contains('/') && !hash.contains("..") && !hash.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let [kind, l0, l1, rest @ ..] = data else {
        return;
    };
    let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
    let (body, tail) = rest.split_at(len);
    match kind % 4 {
        0 => stage(body, tail),
        1 => drop(codec::decode::<SinkMsg>(body)),
        2 => weights(body),
        _ => {
            // Spawn arguments: what they claim from the board is checked before anything loads.
            if let Ok(a) = codec::decode::<StageArgs>(body) {
                let claim = StageClaim {
                    ctx: a.ctx,
                    sequences: a.max_sequences,
                    kv_bytes_per_position: (a.layers.len() as u64).saturating_mul(4096),
                };
                let _ = check_claim(claim, 32_768, Some(8 << 30));
            }
        }
    }
});
