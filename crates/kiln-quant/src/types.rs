//! The ggml tensor type ids and their storage layout (elements per block, bytes per block).
//!
//! This is the part of the format table that a container reader needs: it knows every type a
//! GGUF file may name, including the ones this crate cannot compute with (the IQ family, integer
//! tensors). Arithmetic lives in [`crate::TypeTraits`].

use std::fmt;

use crate::QuantError;

/// A ggml tensor type, numbered as in `ggml.h` (`enum ggml_type`).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Elements in one super-block of the K-quant family.
pub const QK_K: usize = 256;

/// Storage layout of one type: how many elements a block holds and how many bytes it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Elements per block (1 for plain scalar types).
    pub block_elems: usize,
    /// Bytes per block.
    pub block_bytes: usize,
}

impl GgmlType {
    /// Every type this table knows, in id order.
    pub const ALL: [GgmlType; 35] = {
        use GgmlType::*;
        [
            F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ2_XXS, IQ2_XS, IQ3_XXS,
            IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, I8, I16, I32, I64, F64, IQ1_M, BF16, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0,
            Q2_0,
        ]
    };

    /// The type with ggml id `id`, or `None` for ids ggml does not define (4, 5, 31–33, 36–38, ≥ 43).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// The ggml id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type (`"q4_K"`, `"mxfp4"`, …), as `ggml_type_name` prints it.
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
            NVFP4 => "nvfp4",
            Q1_0 => "q1_0",
            Q2_0 => "q2_0",
        }
    }

    /// Block layout, as `ggml_blck_size` / `ggml_type_size` report it for this ggml version.
    pub fn layout(self) -> Layout {
        use GgmlType::*;
        let (block_elems, block_bytes) = match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            // ggml's block_q8_1 is {f16 d, f16 s, i8 qs[32]}: 36 bytes (gguf-py's table says 40).
            Q8_1 => (32, 2 + 2 + 32),
            Q2_K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Q5_K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Q6_K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => (QK_K, 2 + QK_K / 4),
            IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => (32, 2 + 16),
            IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            BF16 => (1, 2),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 1 + 16),
            NVFP4 => (64, 4 + 32),
            Q1_0 => (128, 2 + 16),
            Q2_0 => (64, 2 + 16),
        };
        Layout { block_elems, block_bytes }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        self.layout().block_elems
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.layout().block_bytes
    }

    /// Bytes taken by a row of `n` elements. Fails if `n` is not a whole number of blocks or the
    /// size overflows `u64`.
    pub fn row_bytes(self, n: u64) -> Result<u64, QuantError> {
        let Layout { block_elems, block_bytes } = self.layout();
        if !n.is_multiple_of(block_elems as u64) {
            return Err(QuantError::PartialBlock { ty: self, n, block_elems });
        }
        (n / block_elems as u64).checked_mul(block_bytes as u64).ok_or(QuantError::Overflow { ty: self, n })
    }

    /// Bits per weight of the format (block bytes × 8 / block elements).
    pub fn bits_per_weight(self) -> f64 {
        let l = self.layout();
        (l.block_bytes * 8) as f64 / l.block_elems as f64
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
    fn ids_round_trip_and_gaps_are_unknown() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        for gap in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(gap), None, "id {gap}");
        }
    }

    #[test]
    fn sizes_match_ggml_structs() {
        // Hand-checked against the structs in ggml-common.h.
        assert_eq!(GgmlType::Q4_K.block_bytes(), 144);
        assert_eq!(GgmlType::Q6_K.block_bytes(), 210);
        assert_eq!(GgmlType::Q8_K.block_bytes(), 292);
        assert_eq!(GgmlType::Q2_K.block_bytes(), 84);
        assert_eq!(GgmlType::Q3_K.block_bytes(), 110);
        assert_eq!(GgmlType::Q5_K.block_bytes(), 176);
        assert_eq!(GgmlType::MXFP4.block_bytes(), 17);
        assert_eq!(GgmlType::Q8_1.block_bytes(), 36);
        assert_eq!(GgmlType::Q4_0.row_bytes(64).unwrap(), 36);
        assert!(GgmlType::Q4_0.row_bytes(33).is_err());
        assert!(GgmlType::F32.row_bytes(u64::MAX).is_err());
    }
}
