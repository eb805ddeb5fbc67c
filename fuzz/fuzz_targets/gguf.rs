//! The GGUF reader over arbitrary bytes: parsing must return a result (never panic, never
//! allocate beyond the input), every tensor of a file that parses must be readable, and a
//! tokenizer built from its metadata must encode and decode without panicking.
#![no_main]

use edgeray_model::gguf::GgufFile;
use edgeray_model::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

/// Text exercising pre-tokenizer splits, byte fallback, special tokens and non-ASCII.
const TEXT: &str = "Hello, world! 123 abab <|im_end|> \u{fc}n\u{ef}c\u{f6}d\u{e9} \u{1f642}\n\n  x's";

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = file.metadata().get_str("general.architecture");
    for t in file.tensors() {
        let bytes = file
            .tensor_data(t)
            .expect("a parsed tensor lies inside the file");
        assert_eq!(bytes.len() as u64, t.size);
        let _ = file.matrix(&t.name);
    }
    if let Ok(tok) = Tokenizer::from_gguf(&file) {
        for special in [false, true] {
            if let Ok(ids) = tok.encode(TEXT, special) {
                let _ = tok.decode(&ids);
            }
        }
        let n = tok.vocab_size() as u32;
        let _ = tok.decode(&[0, n.saturating_sub(1), n]);
    }
});
