//! Hidden states on the wire: a raw little-endian tensor tail after the typed message (never
//! serde). f32 by default, so every greedy answer is byte-identical to a single node whatever the
//! split; f16 halves the bytes per hop but is lossy (answers may then depend on the placement,
//! and values beyond 65,504, which gemma3's residual stream reaches, become infinities).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Element type of hidden states between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WireDtype {
    /// IEEE half precision (2 bytes per value): lossy, answers may depend on the placement.
    F16,
    /// IEEE single precision (4 bytes per value): bit-identical to a single node (the default).
    #[default]
    F32,
}

impl WireDtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            WireDtype::F16 => 2,
            WireDtype::F32 => 4,
        }
    }

    /// Whether hidden states lose precision on this wire (the answer may then depend on where
    /// the model is split).
    pub fn is_lossy(self) -> bool {
        matches!(self, WireDtype::F16)
    }

    /// The warning `run`/`serve` print when a lossy wire is chosen, `None` for an exact one.
    pub fn lossy_warning(self) -> Option<String> {
        self.is_lossy().then(|| {
            format!(
                "warning: hidden states travel as {self} between stages (lossy): answers may depend on the placement"
            )
        })
    }
}

impl std::fmt::Display for WireDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireDtype::F16 => "f16",
            WireDtype::F32 => "f32",
        })
    }
}

impl std::str::FromStr for WireDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(WireDtype::F16),
            "f32" => Ok(WireDtype::F32),
            other => Err(format!(
                "unknown wire dtype `{other}` (expected f16 or f32)"
            )),
        }
    }
}

/// A tail that does not hold the announced tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hidden-state tail has {got} bytes, expected {rows} x {cols} {dtype:?} = {want}")]
pub struct HiddenTailError {
    /// Announced rows (tokens).
    pub rows: usize,
    /// Announced columns (hidden size).
    pub cols: usize,
    /// Announced element type.
    pub dtype: WireDtype,
    /// Bytes expected.
    pub want: usize,
    /// Bytes received.
    pub got: usize,
}

/// Encodes `values` as the raw tail. On the exact f32 wire of a little-endian machine the
/// vector's own buffer becomes the tail (no copy); f16 converts each value.
pub fn encode_hidden(values: Vec<f32>, dtype: WireDtype) -> Bytes {
    match dtype {
        WireDtype::F32 => f32_vec_tail(values),
        WireDtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    }
}

/// The little-endian f32 tail of borrowed values: one copy (for data the sender keeps using,
/// such as a tensor-parallel member's own piece).
pub fn f32_tail(values: &[f32]) -> Bytes {
    if cfg!(target_endian = "little") {
        Bytes::copy_from_slice(bytemuck::cast_slice(values))
    } else {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
}

/// Owns an f32 buffer and shows it as bytes, so a tail can be sent without copying it.
struct F32Buffer(Vec<f32>);

impl AsRef<[u8]> for F32Buffer {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

fn f32_vec_tail(values: Vec<f32>) -> Bytes {
    if cfg!(target_endian = "little") {
        Bytes::from_owner(F32Buffer(values))
    } else {
        f32_tail(&values)
    }
}

/// Decodes a raw tail announced as `rows x cols` values of `dtype`. The f32 wire is one
/// `memcpy` into the returned vector (the tail's bytes need not be aligned).
pub fn decode_hidden(
    tail: &[u8],
    rows: usize,
    cols: usize,
    dtype: WireDtype,
) -> Result<Vec<f32>, HiddenTailError> {
    let want = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(dtype.size()))
        .unwrap_or(usize::MAX);
    if tail.len() != want {
        return Err(HiddenTailError {
            rows,
            cols,
            dtype,
            want,
            got: tail.len(),
        });
    }
    Ok(match dtype {
        WireDtype::F32 => {
            let mut v = vec![0f32; tail.len() / 4];
            bytemuck::cast_slice_mut::<f32, u8>(&mut v).copy_from_slice(tail);
            if cfg!(target_endian = "big") {
                v.iter_mut()
                    .for_each(|x| *x = f32::from_bits(x.to_bits().swap_bytes()));
            }
            v
        }
        WireDtype::F16 => tail
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    })
}

/// Decodes an f32 tail of any whole number of values (a tensor-parallel piece, whose shape
/// travels in its header).
pub fn decode_f32(tail: &[u8]) -> Result<Vec<f32>, HiddenTailError> {
    decode_hidden(tail, tail.len().div_ceil(4), 1, WireDtype::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn f32_round_trip_is_exact() {
        let v = vec![1.0f32, -0.0, f32::MIN_POSITIVE, 3.25e7, -1.5e-3, 0.1];
        let t = encode_hidden(v.clone(), WireDtype::F32);
        assert_eq!(t.len(), 24);
        let back = decode_hidden(&t, 2, 3, WireDtype::F32).unwrap();
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn f32_decodes_from_an_unaligned_tail() {
        let v = [1.5f32, -2.0, 7.25];
        let mut buf = vec![0u8];
        buf.extend_from_slice(&f32_tail(&v));
        let back = decode_hidden(&buf[1..], 3, 1, WireDtype::F32).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn f16_halves_the_bytes_and_rounds_to_nearest() {
        let v = vec![1.0f32, 0.1, 65504.0, -2.5];
        let t = encode_hidden(v.clone(), WireDtype::F16);
        assert_eq!(t.len(), 8);
        let back = decode_hidden(&t, 1, 4, WireDtype::F16).unwrap();
        assert_eq!(back[0], 1.0);
        assert_eq!(back[2], 65504.0);
        assert_eq!(back[3], -2.5);
        assert!((back[1] - 0.1).abs() < 1e-4 && back[1] != 0.1);
    }

    #[test]
    fn wrong_length_and_overflow_are_errors() {
        let e = decode_hidden(&[0u8; 7], 1, 2, WireDtype::F32).unwrap_err();
        assert_eq!((e.want, e.got), (8, 7));
        assert!(decode_hidden(&[], usize::MAX, 2, WireDtype::F16).is_err());
        assert!(decode_hidden(&[], 0, 2, WireDtype::F16).unwrap().is_empty());
        assert_eq!(decode_f32(&[0u8; 6]).unwrap_err().got, 6);
    }

    #[test]
    fn default_is_exact_and_only_lossy_wires_warn() {
        assert_eq!(WireDtype::default(), WireDtype::F32);
        assert!(WireDtype::F32.lossy_warning().is_none());
        let w = WireDtype::F16.lossy_warning().unwrap();
        assert!(w.contains("answers may depend on the placement"), "{w}");
        assert_eq!(
            WireDtype::F16.to_string().parse::<WireDtype>(),
            Ok(WireDtype::F16)
        );
    }

    #[test]
    fn dtype_parses() {
        assert_eq!("F16".parse::<WireDtype>(), Ok(WireDtype::F16));
        assert_eq!("f32".parse::<WireDtype>(), Ok(WireDtype::F32));
        assert!("bf16".parse::<WireDtype>().is_err());
    }

    proptest! {
        #[test]
        fn any_f32_tensor_round_trips(v in proptest::collection::vec(any::<f32>(), 0..64)) {
            let t = encode_hidden(v.clone(), WireDtype::F32);
            prop_assert_eq!(&t[..], &f32_tail(&v)[..]);
            let back = decode_f32(&t).unwrap();
            prop_assert_eq!(
                back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
