//! The tensor index entry and the shape/size rules the reader and the writer share.

use kiln_quant::GgmlType;

use crate::GgufError;

/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Tensor names must be shorter than this many bytes (ggml's `GGML_MAX_NAME`, which counts the
/// terminating NUL).
pub const MAX_TENSOR_NAME: usize = 64;

/// One entry of the tensor index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    /// Storage type.
    pub ty: GgmlType,
    /// Dimensions in ggml order: `shape[0]` is the row length (the contiguous one). At most
    /// [`MAX_DIMS`]; may be empty (a scalar).
    pub shape: Vec<u64>,
    /// Start of the data, relative to the data section ([`GgufFile::data_offset`](crate::GgufFile::data_offset)).
    pub offset: u64,
    /// Bytes of data (`ty.row_bytes(shape[0])` × the other dimensions).
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).unwrap_or(u64::MAX)
    }

    /// Number of rows: elements / row length (1 for a scalar, 0 for an empty tensor).
    pub fn n_rows(&self) -> u64 {
        self.shape.iter().skip(1).try_fold(1u64, |n, &d| n.checked_mul(d)).unwrap_or(u64::MAX)
    }
}

/// Checks a tensor's shape against ggml's rules and its type's block layout, and returns its byte
/// size. Mirrors the checks of ggml's `gguf_init_from_file`, in the same order: dimension count,
/// no dimension ≥ 2⁶³, element count fits `int64`, row a whole number of blocks, byte size fits.
/// Zero-sized dimensions are allowed (ggml allows them); the tensor then takes 0 bytes.
pub(crate) fn tensor_size(name: &str, ty: GgmlType, shape: &[u64]) -> Result<u64, GgufError> {
    if shape.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name.to_owned(),
            n_dims: shape.len() as u64,
            max: MAX_DIMS as u64,
        });
    }
    check_dims(name, shape)?;
    let n_elements = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| GgufError::ElementCountOverflow { tensor: name.to_owned(), shape: shape.to_vec() })?;
    let ne0 = shape.first().copied().unwrap_or(1);
    let block_elems = ty.block_elems();
    if ne0 % block_elems as u64 != 0 {
        return Err(GgufError::PartialBlock { tensor: name.to_owned(), ty, ne0, block_elems });
    }
    if n_elements == 0 {
        return Ok(0);
    }
    let overflow = || GgufError::TensorSizeOverflow { tensor: name.to_owned(), ty, shape: shape.to_vec() };
    let row = ty.row_bytes(ne0).map_err(|_| overflow())?;
    // `ne0` divides `n_elements` exactly: it is a factor of the product and non-zero here.
    let size = row.checked_mul(n_elements / ne0).ok_or_else(overflow)?;
    if usize::try_from(size).is_err() {
        return Err(overflow());
    }
    Ok(size)
}

/// Each dimension must be < 2⁶³ (ggml reads them as `int64_t` and rejects negatives).
pub(crate) fn check_dims(name: &str, shape: &[u64]) -> Result<(), GgufError> {
    match shape.iter().position(|&d| d > i64::MAX as u64) {
        None => Ok(()),
        Some(dim) => Err(GgufError::NegativeDim { tensor: name.to_owned(), dim, value: shape[dim] }),
    }
}

/// Tensor names must be shorter than [`MAX_TENSOR_NAME`] bytes.
pub(crate) fn check_name(name: &str) -> Result<(), GgufError> {
    if name.len() >= MAX_TENSOR_NAME {
        return Err(GgufError::TensorNameTooLong {
            name: name.to_owned(),
            len: name.len() as u64,
            max: MAX_TENSOR_NAME as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_layout_table() {
        // Hand-worked: 2 rows of 256 Q4_K elements = 2 blocks of 144 bytes.
        assert_eq!(tensor_size("t", GgmlType::Q4_K, &[256, 2]).unwrap(), 288);
        // 3 × 4 × 5 f32 = 240 bytes; a scalar is one element.
        assert_eq!(tensor_size("t", GgmlType::F32, &[3, 4, 5]).unwrap(), 240);
        assert_eq!(tensor_size("t", GgmlType::F32, &[]).unwrap(), 4);
        // Zero-sized dimension: allowed, no bytes, but the row must still be whole blocks.
        assert_eq!(tensor_size("t", GgmlType::Q8_0, &[32, 0, 7]).unwrap(), 0);
        assert_eq!(tensor_size("t", GgmlType::Q8_0, &[0, 5]).unwrap(), 0);
        assert!(matches!(tensor_size("t", GgmlType::Q8_0, &[31, 0]), Err(GgufError::PartialBlock { .. })));
    }

    #[test]
    fn overflow_and_limits() {
        assert!(matches!(
            tensor_size("t", GgmlType::F32, &[1 << 32, 1 << 31]),
            Err(GgufError::ElementCountOverflow { .. })
        ));
        // 2^62 f32 elements fit int64 as a count but not as bytes.
        assert!(matches!(tensor_size("t", GgmlType::F32, &[1 << 62]), Err(GgufError::TensorSizeOverflow { .. })));
        assert!(matches!(tensor_size("t", GgmlType::F32, &[1 << 63]), Err(GgufError::NegativeDim { dim: 0, .. })));
        assert!(matches!(tensor_size("t", GgmlType::F32, &[1, 1, 1, 1, 1]), Err(GgufError::TooManyDims { .. })));
        let info = TensorInfo { name: "x".into(), ty: GgmlType::F32, shape: vec![4, 3, 2], offset: 0, size: 96 };
        assert_eq!((info.n_elements(), info.n_rows()), (24, 6));
    }
}
