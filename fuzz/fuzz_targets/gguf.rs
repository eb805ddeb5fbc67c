//! The GGUF reader over arbitrary bytes: parsing must return a result (never panic, never
//! allocate beyond the input), and every tensor of a file that parses must be readable.
#![no_main]

use edgeray_model::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

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
});
