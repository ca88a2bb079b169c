//! One module per block format, each exporting its `TRAITS` table entry.

pub mod bf16;
pub mod common;
pub mod f16;
pub mod f32;
mod float_dot;
mod kquant_common;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
