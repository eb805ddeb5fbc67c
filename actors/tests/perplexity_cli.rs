//! `edgeray perplexity` on the real gemma3 model, through the built binary:
//!
//! - the `--json` schema (`tokens`, `ppl`, `positions` with `token`, `logprob`, `top_logprobs`)
//!   and its arithmetic (PPL = exp(-mean logprob), top lists best first, the actual token's
//!   log-probability equal to its entry in the top list when it is there);
//! - batch sizes 1, 7 and 31 print byte-identical JSON (forwards of fewer than 32 positions take
//!   the one-token attention path, as generation's decode steps do), and so do 32 and 512 over
//!   chunks of 64 (forwards of 32 or more take llama.cpp's tiled prompt path: two forwards of 32
//!   give what one of 64 gives);
//! - the greedy token of `Generator::generate_tokens` at a scored position is the top-1 id there,
//!   and its log-probability from the logits generation used equals the printed one (up to the
//!   last bit of JSON's decimal round trip);
//! - `--kld-base` against a llama.cpp-format file written from edgeray's own logits: KL 0 (up to
//!   the file's 16-bit levels), top-1 agreement 1, PPL ratio 1, the file's context used when
//!   `--ctx` is not given; a file of other tokens or another context is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeray_model::arch::{GenerateOptions, Generator, LogitsFor, StageInput, StageOutput};
use edgeray_model::scoring::{BaseLogProbs, LogSoftmax, LogitsHeader, LogitsWriter};
use serde_json::Value;

const CTX: usize = 32;

use edgeray_model::test_models::real_model as model;

/// The first paragraph of a fixture text (about 140 gemma3 tokens: four chunks of 32).
fn small_text(dir: &Path) -> PathBuf {
    let full = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/text/lighthouse.txt"),
    )
    .expect("fixture text");
    let para = full.split("\n\n").next().unwrap();
    let path = dir.join("small.txt");
    std::fs::write(&path, format!("{para}\n")).unwrap();
    path
}

fn perplexity(model: &Path, text: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeray"))
        .args([
            "perplexity",
            "--threads",
            "1",
            "--json",
            "--top-logprobs",
            "3",
        ])
        .arg("--model")
        .arg(model)
        .arg("--text-file")
        .arg(text)
        .args(extra)
        .output()
        .expect("edgeray perplexity runs")
}

fn json_of(out: &std::process::Output) -> (String, Value) {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        out.status.success(),
        "edgeray perplexity failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(&stdout).expect("one JSON object");
    (stdout, v)
}

#[test]
fn perplexity_json_is_consistent_with_generation_and_batch_independent() {
    let Some(gemma) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = small_text(dir.path());
    let (one, v) = json_of(&perplexity(&gemma, &text, &["--ctx", "32", "--batch", "1"]));
    for batch in ["7", "31"] {
        let (other, _) = json_of(&perplexity(
            &gemma,
            &text,
            &["--ctx", "32", "--batch", batch],
        ));
        // The object names its batch size; everything else must be identical.
        assert_eq!(
            one.replace("\"batch\":1,", ""),
            other.replace(&format!("\"batch\":{batch},"), ""),
            "batch 1 vs {batch}"
        );
    }

    let (b32, _) = json_of(&perplexity(
        &gemma,
        &text,
        &["--ctx", "64", "--batch", "32"],
    ));
    let (b512, _) = json_of(&perplexity(
        &gemma,
        &text,
        &["--ctx", "64", "--batch", "512"],
    ));
    assert_eq!(
        b32.replace("\"batch\":32,", ""),
        b512.replace("\"batch\":512,", ""),
        "batch 32 vs 512"
    );

    let tokens: Vec<u32> = v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let chunks = tokens.len() / CTX;
    assert!(
        chunks >= 2 && tokens.len() == chunks * CTX,
        "{}",
        tokens.len()
    );
    assert_eq!(tokens[0], 2, "gemma3 adds BOS");
    let positions = v["positions"].as_array().expect("positions");
    assert_eq!(positions.len(), chunks * (CTX - 1 - CTX / 2));
    let mut sum = 0.0;
    for (k, p) in positions.iter().enumerate() {
        let (chunk, j) = (k / (CTX - 1 - CTX / 2), k % (CTX - 1 - CTX / 2));
        let index = p["index"].as_u64().unwrap() as usize;
        assert_eq!(
            index,
            chunk * CTX + CTX / 2 + j + 1,
            "second half of each chunk"
        );
        let token = p["token"].as_u64().unwrap() as u32;
        assert_eq!(token, tokens[index]);
        let lp = p["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        sum += lp;
        let top = p["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let top: Vec<(u32, f64)> = top
            .iter()
            .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap()))
            .collect();
        assert!(
            top.windows(2).all(|w| w[0].1 >= w[1].1),
            "best first: {top:?}"
        );
        assert!(lp <= top[0].1);
        if let Some(&(_, l)) = top.iter().find(|(id, _)| *id == token) {
            assert_eq!(l, lp, "the actual token's entry is its logprob");
        }
    }
    let ppl = v["ppl"].as_f64().unwrap();
    let want = (-sum / positions.len() as f64).exp();
    assert!((ppl - want).abs() < 1e-9 * want, "{ppl} vs {want}");

    // Greedy generation from the same prefixes picks the top-1 token, and the log-probability
    // of its logits is the printed one, bit for bit.
    let g = Generator::load(&gemma, 1, Some(CTX), |_, _| {}).expect("model loads");
    let mut checked = 0;
    for k in [0, 5, positions.len() - 1] {
        let p = &positions[k];
        let index = p["index"].as_u64().unwrap() as usize;
        let start = index / CTX * CTX;
        let mut prefix = tokens[start..index].to_vec();
        prefix[0] = 2;
        let opts = GenerateOptions {
            max_tokens: 1,
            ..Default::default()
        };
        let mut seen = None;
        g.generate_tokens(&prefix, &opts, |e| {
            if !e.logits.is_empty() {
                let n = LogSoftmax::new(e.logits).unwrap();
                seen = Some((e.id, n.log_prob(e.logits, e.id).unwrap()));
            }
            true
        })
        .expect("generates");
        let top1 = &p["top_logprobs"][0];
        if let Some((id, lp)) = seen {
            assert_eq!(id as u64, top1[0].as_u64().unwrap(), "position {index}");
            // serde_json's parser may round the last bit of a printed f64 differently.
            let printed = top1[1].as_f64().unwrap();
            assert!(
                (lp - printed).abs() <= 4.0 * f64::EPSILON * lp.abs(),
                "position {index}: {lp} vs {printed}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "greedy tokens compared: {checked}");
}

/// Writes a llama-perplexity `--kl-divergence-base` file from edgeray's own logits of `tokens`.
fn write_base(g: &Generator, tokens: &[u32], path: &Path) {
    let chunks = tokens.len() / CTX;
    let vocab = g.config().vocab_size;
    let header = LogitsHeader {
        n_ctx: CTX,
        n_vocab: vocab,
        n_chunk: chunks,
        tokens: tokens[..chunks * CTX].to_vec(),
    };
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = LogitsWriter::new(file, header).unwrap();
    for c in 0..chunks {
        let mut input = tokens[c * CTX..(c + 1) * CTX].to_vec();
        input[0] = 2;
        let mut cache = g.stage.new_cache(CTX);
        let StageOutput::Logits(l) = g
            .stage
            .forward(StageInput::Tokens(input), &mut cache, LogitsFor::All)
            .unwrap()
        else {
            panic!("logits")
        };
        let l = l.into_data().try_into_vec::<f32>().unwrap();
        for row in l.chunks_exact(vocab).skip(CTX / 2).take(CTX - 1 - CTX / 2) {
            w.write_record(&BaseLogProbs::quantize(row)).unwrap();
        }
    }
    w.finish().unwrap();
}

#[test]
fn kld_base_of_our_own_logits_agrees_and_other_tokens_are_refused() {
    let Some(gemma) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = small_text(dir.path());
    let g = Generator::load(&gemma, 1, Some(CTX), |_, _| {}).expect("model loads");
    let tokens = edgeray_model::scoring::tokenize_text(
        &g.tokenizer,
        &std::fs::read_to_string(&text).unwrap(),
    )
    .unwrap();
    let base = dir.path().join("base.bin");
    write_base(&g, &tokens, &base);
    // The base holds the prompt path's logits (one forward per chunk): so does the default batch.
    let (_, v) = json_of(&perplexity(
        &gemma,
        &text,
        &["--kld-base", base.to_str().unwrap()],
    ));
    let k = &v["kld"];
    assert_eq!(
        k["positions"].as_u64().unwrap() as usize,
        v["positions"].as_array().unwrap().len()
    );
    assert!(k["kld_mean"].as_f64().unwrap() < 1e-5, "{k}");
    assert!(k["kld_max"].as_f64().unwrap() < 1e-4, "{k}");
    assert_eq!(k["top1_agreement"].as_f64().unwrap(), 1.0, "{k}");
    assert!((k["ppl_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{k}");
    assert!((k["ppl"].as_f64().unwrap() - v["ppl"].as_f64().unwrap()).abs() < 1e-9);

    // Another text's tokens: refused with the first differing index.
    let mut other = tokens.clone();
    other[20] = other[20].wrapping_add(1);
    let bad = dir.path().join("bad.bin");
    write_base(&g, &other, &bad);
    let out = perplexity(&gemma, &text, &["--kld-base", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token 20 differs"), "{err}");
    // A context other than the file's.
    let out = perplexity(
        &gemma,
        &text,
        &["--ctx", "16", "--kld-base", base.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --ctx 32"));
}
