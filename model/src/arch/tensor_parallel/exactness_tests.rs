//! The signature property: a group's outputs are bit-identical to one node's, for every group
//! size and uneven split, prefill and decode; plus the kernel property it rests on.

use std::sync::Arc;

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::test_model::{D, HEADS, VOCAB, random_model, random_rows};
use super::*;
use crate::arch::{LogitsFor, Stage, StageInput, StageOutput, StageSpec};
use crate::quant::{GgmlType, KernelPool, QuantMatrix, matmul};

fn pool() -> Arc<KernelPool> {
    Arc::new(KernelPool::single())
}

fn values(o: StageOutput) -> Vec<f32> {
    match o {
        StageOutput::Logits(t) | StageOutput::Hidden(t) => t.into_data().try_into_vec().unwrap(),
    }
}

/// Rows `a..b` of a matrix give exactly the same products as the same rows of the whole
/// matrix, for every type and token count (decode, short and tiled batches): the kernels never
/// let one row's result depend on which other rows are computed with it.
#[test]
fn row_slices_of_a_matrix_give_the_same_products() {
    let mut rng = StdRng::seed_from_u64(7);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let (rows, cols) = (45, 512);
        let data = random_rows(ty, rows, cols, 1.0, &mut rng);
        let w = QuantMatrix::new(ty, rows, cols, data).unwrap();
        for &n in &[1usize, 3, 70] {
            let x: Vec<f32> = (0..n * cols)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let p = KernelPool::new(2).unwrap();
            let mut full = vec![0f32; n * rows];
            matmul(&w, &x, n, &mut full, &p).unwrap();
            for _ in 0..12 {
                let a = rng.random_range(0..rows);
                let b = rng.random_range(a + 1..=rows);
                let s = w.slice_rows(a..b).unwrap();
                let mut part = vec![0f32; n * (b - a)];
                matmul(&s, &x, n, &mut part, &p).unwrap();
                for t in 0..n {
                    assert_eq!(
                        part[t * (b - a)..(t + 1) * (b - a)],
                        full[t * rows + a..t * rows + b],
                        "{ty} rows {a}..{b}, {n} tokens"
                    );
                }
            }
        }
    }
}

/// Random speeds for a group of `n` (uneven, some very uneven).
fn random_speeds(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(0.2f64..5.0)).collect()
}

/// Prefill (tiled attention path: ≥ 32 tokens; then the short path: 7 tokens), then decode
/// steps: the group's logits equal the single node's bit for bit.
fn check_group(arch: &'static str, kv: usize, speeds: &[f64], wo: WoPlacement) {
    let n_layers = 3;
    let f = random_model(arch, n_layers, kv, 0xC0FFEE ^ kv as u64);
    let dev = Device::flex();
    let spec = StageSpec::full(n_layers);
    let one = Stage::load(&f, &spec, &dev, &pool()).unwrap();
    let opts = SliceOptions {
        wo,
        ..SliceOptions::default()
    };
    let group = LocalGroup::load(&f, &spec, speeds, opts, &dev, &pool()).unwrap();
    let mut c1 = one.new_cache(128);
    let mut cg = group.new_caches(128);
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 % VOCAB) as u32).collect();
    let short: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2];
    let steps: Vec<(Vec<u32>, LogitsFor)> = vec![
        (prompt, LogitsFor::All),
        (short, LogitsFor::Tail(3)),
        (vec![11], LogitsFor::Last),
        (vec![12], LogitsFor::Last),
        (vec![199], LogitsFor::Last),
        (vec![0], LogitsFor::Last),
    ];
    for (i, (toks, lf)) in steps.into_iter().enumerate() {
        let want = values(
            one.forward(StageInput::Tokens(toks.clone()), &mut c1, lf)
                .unwrap(),
        );
        let (out, stats) = group
            .forward_with_stats(StageInput::Tokens(toks), &mut cg, lf)
            .unwrap();
        let got = values(out);
        assert!(want.iter().all(|v| v.is_finite()));
        // Not a degenerate model: the logits spread out.
        let (lo, hi) = want
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo > 0.1, "{arch}: logits {lo}..{hi}");
        assert_eq!(
            got, want,
            "{arch} kv={kv} speeds={speeds:?} {wo:?}: step {i} differs from one node"
        );
        let per_layer = if wo == WoPlacement::Replicated { 3 } else { 4 };
        assert_eq!(stats.points.len(), per_layer * n_layers + 1);
    }
    assert!(cg.iter().all(|c| c.len() == c1.len()));
}

#[test]
fn groups_of_2_to_4_equal_one_node() {
    let mut rng = StdRng::seed_from_u64(12);
    for (arch, kv) in [("qwen2", 2), ("gemma3", 1), ("llama", 3)] {
        for n in 2..=4 {
            let even = vec![1.0; n];
            let uneven = random_speeds(n, &mut rng);
            check_group(arch, kv, &even, WoPlacement::Replicated);
            check_group(arch, kv, &uneven, WoPlacement::Replicated);
            check_group(arch, kv, &uneven, WoPlacement::Split);
        }
    }
}

#[test]
fn a_group_of_one_and_of_all_heads_equal_one_node() {
    check_group("qwen2", 2, &[1.0], WoPlacement::Split);
    // As many members as query heads: every member one head.
    let mut rng = StdRng::seed_from_u64(99);
    let speeds = random_speeds(HEADS, &mut rng);
    // 6 members need 6 units of every split: with the ffn rows on ffn_down's activation
    // blocks (Q8_K, 256), its 1024 rows are only 4 blocks.
    let f = random_model("qwen2", 2, 2, 1);
    let spec = StageSpec::full(2);
    let r = LocalGroup::load(
        &f,
        &spec,
        &speeds,
        SliceOptions {
            ffn_on_blocks: true,
            ..SliceOptions::default()
        },
        &Device::flex(),
        &pool(),
    );
    assert!(matches!(
        r,
        Err(TpError::Slice(SliceError::TooManyMembers {
            what: "ffn rows",
            ..
        }))
    ));
}

/// A middle stage (no embedding, no head) split over a group returns the same hidden states.
#[test]
fn middle_stage_group_equals_stage() {
    let f = random_model("gemma3", 4, 1, 5);
    let dev = Device::flex();
    let first = Stage::load(&f, &StageSpec::for_range(0..1, 4), &dev, &pool()).unwrap();
    let mid = StageSpec::for_range(1..3, 4);
    let one = Stage::load(&f, &mid, &dev, &pool()).unwrap();
    let group = LocalGroup::load(
        &f,
        &mid,
        &[2.0, 1.0, 1.5],
        SliceOptions::default(),
        &dev,
        &pool(),
    )
    .unwrap();
    let (mut c0, mut c1, mut cg) = (first.new_cache(64), one.new_cache(64), group.new_caches(64));
    for toks in [vec![1u32, 2, 3, 4, 5, 6, 7, 8, 9], vec![10], vec![11]] {
        let h = match first
            .forward(StageInput::Tokens(toks), &mut c0, LogitsFor::Last)
            .unwrap()
        {
            StageOutput::Hidden(h) => h,
            StageOutput::Logits(_) => panic!("first stage has no head"),
        };
        let want = values(
            one.forward(StageInput::Hidden(h.clone()), &mut c1, LogitsFor::Last)
                .unwrap(),
        );
        let (out, stats) = group
            .forward_with_stats(StageInput::Hidden(h), &mut cg, LogitsFor::Last)
            .unwrap();
        assert_eq!(values(out), want);
        assert_eq!(stats.points.len(), 3 * 2);
        assert!(!stats.points.contains(&SyncPoint::Logits));
    }
}

#[test]
fn members_hold_only_their_slices() {
    let f = random_model("qwen2", 2, 2, 3);
    let dev = Device::flex();
    let spec = StageSpec::full(2);
    let one = Stage::load(&f, &spec, &dev, &pool()).unwrap();
    let split = SliceOptions {
        wo: WoPlacement::Split,
        ..SliceOptions::default()
    };
    let g = LocalGroup::load(&f, &spec, &[1.0, 1.0], split, &dev, &pool()).unwrap();
    let embed = one.embed.as_ref().unwrap().table.n_bytes();
    let bytes = g.weight_bytes();
    // Split attn_output: the slices add up to the whole (K/V rows replicated where shared).
    assert_eq!(bytes.iter().sum::<usize>(), one.weight_bytes() - embed);
    let m = &g.members[1];
    assert_eq!(m.blocks[0].wq.out_features(), 3 * 32);
    assert_eq!(m.blocks[0].wk.out_features(), 32);
    assert_eq!(m.output.as_ref().unwrap().out_features(), VOCAB - 96);
    assert_eq!(m.blocks[0].down.out_features(), D / 2);
    // A member's KV cache holds only its KV heads.
    let mut caches = g.new_caches(16);
    g.forward(StageInput::Tokens(vec![1, 2]), &mut caches, LogitsFor::Last)
        .unwrap();
    let mut c1 = one.new_cache(16);
    one.forward(StageInput::Tokens(vec![1, 2]), &mut c1, LogitsFor::Last)
        .unwrap();
    assert_eq!(caches[0].allocated_bytes() * 2, c1.allocated_bytes());
}

#[test]
fn gather_rejects_bad_pieces() {
    let p = |member: usize, cols: std::ops::Range<usize>| Partial {
        point: SyncPoint::FfnOut { layer: 0 },
        member,
        rows: 1,
        width: 4,
        data: vec![member as f32; cols.len()],
        cols,
    };
    let g = gather(vec![p(1, 2..4), p(0, 0..2)]).unwrap();
    assert_eq!(g.data, vec![0.0, 0.0, 1.0, 1.0]);
    assert!(gather(vec![]).is_err());
    assert!(gather(vec![p(0, 0..2)]).is_err(), "a hole");
    assert!(gather(vec![p(0, 0..3), p(1, 2..4)]).is_err(), "an overlap");
    let mut other = p(1, 2..4);
    other.point = SyncPoint::Logits;
    assert!(gather(vec![p(0, 0..2), other]).is_err(), "mixed points");
}
