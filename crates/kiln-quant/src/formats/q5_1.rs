// PLACEHOLDER (scaffolding, to be replaced by the real implementation before landing)
use crate::{GgmlType, TypeTraits};
pub const TRAITS: TypeTraits = TypeTraits {
    ty: GgmlType::Q5_1,
    dequantize: |_, _| unimplemented!(),
    quantize: None,
    vec_dot_type: GgmlType::Q8_1,
    vec_dot: None,
};
