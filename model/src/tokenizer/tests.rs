//! Unit tests on small hand-made vocabularies (the real models are tested in
//! `model/tests/tokenizer_real.rs`).

use super::*;

/// A byte-level BPE vocabulary: the 256 byte characters, some merges, and special tokens.
fn bpe_tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| bytelevel::byte_to_char(b).to_string())
        .collect();
    let merges: Vec<String> = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    let first_special = tokens.len() as u32;
    tokens.extend(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"].map(String::from));
    let mut types = vec![1; tokens.len()];
    for t in &mut types[first_special as usize..first_special as usize + 3] {
        *t = 3;
    }
    types[first_special as usize + 3] = 4;
    Tokenizer::new(TokenizerConfig {
        model: "gpt2".into(),
        pre: Some("qwen2".into()),
        tokens,
        token_types: Some(types),
        merges,
        bos_id: Some(first_special),
        eos_id: Some(first_special + 2),
        add_bos: Some(false),
        ..Default::default()
    })
    .unwrap()
}

/// A SentencePiece vocabulary with byte fallback, like Gemma's.
fn spm_tokenizer(add_space_prefix: bool) -> Tokenizer {
    let mut tokens: Vec<(String, f32, i32)> = vec![
        ("<pad>".into(), 0.0, 3),
        ("<eos>".into(), 0.0, 3),
        ("<bos>".into(), 0.0, 3),
        ("<unk>".into(), 0.0, 2),
        ("<start_of_turn>".into(), 0.0, 3),
        ("<end_of_turn>".into(), 0.0, 3),
        ("\n".into(), 0.0, 4),
    ];
    for b in 0..=255u8 {
        tokens.push((format!("<0x{b:02X}>"), 0.0, 6));
    }
    for (t, s) in [
        ("▁", -1.0),
        ("H", -2.0),
        ("i", -2.0),
        ("Hi", -3.0),
        ("▁t", -4.0),
        ("h", -2.0),
        ("e", -2.0),
        ("re", -5.0),
        ("▁the", -6.0),
        ("r", -2.0),
        ("t", -2.0),
        ("▁th", -7.0),
        ("th", -3.0),
        ("▁there", -8.0),
        ("ere", -9.0),
        ("er", -4.0),
    ] {
        tokens.push((t.into(), s, 1));
    }
    Tokenizer::new(TokenizerConfig {
        model: "llama".into(),
        tokens: tokens.iter().map(|t| t.0.clone()).collect(),
        scores: Some(tokens.iter().map(|t| t.1).collect()),
        token_types: Some(tokens.iter().map(|t| t.2).collect()),
        bos_id: Some(2),
        eos_id: Some(1),
        unk_id: Some(3),
        add_bos: Some(true),
        add_space_prefix: Some(add_space_prefix),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn bpe_merges_and_specials() {
    let t = bpe_tokenizer();
    let hello = t.token_id("hello").unwrap();
    let world = t.token_id("Ġworld").unwrap();
    assert_eq!(t.encode("hello world", true).unwrap(), vec![hello, world]);
    let im_start = t.token_id("<|im_start|>").unwrap();
    let im_end = t.token_id("<|im_end|>").unwrap();
    let ids = t.encode("<|im_start|>hello<|im_end|>", false).unwrap();
    assert_eq!(ids, vec![im_start, hello, im_end]);
    // not parsed: plain text
    let plain = t.encode_with("<|im_start|>", false, false).unwrap();
    assert!(plain.len() > 1 && !plain.contains(&im_start));
    assert_eq!(t.decode(&plain).unwrap(), "<|im_start|>");
    // user-defined tokens are matched even without parse_special, and decoded as text
    let tool = t.token_id("<tool>").unwrap();
    assert_eq!(t.encode_with("<tool>", false, false).unwrap(), vec![tool]);
    assert_eq!(t.decode(&[tool]).unwrap(), "<tool>");
    // control tokens hidden unless rendered
    assert_eq!(t.decode(&ids).unwrap(), "hello");
    assert_eq!(
        t.decode_with(&ids, true).unwrap(),
        "<|im_start|>hello<|im_end|>"
    );
    assert!(t.is_eog(im_end));
    assert!(t.is_eog(t.token_id("<|endoftext|>").unwrap()));
    assert!(!t.is_eog(hello));
    let eot = t.eot_id().unwrap();
    assert!(t.token_text(eot) == Some("<|im_end|>") || t.token_text(eot) == Some("<|endoftext|>"));
}

#[test]
fn bpe_round_trips_arbitrary_text_through_byte_tokens() {
    let t = bpe_tokenizer();
    for s in [
        "",
        "x",
        "héllo wörld 你好 🎉",
        "a\n\n  b\t\r\n",
        "\u{0}\u{7f}",
    ] {
        let ids = t.encode(s, true).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), s);
    }
}

#[test]
fn spm_merges_by_score_with_byte_fallback() {
    let t = spm_tokenizer(false);
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!(
        t.encode("Hi there", true).unwrap(),
        vec![2, id("Hi"), id("▁there")]
    );
    // "é" is not in the vocabulary: bytes C3 A9
    assert_eq!(
        t.encode("é", false).unwrap(),
        vec![id("<0xC3>"), id("<0xA9>")]
    );
    assert_eq!(
        t.decode(&t.encode("Hi é\nthere", true).unwrap()).unwrap(),
        "Hi é\nthere"
    );
    // "\n" is user-defined: always its own token
    assert_eq!(
        t.encode("Hi\nHi", false).unwrap(),
        vec![id("Hi"), id("\n"), id("Hi")]
    );
    // control tokens
    let chat = t.encode("<start_of_turn>Hi<end_of_turn>", true).unwrap();
    assert_eq!(chat, vec![2, 4, id("Hi"), 5]);
    assert!(t.is_eog(5) && t.is_eog(1) && !t.is_eog(2));
    assert_eq!(t.eot_id(), Some(5));
}

#[test]
fn spm_space_prefix_added_after_specials_and_stripped_on_decode() {
    let t = spm_tokenizer(true);
    let id = |s: &str| t.token_id(s).unwrap();
    // " there" -> "▁there"
    assert_eq!(t.encode("there", false).unwrap(), vec![id("▁there")]);
    assert_eq!(t.decode(&[id("▁there")]).unwrap(), "there");
    assert_eq!(t.decode(&[2, id("▁there")]).unwrap(), " there");
    let ids = t.encode("there<end_of_turn>there", false).unwrap();
    assert_eq!(ids, vec![id("▁there"), 5, id("▁there")]);
}

#[test]
fn stream_decoder_equals_full_decode() {
    let t = spm_tokenizer(false);
    let ids = t.encode("Hi 你好 🎉 there\n", true).unwrap();
    let mut d = TokenStreamDecoder::new();
    let mut pieces = Vec::new();
    for &i in &ids {
        pieces.push(d.push(&t, i).unwrap());
    }
    let tail = d.finish();
    assert_eq!(pieces.concat() + &tail, t.decode(&ids).unwrap());
    // characters are only released whole: no piece holds a replacement character
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    assert!(tail.is_empty());
    // a cut-off character at the end becomes U+FFFD in both
    let cut = &ids[..ids.len() - 4];
    let mut d = TokenStreamDecoder::new();
    let mut s = String::new();
    for &i in cut {
        s += &d.push(&t, i).unwrap();
    }
    s += &d.finish();
    assert_eq!(s, t.decode(cut).unwrap());
}

#[test]
fn errors_not_panics() {
    let t = bpe_tokenizer();
    let n = t.vocab_size() as u32;
    assert!(matches!(
        t.decode(&[n]),
        Err(TokenizerError::TokenOutOfRange { .. })
    ));
    let mut d = TokenStreamDecoder::new();
    assert!(d.push(&t, n + 5).is_err());
    let base = TokenizerConfig {
        model: "gpt2".into(),
        tokens: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    assert!(matches!(
        Tokenizer::new(base.clone()),
        Err(TokenizerError::MissingMerges)
    ));
    let e = Tokenizer::new(TokenizerConfig {
        model: "wordpiece".into(),
        ..base.clone()
    })
    .unwrap_err();
    assert!(matches!(e, TokenizerError::UnsupportedModel(_)));
    let e = Tokenizer::new(TokenizerConfig {
        merges: vec!["a b".into()],
        pre: Some("nope".into()),
        ..base.clone()
    })
    .unwrap_err();
    assert!(matches!(e, TokenizerError::UnsupportedPreTokenizer(_)));
    let e = Tokenizer::new(TokenizerConfig {
        model: "llama".into(),
        tokens: vec!["a".into(), "a".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, TokenizerError::DuplicateToken { .. }));
    let e = Tokenizer::new(TokenizerConfig {
        model: "llama".into(),
        tokens: vec!["a".into(), "b".into()],
        scores: Some(vec![0.0]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, TokenizerError::LengthMismatch { .. }));
    // SPM's default BOS id 1 is outside a one-token vocabulary: add_bos cannot be honoured
    let e = Tokenizer::new(TokenizerConfig {
        model: "llama".into(),
        tokens: vec!["a".into()],
        add_bos: Some(true),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, TokenizerError::MissingSpecialToken(_)));
    assert!(matches!(
        Tokenizer::new(TokenizerConfig {
            model: "llama".into(),
            ..Default::default()
        }),
        Err(TokenizerError::EmptyVocab)
    ));
}
