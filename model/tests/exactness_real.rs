//! Real-model exactness: greedy generation must reproduce llama.cpp's 32-token continuations
//! (see /work/shared/models.md), with the near-tie rule: a divergence is tolerated only at a step
//! where edgeray's own top-two logits are within 0.05; prompts marked `strict` must match fully.
//!
//! Lives in the model crate so that it also runs on aarch64 under qemu-user
//! (`scripts/test-aarch64.sh`) without cross-building the networking crates.

use edgeray_model::arch::{GenerateOptions, Generator};
mod common;

use common::{GEMMA3, QWEN2, real_model};

const NEAR_TIE: f32 = 0.05;

struct Reference {
    model: &'static str,
    prompt: &'static str,
    prompt_ids: Option<&'static [u32]>,
    continuation: &'static str,
    strict: bool,
}

/// Outcome of comparing one generation with its reference.
#[derive(Debug)]
enum Verdict {
    Match,
    /// First diverging step, its top-two gap, the text generated so far.
    Diverged {
        step: usize,
        gap: f32,
        got: String,
    },
}

fn run(r: &Reference) -> Option<Verdict> {
    let path = real_model(r.model)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(2);
    let g = Generator::load(&path, threads, Some(256), |_, _| {}).expect("model loads");
    let ids = g.encode(r.prompt).expect("prompt tokenizes");
    if let Some(want) = r.prompt_ids {
        assert_eq!(ids, want, "prompt token ids of {:?}", r.prompt);
    }
    let opts = GenerateOptions {
        max_tokens: 32,
        ..Default::default()
    };
    let out = g
        .generate_tokens(&ids, &opts, |_| true)
        .expect("generation runs");
    // Find the first step whose cumulative text stops being a prefix of the reference.
    let mut text = Vec::new();
    for (step, &id) in out.tokens.iter().enumerate() {
        text.extend_from_slice(g.tokenizer.token_bytes(id, false).expect("token bytes"));
        let ok = r.continuation.as_bytes().starts_with(&text);
        if !ok {
            return Some(Verdict::Diverged {
                step,
                gap: out.gaps[step],
                got: String::from_utf8_lossy(&text).into_owned(),
            });
        }
    }
    if text != r.continuation.as_bytes() {
        // Stopped early (EOG) or produced less text than the reference.
        return Some(Verdict::Diverged {
            step: out.tokens.len(),
            gap: f32::INFINITY,
            got: String::from_utf8_lossy(&text).into_owned(),
        });
    }
    Some(Verdict::Match)
}

fn check(r: &Reference) {
    let Some(v) = run(r) else { return };
    match v {
        Verdict::Match => eprintln!("{} {:?}: all 32 tokens match llama.cpp", r.model, r.prompt),
        Verdict::Diverged { step, gap, got } => {
            eprintln!(
                "{} {:?}: first divergence at step {step}, top-two gap {gap:.4}\n  got:  {got:?}\n  want: {:?}",
                r.model, r.prompt, r.continuation
            );
            assert!(
                !r.strict,
                "{:?} must match llama.cpp in full; diverged at step {step} (gap {gap})",
                r.prompt
            );
            assert!(
                gap < NEAR_TIE,
                "divergence at step {step} with a clear winner (gap {gap} >= {NEAR_TIE}): a bug, not a near-tie"
            );
        }
    }
}

#[test]
fn gemma3_capital_of_france() {
    check(&Reference {
        model: GEMMA3,
        prompt: "The capital of France is",
        prompt_ids: Some(&[2, 818, 5279, 529, 7001, 563]),
        continuation: " the capital of the country of France. It is the largest city in France. It is the capital of the country of France. It is the largest city in",
        strict: false,
    });
}

#[test]
// llama.cpp's own greedy choice at step 3 here (" I" vs " from") depends on its CPU build: the
// reference (AVX-512) says " I"; the same llama.cpp commit built for AVX2 says " from" with a gap
// of 0.155 (see /work/team/notes/issue2-divergence.md). edgeray emulates the AVX-512 build's
// numerics where it can and sees a near-tie there.
fn gemma3_pancakes() {
    check(&Reference {
        model: GEMMA3,
        prompt: "My favourite recipe for pancakes",
        // Whole-word pieces of the GGUF vocabulary (no space prefix for the first word).
        prompt_ids: Some(&[2, 4754, 17797, 15028, 573, 69084]),
        continuation: " is the one I made with my mom. I love the texture of the batter and the way it cooks. I love the way it looks and the way it",
        strict: false,
    });
}

#[test]
fn qwen2_fibonacci() {
    check(&Reference {
        model: QWEN2,
        prompt: "def fibonacci(n):",
        prompt_ids: Some(&[750, 75698, 1445, 1648]),
        continuation: "\n    if n <= 0:\n        return \"Invalid input\"\n    elif n == 1:\n        return 0\n    elif n == 2",
        strict: true,
    });
}

#[test]
fn qwen2_tcp_udp() {
    check(&Reference {
        model: QWEN2,
        prompt: "The difference between TCP and UDP is",
        prompt_ids: None,
        continuation: ":\nA. 10\nB. 20\nC. 30\nD. 40\nTo determine the difference between TCP and",
        strict: false,
    });
}
