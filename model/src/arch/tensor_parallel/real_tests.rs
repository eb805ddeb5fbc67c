//! The real models (skipped with a message when not fetched): a group's greedy tokens and
//! logits equal [`Generator`]'s for tp 2 and 3 with uneven speeds; prints the exchange per
//! token (`--nocapture`).

use std::sync::Arc;

use burn::tensor::Device;

use super::*;
use crate::arch::{GenerateOptions, Generator, LogitsFor, StageInput, StageOutput, StageSpec};
use crate::gguf::GgufFile;
use crate::quant::KernelPool;
use crate::sampling::{Sampler, SamplingParams};

const GEN: usize = 16;

use crate::test_models::real_model as model_path;

fn logits(o: StageOutput) -> Vec<f32> {
    match o {
        StageOutput::Logits(t) => t.into_data().try_into_vec().unwrap(),
        StageOutput::Hidden(_) => panic!("expected logits"),
    }
}

fn check_model(name: &str, groups: &[&[f64]]) {
    let Some(path) = model_path(name) else { return };
    let file = GgufFile::open(&path).unwrap();
    let pool = Arc::new(KernelPool::new(1).unwrap());
    let generator = Generator::from_file(&file, &pool, Some(256), |_, _| {}).unwrap();
    let prompt = generator
        .encode_chat("Write a haiku about tensor parallelism.")
        .unwrap();
    let opts = GenerateOptions {
        max_tokens: GEN,
        sampling: SamplingParams::default(),
    };
    let mut want_logits: Vec<Vec<f32>> = Vec::new();
    let want = generator
        .generate_tokens(&prompt, &opts, |e| {
            if !e.logits.is_empty() {
                want_logits.push(e.logits.to_vec());
            }
            true
        })
        .unwrap();
    let cfg = generator.config().clone();
    drop(generator);
    let spec = StageSpec::full(cfg.n_layers);
    for speeds in groups {
        let group = LocalGroup::load(
            &file,
            &spec,
            speeds,
            SliceOptions::default(),
            &Device::flex(),
            &pool,
        )
        .unwrap();
        let mut caches = group.new_caches(256);
        let mut sampler = Sampler::new(SamplingParams::default()).unwrap();
        sampler.accept_all(&prompt);
        let mut input = prompt.clone();
        let mut got = Vec::new();
        let mut decode_stats = None;
        for (step, want_l) in want_logits.iter().enumerate().take(want.tokens.len()) {
            let (out, stats) = group
                .forward_with_stats(StageInput::Tokens(input), &mut caches, LogitsFor::Last)
                .unwrap();
            let l = logits(out);
            assert!(
                &l == want_l,
                "{name} tp{}: logits differ from the single node at step {step}",
                speeds.len()
            );
            let id = sampler.sample(&l).unwrap();
            got.push(id);
            input = vec![id];
            if step == 1 {
                decode_stats = Some(stats);
            }
        }
        assert_eq!(got, want.tokens, "{name} tp{} {speeds:?}", speeds.len());
        let stats = decode_stats.expect("at least two tokens");
        let cost = pass_cost(&group.plan, 1, 1);
        assert_eq!(stats.points.len(), cost.sync_points);
        assert_eq!(stats.bytes_sent, cost.bytes_f32);
        let l0 = &group.plan.layers[0];
        println!(
            "{name} tp{} speeds {speeds:?}: {} tokens identical; q heads {:?}, kv holders {:?}, \
             ffn rows {:?}; per decode token: {} sync points ({} per layer), bytes sent per \
             member f32 {:?}, quantized wire {:?}; weights per member {:?} MB",
            speeds.len(),
            got.len(),
            l0.members
                .iter()
                .map(|m| m.q_heads.clone())
                .collect::<Vec<_>>(),
            l0.kv_holders,
            l0.members
                .iter()
                .map(|m| m.ffn_rows.clone())
                .collect::<Vec<_>>(),
            cost.sync_points,
            (cost.sync_points - 1) / cfg.n_layers,
            cost.bytes_f32,
            cost.bytes_quantized,
            group
                .weight_bytes()
                .iter()
                .map(|b| b / 1_000_000)
                .collect::<Vec<_>>(),
        );
        let split = SliceOptions {
            wo: WoPlacement::Split,
            ..SliceOptions::default()
        };
        let c = pass_cost(&plan_stage(&file, &spec, speeds, split).unwrap(), 1, 1);
        println!(
            "  (attn_output split instead: {} sync points, f32 {:?}, quantized {:?})",
            c.sync_points, c.bytes_f32, c.bytes_quantized
        );
    }
}

#[test]
fn real_qwen_groups_equal_generator() {
    check_model(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        &[&[1.0, 2.2], &[1.0, 1.6, 0.7]],
    );
}

#[test]
fn real_gemma_groups_equal_generator() {
    check_model("gemma-3-270m-q4_k_m.gguf", &[&[1.0, 1.0], &[0.7, 1.0, 1.3]]);
}
