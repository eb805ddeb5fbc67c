//! Stage / layer-range tests on tiny random-weight models written with `GgufWriter`.

use std::sync::Arc;

use burn::tensor::{Device, Tensor};

use super::*;
use crate::gguf::{GgufFile, GgufWriter};
use crate::quant::KernelPool;
use crate::test_models::RandomModel;

const D: usize = 64;
const FF: usize = 96;
const HEADS: usize = 2;
const KV: usize = 1;
const HD: usize = 32;
const VOCAB: usize = 40;

fn model(arch: &'static str, n_layers: usize, window: u32) -> GgufFile {
    RandomModel {
        arch,
        n_layers,
        d_model: D,
        ffn: FF,
        heads: HEADS,
        kv_heads: KV,
        head_dim: HD,
        vocab: VOCAB,
        ctx: 128,
        window,
        mixed_types: false,
        scale: 0.4,
        seed: 0x1234_5678_9abc_def1 ^ n_layers as u64,
        tokenizer: false,
    }
    .file()
}

fn pool() -> Arc<KernelPool> {
    Arc::new(KernelPool::single())
}

fn logits(out: StageOutput) -> Vec<f32> {
    match out {
        StageOutput::Logits(l) => l.into_data().try_into_vec().unwrap(),
        StageOutput::Hidden(_) => panic!("expected logits"),
    }
}

fn hidden(out: StageOutput) -> Tensor<2> {
    match out {
        StageOutput::Hidden(h) => h,
        StageOutput::Logits(_) => panic!("expected hidden states"),
    }
}

const TOKENS: [u32; 7] = [1, 5, 9, 3, 17, 2, 30];

#[test]
fn two_stages_equal_one_full_stage() {
    for arch in ["qwen2", "gemma3", "llama"] {
        let n = 4;
        let f = model(arch, n, 3);
        let dev = Device::flex();
        let full = Stage::load(&f, &StageSpec::full(n), &dev, &pool()).unwrap();
        let a = Stage::load(&f, &StageSpec::for_range(0..1, n), &dev, &pool()).unwrap();
        let b = Stage::load(&f, &StageSpec::for_range(1..n, n), &dev, &pool()).unwrap();
        assert!(a.embed.is_some() && a.output.is_none() && b.embed.is_none() && b.output.is_some());
        let (mut cf, mut ca, mut cb) = (full.new_cache(64), a.new_cache(64), b.new_cache(64));
        // Prefill then two decode steps; each step compared exactly.
        let steps: [&[u32]; 3] = [&TOKENS, &[4], &[11]];
        for toks in steps {
            let want = logits(
                full.forward(StageInput::Tokens(toks.to_vec()), &mut cf, LogitsFor::Last)
                    .unwrap(),
            );
            let h = hidden(
                a.forward(StageInput::Tokens(toks.to_vec()), &mut ca, LogitsFor::Last)
                    .unwrap(),
            );
            // Through the wire format, as a pipeline would send it.
            let (v, [rows, d]) = hidden_to_vec(h).unwrap();
            let h = hidden_from_vec(v, rows, d, &dev).unwrap();
            let got = logits(
                b.forward(StageInput::Hidden(h), &mut cb, LogitsFor::Last)
                    .unwrap(),
            );
            assert_eq!(got.len(), VOCAB);
            assert_eq!(got, want, "{arch}: split stages differ from the full model");
            assert!(got.iter().all(|v| v.is_finite()));
        }
        assert_eq!((cf.len(), ca.len(), cb.len()), (9, 9, 9));
    }
}

#[test]
fn batched_prefill_matches_token_by_token() {
    // gemma3 with window 3 exercises the sliding-window mask in both paths.
    for arch in ["qwen2", "gemma3"] {
        let n = 6;
        let f = model(arch, n, 3);
        let dev = Device::flex();
        let s = Stage::load(&f, &StageSpec::full(n), &dev, &pool()).unwrap();
        let mut c1 = s.new_cache(32);
        let all = logits(
            s.forward(StageInput::Tokens(TOKENS.to_vec()), &mut c1, LogitsFor::All)
                .unwrap(),
        );
        assert_eq!(all.len(), TOKENS.len() * VOCAB);
        let mut c2 = s.new_cache(32);
        for (i, &t) in TOKENS.iter().enumerate() {
            let one = logits(
                s.forward(StageInput::Tokens(vec![t]), &mut c2, LogitsFor::Last)
                    .unwrap(),
            );
            let row = &all[i * VOCAB..(i + 1) * VOCAB];
            let diff = one
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-3, "{arch} position {i}: max diff {diff}");
        }
    }
}

#[test]
fn sliding_window_changes_gemma_outputs_beyond_the_window() {
    let dev = Device::flex();
    let run = |window: u32| {
        let f = model("gemma3", 2, window);
        let s = Stage::load(&f, &StageSpec::full(2), &dev, &pool()).unwrap();
        let mut c = s.new_cache(32);
        logits(
            s.forward(StageInput::Tokens(TOKENS.to_vec()), &mut c, LogitsFor::All)
                .unwrap(),
        )
    };
    let (narrow, wide) = (run(2), run(64));
    // Positions 0 and 1 see at most 2 keys: identical; later positions differ.
    assert_eq!(narrow[..2 * VOCAB], wide[..2 * VOCAB]);
    assert_ne!(narrow[6 * VOCAB..], wide[6 * VOCAB..]);
}

#[test]
fn config_reads_metadata_and_gemma_pattern() {
    let f = model("gemma3", 7, 512);
    let c = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!(
        (c.n_layers, c.d_model, c.n_head, c.n_kv_head, c.head_dim),
        (7, D, HEADS, KV, HD)
    );
    assert!(c.tied_output);
    assert_eq!(c.embed_scale, Some((D as f32).sqrt()));
    let locals: Vec<bool> = (0..7).map(|i| c.is_local(i)).collect();
    assert_eq!(locals, [true, true, true, true, true, false, true]);
    assert_eq!(c.layer(0).rope.base, 10_000.0);
    assert_eq!(c.layer(5).window, None);
    let q = ModelConfig::from_gguf(&model("qwen2", 2, 0)).unwrap();
    assert!(!q.tied_output);
    assert_eq!(q.rope_style, RopeStyle::Neox);
    assert_eq!(q.sliding_window, None);
}

#[test]
fn bad_inputs_are_errors() {
    let f = model("qwen2", 2, 0);
    let dev = Device::flex();
    let r = Stage::load(
        &f,
        &StageSpec {
            layers: 1..3,
            embed: false,
            head: true,
        },
        &dev,
        &pool(),
    );
    assert!(matches!(r, Err(ArchError::BadLayerRange { .. })));
    let s = Stage::load(&f, &StageSpec::full(2), &dev, &pool()).unwrap();
    let mut c = s.new_cache(4);
    let h = Tensor::<2>::zeros([1, D], &dev);
    assert!(matches!(
        s.forward(StageInput::Hidden(h), &mut c, LogitsFor::Last),
        Err(ArchError::BadInput(_))
    ));
    assert!(matches!(
        s.forward(
            StageInput::Tokens(vec![VOCAB as u32]),
            &mut c,
            LogitsFor::Last
        ),
        Err(ArchError::BadInput(_))
    ));
    assert!(matches!(
        s.forward(StageInput::Tokens(vec![]), &mut c, LogitsFor::Last),
        Err(ArchError::BadInput(_))
    ));
    assert!(matches!(
        s.forward(StageInput::Tokens(vec![1; 5]), &mut c, LogitsFor::Last),
        Err(ArchError::ContextFull { .. })
    ));
    let mut other = KvCache::new(1, 4);
    assert!(matches!(
        s.forward(StageInput::Tokens(vec![1]), &mut other, LogitsFor::Last),
        Err(ArchError::CacheMismatch { .. })
    ));

    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", "mamba");
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert!(
        matches!(ModelConfig::from_gguf(&f), Err(ArchError::UnsupportedArch(a)) if a == "mamba")
    );
}

#[test]
fn stage_loads_from_a_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, model("qwen2", 2, 0).raw_bytes().as_slice()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let s = Stage::load(&f, &StageSpec::for_range(0..2, 2), &Device::flex(), &pool()).unwrap();
    assert_eq!(s.blocks.len(), 2);
    assert!(s.weight_bytes() > 0);
}
