//! The `member` fuzz target's seed corpus (`fuzz/corpus/member/`) is what edgeray's codec
//! writes for a few valid member messages: a stage `Forward` with an f32 and an f16 hidden-state
//! tail and a sequence start (greedy sampling, a JSON-schema output format), a sink token and a
//! shard offer. The test fails when the wire format changes under the committed seeds;
//! `EDGERAY_WRITE_SEEDS=1` rewrites them.

use edgeray::pipeline::protocol::{Forward, SeqStart, SinkMsg, StageMsg, WireDtype};
use edgeray::pipeline::stage::WeightsMsg;
use edgeray_model::sampling::SamplingParams;
use edgeray_runtime::codec;

/// One seed: byte 0 the kind (0 stage, 1 sink, 2 weights, 3 spawn arguments), bytes 1–2 the
/// body length, then the body and the raw tail — the layout the target reads.
fn seed(kind: u8, body: Vec<u8>, tail: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&(body.len() as u16).to_le_bytes());
    v.extend_from_slice(&body);
    v.extend_from_slice(tail);
    v
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let start = SeqStart {
        sampling: SamplingParams::greedy(),
        prompt: vec![1, 2, 3],
        logprobs: Some(2),
        score_prompt: false,
        generated: 0,
        embed: false,
        constraint: Some(
            r#"{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"integer"}}},"strict":true}"#
                .into(),
        ),
    };
    let forward = Forward {
        seq: 7,
        pos: 0,
        n: 2,
        tokens: vec![],
        dtype: WireDtype::F32,
        start: Some(start),
        sample: true,
        sent_at_us: 1,
        hops: vec![],
    };
    let tail: Vec<u8> = (0..2 * 64)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let f16 = Forward {
        dtype: WireDtype::F16,
        start: None,
        ..forward.clone()
    };
    let enc = |m: &StageMsg| codec::encode(m).unwrap();
    vec![
        (
            "forward-f32",
            seed(0, enc(&StageMsg::Forward(forward)), &tail),
        ),
        (
            "forward-f16",
            seed(0, enc(&StageMsg::Forward(f16)), &tail[..2 * 64 * 2]),
        ),
        (
            "sink-token",
            seed(
                1,
                codec::encode(&SinkMsg::Token {
                    seq: 7,
                    pos: 3,
                    token: 42,
                    top2_gap: 0.5,
                    logprobs: None,
                    hops: vec![],
                })
                .unwrap(),
                &[],
            ),
        ),
        (
            "weights-offer",
            seed(
                2,
                codec::encode(&WeightsMsg::Offer {
                    hash: "ab".repeat(32),
                    len: 10,
                    chunk: 4,
                })
                .unwrap(),
                &[],
            ),
        ),
    ]
}

#[test]
fn the_member_fuzz_seeds_are_what_the_codec_writes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/member");
    let write = std::env::var("EDGERAY_WRITE_SEEDS").is_ok_and(|v| v == "1");
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (EDGERAY_WRITE_SEEDS=1 writes it)", path.display())
        });
        assert_eq!(
            committed, bytes,
            "{name}: the wire format changed; rewrite the seeds with EDGERAY_WRITE_SEEDS=1"
        );
    }
}
