// PLACEHOLDER (scaffolding, to be replaced by the real implementation before landing)
use crate::{GgmlType, TypeTraits};
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q5_K,
    dequantize: |_, _| unimplemented!(),
    quantize: None,
    vec_dot_type: GgmlType::Q8_K,
    vec_dot: None,
};
