//! ggml tensor element types: ids, block sizes and byte sizes.

use std::fmt;

/// A ggml tensor element type, with the numeric ids used in GGUF files.
///
/// Block sizes and bytes per block follow ggml's `type_traits` table. Ids that ggml removed
/// (4, 5, 31–33, 36–38) are not representable.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit float.
    F32 = 0,
    /// IEEE half float.
    F16 = 1,
    /// 4-bit, 32 per block, scale.
    Q4_0 = 2,
    /// 4-bit, 32 per block, scale and min.
    Q4_1 = 3,
    /// 5-bit, 32 per block, scale.
    Q5_0 = 6,
    /// 5-bit, 32 per block, scale and min.
    Q5_1 = 7,
    /// 8-bit, 32 per block, scale.
    Q8_0 = 8,
    /// 8-bit, 32 per block, scale and scaled sum.
    Q8_1 = 9,
    /// 2-bit k-quant (256 per super-block).
    Q2_K = 10,
    /// 3-bit k-quant.
    Q3_K = 11,
    /// 4-bit k-quant.
    Q4_K = 12,
    /// 5-bit k-quant.
    Q5_K = 13,
    /// 6-bit k-quant.
    Q6_K = 14,
    /// 8-bit k-quant (activations), f32 scale and 16-element block sums.
    Q8_K = 15,
    /// i-quant 2-bit xxs.
    IQ2_XXS = 16,
    /// i-quant 2-bit xs.
    IQ2_XS = 17,
    /// i-quant 3-bit xxs.
    IQ3_XXS = 18,
    /// i-quant 1-bit s.
    IQ1_S = 19,
    /// i-quant 4-bit non-linear.
    IQ4_NL = 20,
    /// i-quant 3-bit s.
    IQ3_S = 21,
    /// i-quant 2-bit s.
    IQ2_S = 22,
    /// i-quant 4-bit xs.
    IQ4_XS = 23,
    /// 8-bit integer.
    I8 = 24,
    /// 16-bit integer.
    I16 = 25,
    /// 32-bit integer.
    I32 = 26,
    /// 64-bit integer.
    I64 = 27,
    /// 64-bit float.
    F64 = 28,
    /// i-quant 1-bit m.
    IQ1_M = 29,
    /// bfloat16.
    BF16 = 30,
    /// ternary 1.69-bit.
    TQ1_0 = 34,
    /// ternary 2-bit.
    TQ2_0 = 35,
    /// microscaling fp4.
    MXFP4 = 39,
}

/// Number of elements in a k-quant super-block.
pub const QK_K: usize = 256;
/// Number of elements in a legacy (`Q4_0`, `Q5_0`, `Q8_0`, ...) block.
pub const QK32: usize = 32;

impl GgmlType {
    /// Every known type, in id order.
    pub const ALL: [GgmlType; 32] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2_K,
        Self::Q3_K,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::Q8_K,
        Self::IQ2_XXS,
        Self::IQ2_XS,
        Self::IQ3_XXS,
        Self::IQ1_S,
        Self::IQ4_NL,
        Self::IQ3_S,
        Self::IQ2_S,
        Self::IQ4_XS,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F64,
        Self::IQ1_M,
        Self::BF16,
        Self::TQ1_0,
        Self::TQ2_0,
        Self::MXFP4,
    ];

    /// The type with ggml id `id`, or `None` for an unknown / removed id.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// The ggml numeric id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Number of elements per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | I8 | I16 | I32 | I64 | F64 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 => QK32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S
            | IQ3_S | IQ2_S | IQ4_XS | IQ1_M | TQ1_0 | TQ2_0 => QK_K,
        }
    }

    /// Number of bytes per block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            IQ2_XXS => 66,
            IQ2_XS => 74,
            IQ3_XXS => 98,
            IQ1_S => 50,
            IQ4_NL => 18,
            IQ3_S => 110,
            IQ2_S => 82,
            IQ4_XS => 136,
            I8 => 1,
            I16 => 2,
            I32 => 4,
            I64 => 8,
            F64 => 8,
            IQ1_M => 56,
            BF16 => 2,
            TQ1_0 => 54,
            TQ2_0 => 66,
            MXFP4 => 17,
        }
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a multiple of the block size
    /// (or the size overflows).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size())
    }

    /// ggml's name for the type (`"q4_K"`, `"f32"`, ...).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q8_1 => "q8_1",
            Q2_K => "q2_K",
            Q3_K => "q3_K",
            Q4_K => "q4_K",
            Q5_K => "q5_K",
            Q6_K => "q6_K",
            Q8_K => "q8_K",
            IQ2_XXS => "iq2_xxs",
            IQ2_XS => "iq2_xs",
            IQ3_XXS => "iq3_xxs",
            IQ1_S => "iq1_s",
            IQ4_NL => "iq4_nl",
            IQ3_S => "iq3_s",
            IQ2_S => "iq2_s",
            IQ4_XS => "iq4_xs",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            F64 => "f64",
            IQ1_M => "iq1_m",
            BF16 => "bf16",
            TQ1_0 => "tq1_0",
            TQ2_0 => "tq2_0",
            MXFP4 => "mxfp4",
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_removed_ids_are_unknown() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 40, 1000] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
        assert_eq!(GgmlType::Q6_K.id(), 14);
        assert_eq!(GgmlType::BF16.id(), 30);
    }

    #[test]
    fn row_bytes_follow_block_layout() {
        assert_eq!(GgmlType::Q8_0.row_bytes(896), Some(28 * 34));
        assert_eq!(GgmlType::Q5_0.row_bytes(640), Some(20 * 22));
        assert_eq!(GgmlType::Q4_K.row_bytes(4864), Some(19 * 144));
        assert_eq!(GgmlType::Q6_K.row_bytes(896), None);
        assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
        assert_eq!(GgmlType::BF16.row_bytes(5), Some(10));
    }
}
