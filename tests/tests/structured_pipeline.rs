//! Structured output over the in-process pipeline (qwen2.5 instruct, embedded 2-node cluster):
//! a `json_schema` answer decoded greedily is the same token for token on one stage and on two
//! (the constraint lives on whichever node holds the last stage; its mask depends only on the
//! tokens so far), parses and has the schema's keys and types; a sampled `json_object` answer
//! with a seed is the same on both placements too. A tensor-parallel group as the last stage
//! gives the same greedy answers.

use edgeray::pipeline::embedded_cluster;
use edgeray::pipeline::{DeployOptions, GenOptions, Pipeline, WireDtype, deploy};
use edgeray_model::chat::ChatMessage;
use edgeray_model::sampling::SamplingParams;
use edgeray_model::sampling::constraint::OutputFormat;
use edgeray_tests::{QWEN2, real_model};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn chat(p: &Pipeline, question: &str) -> Vec<u32> {
    let msgs: Vec<ChatMessage> = serde_json::from_value(json!([
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": question},
    ]))
    .unwrap();
    p.encode_chat(&msgs).expect("chat encodes")
}

async fn answer(
    p: &Pipeline,
    ids: Vec<u32>,
    sampling: SamplingParams,
    f: &OutputFormat,
) -> (Vec<u32>, String) {
    let (tx, mut rx) = mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let g = GenOptions {
        max_tokens: 128,
        sampling,
        response_format: Some(f.clone()),
        ..Default::default()
    };
    let s = p.generate(ids, &g, &tx).await.expect("generation");
    drop(tx);
    let _ = drain.await;
    let text = p.tokenizer().decode(&s.tokens).unwrap();
    (s.tokens, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_answers_parse_and_do_not_depend_on_the_placement() {
    let Some(model) = real_model(QWEN2) else {
        return;
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "year": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        },
        "required": ["name", "year", "tags"],
    });
    let person = OutputFormat::JsonSchema {
        schema,
        strict: true,
    };
    let questions = [
        "Tell me about the Python programming language.",
        "Describe the Eiffel Tower.",
        "Who was Ada Lovelace?",
    ];
    let dir = tempfile::tempdir().unwrap();
    let nodes = embedded_cluster(2, dir.path(), 1).await.expect("cluster");
    let mut runs: Vec<Vec<Vec<u32>>> = Vec::new();
    // One stage, two stages, and one stage run by a tensor-parallel group of two (its leader
    // then gathers the full logits: the mask needs all of them).
    for (stages, tp) in [(1, 1), (2, 1), (1, 2)] {
        let o = DeployOptions {
            stages: Some(stages),
            tp,
            ctx: 512,
            threads: 1,
            dtype: WireDtype::default(),
            ..DeployOptions::default()
        };
        let p = deploy(&nodes[0], &model, &o).await.expect("deploy");
        let mut run = Vec::new();
        for q in questions {
            let (tokens, text) = answer(&p, chat(&p, q), SamplingParams::greedy(), &person).await;
            eprintln!("{stages} stage(s), tp {tp}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let o = v.as_object().expect("an object");
            assert_eq!(
                o.keys().collect::<Vec<_>>(),
                ["name", "year", "tags"],
                "strict keys in the schema's order: {text}"
            );
            assert!(
                o["name"].is_string() && o["year"].is_i64() && o["tags"].is_array(),
                "{text}"
            );
            assert!(o["tags"].as_array().unwrap().len() <= 3);
            run.push(tokens);
        }
        let sampled = SamplingParams {
            temperature: 0.8,
            seed: 42,
            ..SamplingParams::default()
        };
        let (tokens, text) = answer(
            &p,
            chat(&p, "List two fruits."),
            sampled,
            &OutputFormat::JsonObject,
        )
        .await;
        eprintln!("{stages} stage(s), tp {tp}, json_object sampled: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(v.is_object());
        run.push(tokens);
        p.shutdown().await;
        runs.push(run);
    }
    assert_eq!(
        runs[0], runs[1],
        "one stage and two stages answer the same tokens"
    );
    assert_eq!(
        runs[0][..questions.len()],
        runs[2][..questions.len()],
        "a tensor-parallel last stage answers the same greedy tokens"
    );
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
}
