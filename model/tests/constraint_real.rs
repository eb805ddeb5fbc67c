//! Structured output on the real vocabularies (qwen2.5: 151,936 tokens, gemma3: 262,144):
//! the tokenizer's own encoding of a valid document is allowed token by token, the end of
//! generation only once the document is complete; prints what preparing the vocabulary and
//! one step (mask + masking a full logits row) cost.
//!
//! `cargo test --release -p edgeray-model --test constraint_real -- --nocapture`

use std::sync::Arc;
use std::time::Instant;

use edgeray_model::gguf::GgufFile;
use edgeray_model::sampling::constraint::{Constraint, ConstraintVocab, OutputFormat};
use edgeray_model::tokenizer::Tokenizer;
use serde_json::json;

mod common;

use common::{GEMMA3, QWEN2, real_model};

fn check_model(name: &str) {
    let Some(path) = real_model(name) else {
        return;
    };
    let file = GgufFile::open(&path).expect("open gguf");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let t0 = Instant::now();
    let vocab = Arc::new(ConstraintVocab::from_tokenizer(&tok).expect("vocabulary"));
    let prep = t0.elapsed();
    let format = OutputFormat::JsonSchema {
        schema: json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"type": ["string", "null"]},
            },
            "required": ["name", "age", "tags", "note"],
        }),
        strict: true,
    };
    let docs = [
        r#"{"name": "Ada Lovelace", "age": 36, "tags": ["math", "poetry", "é\"x\\n"], "note": null}"#,
        r#"{"name": "日本語のテキスト", "age": 0, "tags": [], "note": "a, b: {c}"}"#,
    ];
    let eog = tok.eog_ids().next().expect("an EOG token");
    let mut logits = vec![0.5f32; tok.vocab_size()];
    let (mut steps, mut spent) = (0u32, std::time::Duration::ZERO);
    for doc in docs {
        let ids = tok.encode(doc, false).expect("encode");
        let mut c = Constraint::new(vocab.clone(), &format).expect("constraint");
        for (i, &id) in ids.iter().enumerate() {
            let t = Instant::now();
            logits.fill(0.5);
            c.mask_logits(&mut logits).expect("mask");
            spent += t.elapsed();
            steps += 1;
            assert!(
                logits[id as usize].is_finite(),
                "{name}: token {i} ({:?}) of {doc} is masked",
                tok.token_text(id)
            );
            assert!(
                !c.allows(eog).unwrap(),
                "{name}: EOG allowed inside {doc} at {i}"
            );
            c.advance(id).expect("advance");
        }
        assert!(c.is_complete().unwrap(), "{name}: {doc} is not complete");
        logits.fill(0.5);
        c.mask_logits(&mut logits).unwrap();
        let allowed: Vec<u32> = (0..logits.len() as u32)
            .filter(|&t| logits[t as usize].is_finite())
            .collect();
        assert!(
            allowed.iter().all(|&t| tok.is_eog(t)),
            "{name}: only EOG after the document"
        );
    }
    eprintln!(
        "{name}: {} tokens prepared in {:.0} ms; {steps} steps, {:.1} µs per step (mask + masking the logits)",
        tok.vocab_size(),
        prep.as_secs_f64() * 1e3,
        spent.as_secs_f64() * 1e6 / f64::from(steps)
    );
}

#[test]
fn qwen2_encoded_documents_are_allowed() {
    check_model(QWEN2);
}

#[test]
fn gemma3_encoded_documents_are_allowed() {
    check_model(GEMMA3);
}
