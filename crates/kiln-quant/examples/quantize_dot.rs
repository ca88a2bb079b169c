//! Decodes one MXFP4 block by hand-written bytes (the worked example of docs/MXFP4.md), then
//! quantizes a row of floats to a block format with ggml's reference quantizer, dequantizes it
//! back, and takes the dot product with activations the way the CPU matrix product does.
//!
//! ```sh
//! cargo run -p kiln-quant --example quantize_dot            # q4_0
//! cargo run -p kiln-quant --example quantize_dot -- q4_K    # any type with a quantizer
//! ```

use std::process::ExitCode;

use kiln_quant::{GgmlType, dequantize, quantize, quantize_activations, traits, vec_dot};

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_else(|| "q4_0".into());
    let Some(ty) = GgmlType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(&name)) else {
        eprintln!("quantize_dot: unknown type {name:?}");
        return ExitCode::from(2);
    };
    match run(ty) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quantize_dot: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(ty: GgmlType) -> Result<(), kiln_quant::QuantError> {
    // One MXFP4 block: scale byte 0x80 (2^1), then 16 bytes of 4-bit E2M1 codes.
    let mut block = [0u8; 17];
    block[..4].copy_from_slice(&[0x80, 0x92, 0x7f, 0x08]);
    let mut values = [0f32; 32];
    dequantize(GgmlType::MXFP4, &block, &mut values)?;
    println!("mxfp4 block: values 0..3 = {:?}, 16..19 = {:?}", &values[..3], &values[16..19]);

    // A row of 256 values (whole blocks of every type, K-quants included).
    let n = 256;
    let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
    let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos()).collect();

    let mut q = vec![0u8; ty.row_bytes(n as u64)? as usize];
    quantize(ty, &w, &mut q)?; // ggml's quantize_row_*_ref, bit for bit
    let mut back = vec![0f32; n];
    dequantize(ty, &q, &mut back)?;
    let max_err = w.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("{ty}: {n} values in {} bytes ({} bits per weight), max |error| {max_err}", q.len(), ty.bits_per_weight());

    // Activations go into the type's `vec_dot_type` (Q8_0, Q8_1, Q8_K or the float type) first.
    let act = quantize_activations(ty, &x)?;
    let dot = vec_dot(ty, &q, &act)?;
    let exact: f64 = w.iter().zip(&x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
    let act_ty = traits(ty).map(|t| t.vec_dot_type).unwrap_or(ty);
    println!("dot with {act_ty} activations: {dot} (float64 of the unquantized rows: {exact:.6})");
    Ok(())
}
