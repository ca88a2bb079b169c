use crate::GgmlType;

/// Errors from the checked entry points of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{ty}: {n} elements is not a whole number of {block_elems}-element blocks")]
    PartialBlock { ty: GgmlType, n: u64, block_elems: usize },
    #[error("{ty}: byte size of {n} elements overflows u64")]
    Overflow { ty: GgmlType, n: u64 },
    #[error("{ty}: {n} elements take {expected} bytes, got {actual}")]
    Length { ty: GgmlType, n: usize, expected: u64, actual: u64 },
    #[error("{ty}: {op} is not supported for this type")]
    Unsupported { ty: GgmlType, op: &'static str },
}
