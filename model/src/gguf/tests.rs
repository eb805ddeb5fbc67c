//! Reader/writer tests: round trip and one test per malformed-input error.

use super::*;
use crate::quant::GgmlType;

/// Little raw-byte builder for hand-made (possibly broken) GGUF images.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    /// A tensor info entry.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad_to(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.extend(std::iter::repeat_n(0u8, n));
        self
    }
    fn parse(&self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0.clone())
    }
}

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set_metadata("general.architecture", "test")
        .set_metadata("test.block_count", 2u32)
        .set_metadata("test.eps", 1e-6f32)
        .set_metadata("test.flag", true)
        .set_metadata("test.neg", MetadataValue::I64(-5))
        .set_metadata("test.f64", MetadataValue::F64(0.25))
        .set_metadata("tokenizer.ggml.tokens", vec!["<s>", "a", "é"])
        .set_metadata("tokenizer.ggml.scores", vec![0.0f32, -1.0, -2.5])
        .set_metadata("test.empty", MetadataValue::Array(vec![]))
        .set_metadata(
            "test.nested",
            MetadataValue::Array(vec![MetadataValue::Array(vec![MetadataValue::U8(1)])]),
        );
    w.add_f32_tensor("norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0])
        .unwrap();
    w.add_tensor(
        "blk.0.q8",
        &[32, 3],
        GgmlType::Q8_0,
        (0..102).map(|i| i as u8).collect(),
    )
    .unwrap();
    w.add_tensor("blk.0.q4k", &[256, 1, 1, 2], GgmlType::Q4_K, vec![7; 288])
        .unwrap();
    w
}

#[test]
fn writer_round_trip() {
    let w = sample_writer();
    let bytes = w.to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    let m = f.metadata();
    assert_eq!(m.len(), 10);
    assert_eq!(m.get_str("general.architecture").unwrap(), "test");
    assert_eq!(m.get_u32("test.block_count").unwrap(), 2);
    assert_eq!(m.get_f32("test.eps").unwrap(), 1e-6);
    assert!(m.get_bool("test.flag").unwrap());
    assert_eq!(m.get_i64("test.neg").unwrap(), -5);
    assert_eq!(m.get_f32("test.f64").unwrap(), 0.25);
    assert_eq!(
        m.get_str_array("tokenizer.ggml.tokens").unwrap(),
        vec!["<s>", "a", "é"]
    );
    assert_eq!(
        m.get_f32_array("tokenizer.ggml.scores").unwrap(),
        vec![0.0, -1.0, -2.5]
    );
    assert!(m.get_array("test.empty").unwrap().is_empty());
    // keys stay in insertion order
    let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
    assert_eq!(keys[0], "general.architecture");
    assert_eq!(keys[9], "test.nested");

    assert_eq!(f.tensors().len(), 3);
    let t = f.tensor("blk.0.q8").unwrap();
    assert_eq!(t.dims, vec![32, 3]);
    assert_eq!(t.ggml_type, GgmlType::Q8_0);
    assert_eq!(t.size, 102);
    assert_eq!(t.n_rows(), 3);
    assert_eq!(
        f.tensor_data(t).unwrap(),
        &(0..102).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    let n = f.tensor("norm.weight").unwrap();
    assert_eq!(n.offset, 0);
    assert_eq!(t.offset, 32);
    let k = f.tensor("blk.0.q4k").unwrap();
    assert_eq!(k.offset % 32, 0);
    assert_eq!(f.tensor_data(k).unwrap(), &[7u8; 288][..]);
    assert_eq!(&*f.tensor_bytes("blk.0.q4k").unwrap(), &[7u8; 288][..]);
    assert!(matches!(
        f.require_tensor("nope"),
        Err(GgufError::TensorNotFound(_))
    ));

    // Rewriting the parsed file reproduces the same bytes.
    let mut w2 = GgufWriter::new();
    w2.extend_metadata(f.metadata());
    for t in f.tensors() {
        w2.add_tensor(
            t.name.clone(),
            &t.dims,
            t.ggml_type,
            f.tensor_data(t).unwrap().to_vec(),
        )
        .unwrap();
    }
    assert_eq!(w2.to_bytes().unwrap(), bytes);
}

#[test]
fn custom_alignment_and_file_io() {
    let mut w = sample_writer();
    w.set_metadata(ALIGNMENT_KEY, 64u32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    w.write_file(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert!(f.tensors().iter().all(|t| t.offset % 64 == 0));
    assert!(matches!(
        GgufFile::open(dir.path().join("missing")),
        Err(GgufError::Io { .. })
    ));
}

#[test]
fn version_2_is_read() {
    let mut r = Raw::header(2, 1, 0);
    r.tensor("x", &[2], 0, 0).pad_to(32).zeros(8);
    let f = r.parse().unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensor("x").unwrap().size, 8);
}

#[test]
fn bad_magic_and_version() {
    let mut r = Raw::header(3, 0, 0);
    r.0[0] = b'X';
    assert!(matches!(r.parse(), Err(GgufError::BadMagic(m)) if &m == b"XGUF"));
    for v in [1, 4, 0xFFFF_FFFF] {
        assert!(
            matches!(Raw::header(v, 0, 0).parse(), Err(GgufError::UnsupportedVersion(x)) if x == v)
        );
    }
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let bytes = sample_writer().to_bytes().unwrap();
    for cut in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..cut].to_vec());
        assert!(r.is_err(), "prefix of {cut} bytes parsed");
    }
    assert!(matches!(
        GgufFile::from_bytes(vec![b'G', b'G']),
        Err(GgufError::Truncated { what: "magic", .. })
    ));
    // Cut inside the last tensor's data: out of bounds.
    let r = GgufFile::from_bytes(bytes[..bytes.len() - 1].to_vec());
    assert!(
        matches!(r, Err(GgufError::TensorOutOfBounds { .. })),
        "{r:?}"
    );
}

#[test]
fn huge_counts_and_lengths_are_rejected_without_allocating() {
    // metadata count
    assert!(matches!(
        Raw::header(3, 0, u64::MAX).parse(),
        Err(GgufError::LengthTooLarge {
            what: "metadata count",
            ..
        })
    ));
    // tensor count
    assert!(matches!(
        Raw::header(3, u64::MAX / 2, 0).parse(),
        Err(GgufError::LengthTooLarge {
            what: "tensor count",
            ..
        })
    ));
    // key length
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 60).zeros(16);
    assert!(matches!(
        r.parse(),
        Err(GgufError::LengthTooLarge {
            what: "metadata key",
            ..
        })
    ));
    // string value length
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).u64(u64::MAX).zeros(16);
    assert!(matches!(
        r.parse(),
        Err(GgufError::LengthTooLarge {
            what: "metadata string",
            ..
        })
    ));
    // array length
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9).u32(4).u64(1 << 40).zeros(16);
    assert!(matches!(
        r.parse(),
        Err(GgufError::LengthTooLarge {
            what: "metadata array",
            ..
        })
    ));
    // array of strings whose count times 8 overflows
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9).u32(8).u64(u64::MAX / 4).zeros(16);
    assert!(matches!(r.parse(), Err(GgufError::LengthTooLarge { .. })));
}

#[test]
fn deep_array_nesting_is_rejected() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9);
    for _ in 0..100 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0).zeros(64);
    assert!(matches!(r.parse(), Err(GgufError::NestingTooDeep { .. })));
}

#[test]
fn unknown_value_type_and_bad_utf8() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(13).zeros(8);
    assert!(matches!(
        r.parse(),
        Err(GgufError::UnknownValueType { type_id: 13, .. })
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str(&[0xFF, 0xFE]).u32(0).zeros(1);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidUtf8 {
            what: "metadata key",
            ..
        })
    ));
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).str(&[b'a', 0xC3]);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidUtf8 {
            what: "metadata string",
            ..
        })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.str(&[0x80])
        .u32(1)
        .u64(1)
        .u32(0)
        .u64(0)
        .pad_to(32)
        .zeros(4);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidUtf8 {
            what: "tensor name",
            ..
        })
    ));
}

#[test]
fn duplicate_keys_and_tensors() {
    let mut r = Raw::header(3, 0, 2);
    r.str(b"k").u32(0).zeros(1).str(b"k").u32(0).zeros(1);
    assert!(matches!(r.parse(), Err(GgufError::DuplicateKey(k)) if k == "k"));
    let mut r = Raw::header(3, 2, 0);
    r.tensor("t", &[1], 0, 0)
        .tensor("t", &[1], 0, 32)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(r.parse(), Err(GgufError::DuplicateTensor(n)) if n == "t"));
}

#[test]
fn bad_dims() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).pad_to(32).zeros(4);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TooManyDims { n_dims: 5, .. })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[4, 0], 0, 0).pad_to(32).zeros(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidDims {
            reason: "zero dimension",
            ..
        })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[], 0, 0).pad_to(32).zeros(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidDims {
            reason: "no dimensions",
            ..
        })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1 << 32, 1 << 32, 1 << 4], 0, 0)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidDims {
            reason: "element count overflows",
            ..
        })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1 << 62], 0, 0).pad_to(32).zeros(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::InvalidDims {
            reason: "byte size overflows",
            ..
        })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[33], GgmlType::Q8_0.id(), 0)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(r.parse(), Err(GgufError::InvalidDims { .. })));
}

#[test]
fn unknown_ggml_type() {
    for id in [4u32, 31, 99] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("t", &[1], id, 0).pad_to(32).zeros(64);
        assert!(
            matches!(r.parse(), Err(GgufError::UnknownGgmlType { type_id, .. }) if type_id == id)
        );
    }
}

#[test]
fn offsets_out_of_bounds_or_misaligned() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[4], 0, 16).pad_to(32).zeros(64);
    assert!(matches!(
        r.parse(),
        Err(GgufError::MisalignedOffset {
            offset: 16,
            alignment: 32,
            ..
        })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[4], 0, 32).pad_to(32).zeros(40);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[4], 0, u64::MAX - 31).pad_to(32).zeros(40);
    assert!(matches!(
        r.parse(),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
    // header ends mid-padding
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1], 0, 0);
    if r.0.len().is_multiple_of(32) {
        r.zeros(1);
    }
    assert!(matches!(
        r.parse(),
        Err(GgufError::Truncated {
            what: "data section padding",
            ..
        })
    ));
}

#[test]
fn bad_alignment() {
    for (a, ty) in [(0u32, 4u32), (48, 4)] {
        let mut r = Raw::header(3, 0, 1);
        r.str(ALIGNMENT_KEY.as_bytes()).u32(ty).u32(a);
        assert!(
            matches!(r.parse(), Err(GgufError::InvalidAlignment(_))),
            "alignment {a}"
        );
    }
    let mut r = Raw::header(3, 0, 1);
    r.str(ALIGNMENT_KEY.as_bytes()).u32(8).str(b"32");
    assert!(matches!(r.parse(), Err(GgufError::InvalidAlignment(_))));
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = GgufWriter::new();
    assert!(matches!(
        w.add_tensor("t", &[32], GgmlType::Q8_0, vec![0; 33]),
        Err(GgufError::InvalidInput(_))
    ));
    assert!(matches!(
        w.add_tensor("t", &[31], GgmlType::Q8_0, vec![0; 34]),
        Err(GgufError::InvalidDims { .. })
    ));
    assert!(matches!(
        w.add_tensor("t", &[1; 5], GgmlType::F32, vec![0; 4]),
        Err(GgufError::TooManyDims { .. })
    ));
    w.add_f32_tensor("t", &[1], &[0.0]).unwrap();
    assert!(matches!(
        w.add_f32_tensor("t", &[1], &[0.0]),
        Err(GgufError::DuplicateTensor(_))
    ));
    w.set_metadata(
        "mixed",
        MetadataValue::Array(vec![MetadataValue::U8(1), MetadataValue::I8(1)]),
    );
    assert!(matches!(w.to_bytes(), Err(GgufError::InvalidInput(_))));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Random byte corruption of a valid file never panics.
    #[test]
    fn corrupted_files_never_panic(pos in 0usize..2000, val in proptest::prelude::any::<u8>(), cut in 0usize..2000) {
        let mut bytes = sample_writer().to_bytes().unwrap();
        let n = bytes.len();
        bytes[pos % n] = val;
        bytes.truncate(n - cut % 64);
        let _ = GgufFile::from_bytes(bytes);
    }
}

/// Opens the real models (skipped when they are not fetched), checks the per-type tensor counts
/// against /work/shared/models.md, dequantizes a few tensors and runs a matvec on each quantized
/// type. Run with `--nocapture` to see the table.
#[test]
fn real_models_tensor_tables() {
    use crate::quant::{KernelPool, matvec};
    use std::collections::BTreeMap;
    let root = crate::test_models::models_dir();
    let cases: [(&str, &[(GgmlType, usize)]); 2] = [
        (
            "gemma-3-270m-q4_k_m.gguf",
            &[
                (GgmlType::Q8_0, 10),
                (GgmlType::Q5_0, 81),
                (GgmlType::Q4_K, 27),
                (GgmlType::Q6_K, 9),
                (GgmlType::F32, 109),
            ],
        ),
        (
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            &[
                (GgmlType::Q5_0, 133),
                (GgmlType::Q8_0, 13),
                (GgmlType::Q6_K, 12),
                (GgmlType::Q4_K, 12),
                (GgmlType::F32, 121),
            ],
        ),
    ];
    let pool = KernelPool::new(2).unwrap();
    for (file, expected) in cases {
        let path = root.join(file);
        if !path.exists() {
            eprintln!("SKIP: {} not found", path.display());
            continue;
        }
        let f = GgufFile::open(&path).unwrap();
        let mut per_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for t in f.tensors() {
            let e = per_type.entry(t.ggml_type.name()).or_default();
            e.0 += 1;
            e.1 += t.size;
        }
        println!(
            "{file}: GGUF v{}, {} tensors, {} metadata keys, arch {}",
            f.version(),
            f.tensors().len(),
            f.metadata().len(),
            f.metadata().get_str("general.architecture").unwrap()
        );
        for (ty, (n, bytes)) in &per_type {
            println!(
                "  {ty:>5}: {n:4} tensors, {:8.1} MiB",
                *bytes as f64 / (1 << 20) as f64
            );
        }
        for (ty, n) in expected {
            assert_eq!(
                per_type.get(ty.name()).map(|e| e.0),
                Some(*n),
                "{file}: {ty} count"
            );
        }
        assert_eq!(
            per_type.values().map(|e| e.0).sum::<usize>(),
            expected.iter().map(|e| e.1).sum::<usize>()
        );
        // Dequantize the first tensor of every type, fully, and check the values are finite.
        // Run one matvec per quantized type.
        for (ty, _) in expected {
            let t = f.tensors().iter().find(|t| t.ggml_type == *ty).unwrap();
            let w = f.matrix(&t.name).unwrap();
            let all = w.dequantize_all().unwrap();
            assert!(all.iter().all(|v| v.is_finite()), "{}", t.name);
            if t.dims.len() == 2 {
                let x: Vec<f32> = (0..w.cols())
                    .map(|i| ((i % 13) as f32 - 6.0) * 0.1)
                    .collect();
                let mut y = vec![0f32; w.rows()];
                matvec(&w, &x, &mut y, &pool).unwrap();
                assert!(y.iter().all(|v| v.is_finite()));
                // matvec (activations quantized like ggml) agrees with the f64 dot of the
                // dequantized weights, up to the activation quantization error.
                for r in (0..w.rows()).step_by(w.rows().div_ceil(64)) {
                    let row = &all[r * w.cols()..(r + 1) * w.cols()];
                    let want: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let norm: f64 = row
                        .iter()
                        .zip(&x)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let err = (y[r] as f64 - want).abs();
                    assert!(
                        err <= 0.02 * norm + 1e-5,
                        "{} row {r}: {} vs {want}",
                        t.name,
                        y[r]
                    );
                }
                println!(
                    "  {} {:?} {}: dequantized, matvec y[0] = {}",
                    t.name, t.dims, ty, y[0]
                );
            }
        }
        // the tied Gemma embedding stays quantized: a row lookup
        let emb = f.matrix("token_embd.weight").unwrap();
        let mut row = vec![0f32; emb.cols()];
        emb.dequantize_rows(&[2], &mut row).unwrap();
        assert!(row.iter().any(|&v| v != 0.0));
    }
}
