//! Stage / layer-range tests on tiny random-weight models written with `GgufWriter`.

use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use half::f16;

use super::*;
use crate::gguf::{GgufFile, GgufWriter};
use crate::quant::{GgmlType, KernelPool};

const D: usize = 64;
const FF: usize = 96;
const HEADS: usize = 2;
const KV: usize = 1;
const HD: usize = 32;
const VOCAB: usize = 40;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    }
}

/// Q8_0 blocks of random values: `rows` rows of `cols`.
fn q8_0(rng: &mut Rng, rows: usize, cols: usize, amp: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rows * cols / 32 {
        let d = amp / 127.0;
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for _ in 0..32 {
            out.push(((rng.next() * 127.0).round() as i8) as u8);
        }
    }
    out
}

fn model(arch: &str, n_layers: usize, window: u32) -> GgufFile {
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ n_layers as u64);
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", arch);
    let k = |s: &str| format!("{arch}.{s}");
    w.set_metadata(k("block_count"), n_layers as u32);
    w.set_metadata(k("embedding_length"), D as u32);
    w.set_metadata(k("feed_forward_length"), FF as u32);
    w.set_metadata(k("attention.head_count"), HEADS as u32);
    w.set_metadata(k("attention.head_count_kv"), KV as u32);
    w.set_metadata(k("attention.key_length"), HD as u32);
    w.set_metadata(k("context_length"), 128u32);
    w.set_metadata(k("rope.freq_base"), 10000.0f32);
    w.set_metadata(k("attention.layer_norm_rms_epsilon"), 1e-6f32);
    let gemma = arch == "gemma3";
    if gemma {
        w.set_metadata(k("attention.sliding_window"), window);
    }
    let mut mat = |w: &mut GgufWriter, name: &str, rows: usize, cols: usize| {
        let data = q8_0(&mut rng, rows, cols, 0.5);
        w.add_tensor(name, &[cols as u64, rows as u64], GgmlType::Q8_0, data)
            .unwrap();
    };
    mat(&mut w, "token_embd.weight", VOCAB, D);
    for il in 0..n_layers {
        let p = |s: &str| format!("blk.{il}.{s}");
        mat(&mut w, &p("attn_q.weight"), HEADS * HD, D);
        mat(&mut w, &p("attn_k.weight"), KV * HD, D);
        mat(&mut w, &p("attn_v.weight"), KV * HD, D);
        mat(&mut w, &p("attn_output.weight"), D, HEADS * HD);
        mat(&mut w, &p("ffn_gate.weight"), FF, D);
        mat(&mut w, &p("ffn_up.weight"), FF, D);
        mat(&mut w, &p("ffn_down.weight"), D, FF);
        let ones = |n: usize, s: f32| {
            (0..n)
                .map(|i| 1.0 + s * (i as f32 * 0.37).sin())
                .collect::<Vec<_>>()
        };
        w.add_f32_tensor(p("attn_norm.weight"), &[D as u64], &ones(D, 0.1))
            .unwrap();
        w.add_f32_tensor(p("ffn_norm.weight"), &[D as u64], &ones(D, 0.2))
            .unwrap();
        if gemma {
            w.add_f32_tensor(p("attn_q_norm.weight"), &[HD as u64], &ones(HD, 0.3))
                .unwrap();
            w.add_f32_tensor(p("attn_k_norm.weight"), &[HD as u64], &ones(HD, 0.3))
                .unwrap();
            w.add_f32_tensor(p("post_attention_norm.weight"), &[D as u64], &ones(D, 0.1))
                .unwrap();
            w.add_f32_tensor(p("post_ffw_norm.weight"), &[D as u64], &ones(D, 0.1))
                .unwrap();
        } else {
            let b = |n: usize| (0..n).map(|i| 0.05 * (i as f32).cos()).collect::<Vec<_>>();
            w.add_f32_tensor(p("attn_q.bias"), &[(HEADS * HD) as u64], &b(HEADS * HD))
                .unwrap();
            w.add_f32_tensor(p("attn_k.bias"), &[(KV * HD) as u64], &b(KV * HD))
                .unwrap();
            w.add_f32_tensor(p("attn_v.bias"), &[(KV * HD) as u64], &b(KV * HD))
                .unwrap();
        }
    }
    w.add_f32_tensor("output_norm.weight", &[D as u64], &vec![1.0; D])
        .unwrap();
    if !gemma {
        mat(&mut w, "output.weight", VOCAB, D);
    }
    GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
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
