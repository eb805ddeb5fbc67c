//! The log-probability file of `llama-perplexity --kl-divergence-base FILE` (llama.cpp's
//! `tools/perplexity/perplexity.cpp`), read and written byte for byte.
//!
//! Layout (little-endian):
//! - the 8 bytes `_logits_`;
//! - `n_ctx`, `n_vocab`, `n_chunk` as `i32`;
//! - the `n_chunk * n_ctx` evaluated token ids as `i32` (the text's tokens, BOS included when
//!   the model adds one; not the BOS that replaces the first token of every later chunk);
//! - per chunk, one record per scored position (`n_ctx - 1 - n_ctx/2` of them: positions
//!   `n_ctx/2 .. n_ctx-2`, each predicting the next token), each `nv = 2*((n_vocab+1)/2) + 4`
//!   `u16` long: an `f32` scale and an `f32` minimum log-probability (the first 4 `u16`), then one
//!   `u16` per vocabulary entry (padded to an even count). Entry `i` stands for the
//!   log-probability `scale * q[i] + min_log_prob`; logits more than 16 below the maximum are
//!   clamped to that minimum (`q = 0`).

use std::io::{Read, Write};

/// The 8-byte magic at the start of the file.
pub const MAGIC: &[u8; 8] = b"_logits_";

/// Errors of reading or writing a log-probability file.
#[derive(Debug, thiserror::Error)]
pub enum LogitsFileError {
    /// Reading or writing failed (a short file reads as this).
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a llama.cpp log-probability file.
    #[error("not a llama-perplexity --kl-divergence-base file (no `_logits_` magic)")]
    BadMagic,
    /// A header value that cannot be right.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// A record does not belong to this file's vocabulary.
    #[error("record has {got} values, the file's vocabulary has {want}")]
    RecordSize {
        /// Values of the file's records.
        want: usize,
        /// Values given.
        got: usize,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogitsFileError {
    let what = what.into();
    move |source| LogitsFileError::Io { what, source }
}

/// The header of a log-probability file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogitsHeader {
    /// Context (chunk) length in tokens.
    pub n_ctx: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Number of chunks.
    pub n_chunk: usize,
    /// The `n_chunk * n_ctx` evaluated token ids.
    pub tokens: Vec<u32>,
}

impl LogitsHeader {
    /// Scored positions per chunk: `n_ctx - 1 - n_ctx/2`.
    pub fn positions_per_chunk(&self) -> usize {
        scored_per_chunk(self.n_ctx)
    }

    /// `u16` values per record (`2*((n_vocab+1)/2) + 4`).
    pub fn record_len(&self) -> usize {
        2 * self.n_vocab.div_ceil(2) + 4
    }
}

/// Scored positions per chunk of `n_ctx` tokens: `n_ctx - 1 - n_ctx/2` (llama-perplexity).
pub fn scored_per_chunk(n_ctx: usize) -> usize {
    n_ctx.saturating_sub(1 + n_ctx / 2)
}

/// One position's base log-probabilities, quantized to 16 bits.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseLogProbs {
    /// Step between quantization levels.
    pub scale: f32,
    /// Log-probability of level 0 (everything at or below `max - 16`).
    pub min_log_prob: f32,
    /// One level per vocabulary entry.
    pub q: Vec<u16>,
}

impl BaseLogProbs {
    /// Log-probability of token `i` (llama.cpp evaluates it in f32).
    pub fn log_prob(&self, i: usize) -> f32 {
        self.scale * f32::from(self.q[i]) + self.min_log_prob
    }

    /// Quantizes one logits row the way llama-perplexity does before writing it.
    pub fn quantize(logits: &[f32]) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = logits
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min)
            .max(max - 16.0);
        let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
        let log_sum_exp = sum.ln() as f32;
        let min_log_prob = min - max - log_sum_exp;
        let scale = (max - min) / 65535.0;
        let q = if scale != 0.0 {
            let inv = 1.0 / scale;
            logits
                .iter()
                .map(|&l| {
                    if l > min {
                        (inv * (l - min)).round_ties_even() as u16
                    } else {
                        0
                    }
                })
                .collect()
        } else {
            vec![0; logits.len()]
        };
        Self {
            scale,
            min_log_prob,
            q,
        }
    }
}

/// Reads a log-probability file record by record (a gemma3 record is 512 KiB).
pub struct LogitsReader<R: Read> {
    header: LogitsHeader,
    input: R,
    buf: Vec<u8>,
    read: usize,
}

impl<R: Read> std::fmt::Debug for LogitsReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitsReader")
            .field("n_ctx", &self.header.n_ctx)
            .field("n_vocab", &self.header.n_vocab)
            .field("n_chunk", &self.header.n_chunk)
            .field("records_read", &self.read)
            .finish()
    }
}

fn read_i32(input: &mut impl Read, what: &str) -> Result<i32, LogitsFileError> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b).map_err(io(what))?;
    Ok(i32::from_le_bytes(b))
}

fn positive(v: i32, what: &str) -> Result<usize, LogitsFileError> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| LogitsFileError::BadHeader(format!("{what} is {v}")))
}

impl<R: Read> LogitsReader<R> {
    /// Reads the magic, the sizes and the tokens.
    pub fn new(mut input: R) -> Result<Self, LogitsFileError> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(io("magic"))?;
        if &magic != MAGIC {
            return Err(LogitsFileError::BadMagic);
        }
        let n_ctx = positive(read_i32(&mut input, "n_ctx")?, "n_ctx")?;
        let n_vocab = positive(read_i32(&mut input, "n_vocab")?, "n_vocab")?;
        let n_chunk = positive(read_i32(&mut input, "n_chunk")?, "n_chunk")?;
        if n_vocab > 1 << 24 || n_ctx > 1 << 24 || n_chunk > 1 << 24 {
            return Err(LogitsFileError::BadHeader(format!(
                "implausible sizes n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}"
            )));
        }
        let n_tokens = n_ctx * n_chunk;
        let mut raw = vec![0u8; n_tokens * 4];
        input.read_exact(&mut raw).map_err(io("tokens"))?;
        let mut tokens = Vec::with_capacity(n_tokens);
        for c in raw.chunks_exact(4) {
            let t = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let t = u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < n_vocab)
                .ok_or_else(|| {
                    LogitsFileError::BadHeader(format!("token {t} outside the vocabulary"))
                })?;
            tokens.push(t);
        }
        let header = LogitsHeader {
            n_ctx,
            n_vocab,
            n_chunk,
            tokens,
        };
        Ok(Self {
            buf: vec![0u8; header.record_len() * 2],
            header,
            input,
            read: 0,
        })
    }

    /// The header.
    pub fn header(&self) -> &LogitsHeader {
        &self.header
    }

    /// The next position's record, in file order (chunk by chunk, position by position);
    /// `None` after the last one.
    pub fn next_record(&mut self) -> Result<Option<BaseLogProbs>, LogitsFileError> {
        let total = self.header.n_chunk * self.header.positions_per_chunk();
        if self.read == total {
            return Ok(None);
        }
        let k = self.read;
        self.input
            .read_exact(&mut self.buf)
            .map_err(io(format!("record {k} of {total}")))?;
        self.read += 1;
        let b = &self.buf;
        let scale = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let min_log_prob = f32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let q = b[8..8 + 2 * self.header.n_vocab]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(Some(BaseLogProbs {
            scale,
            min_log_prob,
            q,
        }))
    }
}

/// Writes a log-probability file in llama-perplexity's format (tests, and edgeray-vs-edgeray
/// comparisons): the header first, then the records in order.
pub struct LogitsWriter<W: Write> {
    header: LogitsHeader,
    out: W,
}

impl<W: Write> LogitsWriter<W> {
    /// Writes the magic, the sizes and the tokens (`tokens.len()` must be `n_ctx * n_chunk`).
    pub fn new(mut out: W, header: LogitsHeader) -> Result<Self, LogitsFileError> {
        if header.tokens.len() != header.n_ctx * header.n_chunk {
            return Err(LogitsFileError::BadHeader(format!(
                "{} tokens for {} chunks of {}",
                header.tokens.len(),
                header.n_chunk,
                header.n_ctx
            )));
        }
        let mut head = MAGIC.to_vec();
        for v in [header.n_ctx, header.n_vocab, header.n_chunk] {
            let v = i32::try_from(v)
                .map_err(|_| LogitsFileError::BadHeader(format!("{v} does not fit an i32")))?;
            head.extend(v.to_le_bytes());
        }
        for &t in &header.tokens {
            head.extend((t as i32).to_le_bytes());
        }
        out.write_all(&head).map_err(io("header"))?;
        Ok(Self { header, out })
    }

    /// Appends one position's record.
    pub fn write_record(&mut self, r: &BaseLogProbs) -> Result<(), LogitsFileError> {
        if r.q.len() != self.header.n_vocab {
            return Err(LogitsFileError::RecordSize {
                want: self.header.n_vocab,
                got: r.q.len(),
            });
        }
        let mut b = Vec::with_capacity(self.header.record_len() * 2);
        b.extend(r.scale.to_le_bytes());
        b.extend(r.min_log_prob.to_le_bytes());
        for &q in &r.q {
            b.extend(q.to_le_bytes());
        }
        b.resize(self.header.record_len() * 2, 0);
        self.out.write_all(&b).map_err(io("record"))
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W, LogitsFileError> {
        self.out.flush().map_err(io("flush"))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n_vocab: usize) -> LogitsHeader {
        LogitsHeader {
            n_ctx: 6,
            n_vocab,
            n_chunk: 2,
            tokens: (0..12).map(|i| i % n_vocab as u32).collect(),
        }
    }

    #[test]
    fn layout_is_llama_cpps() {
        // n_vocab 3 (odd): records of 2*2 + 4 = 8 u16; 6/2 = 3 first scored, 6-1-3 = 2 per chunk.
        let h = header(3);
        assert_eq!(h.record_len(), 8);
        assert_eq!(h.positions_per_chunk(), 2);
        let mut w = LogitsWriter::new(Vec::new(), h.clone()).unwrap();
        let r = BaseLogProbs {
            scale: 0.5,
            min_log_prob: -3.0,
            q: vec![1, 2, 65535],
        };
        for _ in 0..4 {
            w.write_record(&r).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(&bytes[..8], b"_logits_");
        assert_eq!(&bytes[8..20], &[6, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&bytes[20..24], &[0, 0, 0, 0]);
        assert_eq!(&bytes[24..28], &[1, 0, 0, 0]);
        let rec = 20 + 12 * 4;
        assert_eq!(&bytes[rec..rec + 4], &0.5f32.to_le_bytes());
        assert_eq!(&bytes[rec + 4..rec + 8], &(-3.0f32).to_le_bytes());
        assert_eq!(&bytes[rec + 8..rec + 16], &[1, 0, 2, 0, 255, 255, 0, 0]);
        assert_eq!(bytes.len(), rec + 4 * 16);

        let mut rd = LogitsReader::new(&bytes[..]).unwrap();
        assert_eq!(rd.header(), &h);
        for _ in 0..4 {
            assert_eq!(rd.next_record().unwrap().unwrap(), r);
        }
        assert!(rd.next_record().unwrap().is_none());
        assert_eq!(r.log_prob(2), 0.5 * 65535.0 - 3.0);
    }

    #[test]
    fn quantization_round_trips_log_probs() {
        let logits = [2.0f32, -1.0, 0.5, -40.0, 2.0];
        let r = BaseLogProbs::quantize(&logits);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let want = f64::from(l) - z.ln();
            let got = f64::from(r.log_prob(i));
            if l > 2.0 - 16.0 {
                assert!((got - want).abs() < 2e-4, "{i}: {got} vs {want}");
            } else {
                assert!(
                    (got - (2.0 - 16.0 - z.ln())).abs() < 1e-5,
                    "clamped to max - 16"
                );
            }
        }
        assert_eq!(r.q[0], 65535);
        assert_eq!(r.q[3], 0);
        // A flat row: scale 0, every level 0, each log-prob ln(1/n).
        let r = BaseLogProbs::quantize(&[1.0; 4]);
        assert_eq!((r.scale, r.q.clone()), (0.0, vec![0; 4]));
        assert!((r.log_prob(1) - 0.25f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(matches!(
            LogitsReader::new(&b"_logitz_\x06\0\0\0"[..]),
            Err(LogitsFileError::BadMagic)
        ));
        assert!(matches!(
            LogitsReader::new(&b"_logits_\x06\0"[..]),
            Err(LogitsFileError::Io { .. })
        ));
        let mut bad = b"_logits_".to_vec();
        for v in [6i32, -3, 2] {
            bad.extend(v.to_le_bytes());
        }
        assert!(matches!(
            LogitsReader::new(&bad[..]),
            Err(LogitsFileError::BadHeader(_))
        ));
        // A token outside the vocabulary.
        let mut h = header(3);
        h.tokens[5] = 7;
        let mut bytes = Vec::new();
        LogitsWriter::new(&mut bytes, h).unwrap();
        assert!(matches!(
            LogitsReader::new(&bytes[..]),
            Err(LogitsFileError::BadHeader(_))
        ));
        // A file cut inside its records.
        let mut w = LogitsWriter::new(Vec::new(), header(3)).unwrap();
        w.write_record(&BaseLogProbs::quantize(&[0.0, 1.0, 2.0]))
            .unwrap();
        let bytes = w.finish().unwrap();
        let mut rd = LogitsReader::new(&bytes[..]).unwrap();
        assert!(rd.next_record().unwrap().is_some());
        assert!(matches!(rd.next_record(), Err(LogitsFileError::Io { .. })));
        // A record of the wrong vocabulary is refused by the writer.
        let mut w = LogitsWriter::new(Vec::new(), header(3)).unwrap();
        assert!(matches!(
            w.write_record(&BaseLogProbs::quantize(&[0.0, 1.0])),
            Err(LogitsFileError::RecordSize { want: 3, got: 2 })
        ));
    }
}
