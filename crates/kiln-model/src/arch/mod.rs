//! One file per architecture: weight binding and the forward pass, free of device detail.

pub mod gemma3;
pub mod gpt_oss;
pub mod llama;
