//! Multi-sequence stage batches on the two real models: every sequence's logits (and hidden
//! states between two stages) are bit-identical to running that sequence alone.
//!
//! The models live in `<workspace>/models/` (git-ignored, fetched by the setup script). When a
//! model is missing the test prints SKIP and passes, except under `CI=true`, where it fails.

use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use edgeray_model::arch::{
    BatchItem, KvCache, LogitsFor, ModelConfig, Stage, StageInput, StageOutput, StageSpec,
};
use edgeray_model::gguf::GgufFile;
use edgeray_model::quant::KernelPool;

mod common;

use common::{GEMMA3, QWEN2, real_model as model_path};

fn bits(t: Tensor<2>) -> Vec<u32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("f32")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn argmax(t: &Tensor<2>) -> u32 {
    let v: Vec<f32> = t.clone().into_data().try_into_vec().expect("f32");
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// A pipeline of one or two stages over the same file.
struct Pipe {
    stages: Vec<Stage>,
}

impl Pipe {
    fn load(file: &GgufFile, split: Option<usize>) -> Pipe {
        let cfg = ModelConfig::from_gguf(file).unwrap();
        let pool = Arc::new(KernelPool::new(1).unwrap());
        let dev = Device::flex();
        // Layer boundaries: 0..n in one stage, or 0..k and k..n.
        let bounds = match split {
            None => vec![0, cfg.n_layers],
            Some(k) => vec![0, k, cfg.n_layers],
        };
        let ranges = bounds.windows(2).map(|w| w[0]..w[1]);
        let stages = ranges
            .map(|r| {
                Stage::load(file, &StageSpec::for_range(r, cfg.n_layers), &dev, &pool).unwrap()
            })
            .collect();
        Pipe { stages }
    }

    fn caches(&self) -> Vec<KvCache> {
        self.stages.iter().map(|s| s.new_cache(256)).collect()
    }

    /// One sequence alone through every stage: the intermediate hidden states' bits and the
    /// logits of the last position.
    fn solo(&self, tokens: &[u32], caches: &mut [KvCache]) -> (Vec<Vec<u32>>, Tensor<2>) {
        let mut input = StageInput::Tokens(tokens.to_vec());
        let mut hidden = Vec::new();
        for (s, c) in self.stages.iter().zip(caches.iter_mut()) {
            match s.forward(input, c, LogitsFor::Last).unwrap() {
                StageOutput::Hidden(h) => {
                    hidden.push(bits(h.clone()));
                    input = StageInput::Hidden(h);
                }
                StageOutput::Logits(l) => return (hidden, l),
            }
        }
        unreachable!("the last stage has the head")
    }

    /// Several sequences batched at every stage.
    fn batch(
        &self,
        tokens: &[Vec<u32>],
        caches: &mut [Vec<KvCache>],
    ) -> Vec<(Vec<Vec<u32>>, Tensor<2>)> {
        let mut inputs: Vec<StageInput> = tokens
            .iter()
            .map(|t| StageInput::Tokens(t.clone()))
            .collect();
        let mut hidden: Vec<Vec<Vec<u32>>> = vec![Vec::new(); tokens.len()];
        for (k, s) in self.stages.iter().enumerate() {
            let items: Vec<BatchItem<'_>> = inputs
                .drain(..)
                .zip(caches.iter_mut())
                .map(|(input, c)| BatchItem {
                    input,
                    cache: &mut c[k],
                    logits: LogitsFor::Last,
                })
                .collect();
            let outs = s.forward_batch(items).unwrap();
            assert_eq!(outs.len(), tokens.len());
            let mut logits = Vec::new();
            for (i, o) in outs.into_iter().enumerate() {
                match o {
                    StageOutput::Hidden(h) => {
                        hidden[i].push(bits(h.clone()));
                        inputs.push(StageInput::Hidden(h));
                    }
                    StageOutput::Logits(l) => logits.push(l),
                }
            }
            if !logits.is_empty() {
                return hidden.into_iter().zip(logits).collect();
            }
        }
        unreachable!("the last stage has the head")
    }
}

/// Three sequences: prompts of 5, 40 (the tiled attention path) and 2 tokens, batched
/// together; then decode steps, where at step 2 the second sequence sends a 3-token chunk
/// while the others decode one token each.
fn check(name: &str, split: Option<usize>) {
    let Some(path) = model_path(name) else { return };
    let file = GgufFile::open(&path).unwrap();
    let pipe = Pipe::load(&file, split);
    let long: Vec<u32> = (0..40).map(|i| 1000 + 37 * i).collect();
    let mut next: Vec<Vec<u32>> = vec![vec![2, 818, 5279, 529, 7001], long, vec![2, 4521]];
    let mut solo_caches: Vec<Vec<KvCache>> = next.iter().map(|_| pipe.caches()).collect();
    let mut batch_caches: Vec<Vec<KvCache>> = next.iter().map(|_| pipe.caches()).collect();
    for step in 0..4 {
        let got = pipe.batch(&next, &mut batch_caches);
        let mut following = Vec::new();
        for (i, toks) in next.iter().enumerate() {
            let (hidden, logits) = pipe.solo(toks, &mut solo_caches[i]);
            assert_eq!(
                got[i].0, hidden,
                "{name} split {split:?}: hidden states of sequence {i} at step {step}"
            );
            assert!(
                bits(got[i].1.clone()) == bits(logits.clone()),
                "{name} split {split:?}: logits of sequence {i} at step {step}"
            );
            let t = argmax(&logits);
            following.push(if step == 1 && i == 1 {
                vec![t, 1003, 1004]
            } else {
                vec![t]
            });
        }
        for (s, b) in solo_caches.iter().zip(&batch_caches) {
            assert_eq!(
                s.iter().map(KvCache::len).collect::<Vec<_>>(),
                b.iter().map(KvCache::len).collect::<Vec<_>>()
            );
        }
        next = following;
    }
}

#[test]
fn gemma3_batch_equals_solo() {
    check(GEMMA3, None);
    check(GEMMA3, Some(7));
}

#[test]
fn qwen2_batch_equals_solo() {
    check(QWEN2, None);
    check(QWEN2, Some(10));
}

/// A bad item (a token id past the vocabulary) fails the batch before any cache moves.
#[test]
fn bad_item_fails_the_batch_without_touching_caches() {
    let Some(path) = model_path(GEMMA3) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let pipe = Pipe::load(&file, None);
    let s = &pipe.stages[0];
    let (mut a, mut b) = (s.new_cache(16), s.new_cache(16));
    let items = vec![
        BatchItem {
            input: StageInput::Tokens(vec![2, 818]),
            cache: &mut a,
            logits: LogitsFor::Last,
        },
        BatchItem {
            input: StageInput::Tokens(vec![u32::MAX]),
            cache: &mut b,
            logits: LogitsFor::Last,
        },
    ];
    assert!(s.forward_batch(items).is_err());
    assert_eq!((a.len(), b.len()), (0, 0));
}
