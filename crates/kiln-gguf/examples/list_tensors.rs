//! Opens a GGUF file, prints a few header facts and its tensor table, and with a tensor name also
//! dequantizes that tensor's first row (through `kiln-quant`).
//!
//! ```sh
//! cargo run -p kiln-gguf --example list_tensors -- MODEL.gguf
//! cargo run -p kiln-gguf --example list_tensors -- MODEL.gguf blk.0.ffn_gate_exps.weight
//! ```

use std::process::ExitCode;

use kiln_gguf::GgufFile;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: list_tensors MODEL.gguf [TENSOR]");
        return ExitCode::from(2);
    };
    match run(path, args.get(1).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("list_tensors: {path}: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &str, tensor: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    // Memory-maps the file and validates all of it; nothing after this can fail on its structure.
    let f = GgufFile::open(path)?;
    println!("GGUF v{}, alignment {}, {} metadata keys", f.version(), f.alignment(), f.metadata().len());
    // `get_opt_*`: Ok(None) for a missing key, an error for a key of the wrong type.
    if let Some(arch) = f.get_opt_str("general.architecture")? {
        println!("architecture: {arch}");
    }

    let mut bytes = 0;
    for t in f.tensors() {
        // Shapes are in ggml order: shape[0] is the row length.
        println!("{:<36} {:<6} {:<20} {:>10} bytes", t.name, t.ty.name(), format!("{:?}", t.shape), t.size);
        bytes += t.size;
    }
    println!("{} tensors, {bytes} bytes", f.tensors().len());

    if let Some(name) = tensor {
        let t = f.tensor(name).ok_or_else(|| format!("no tensor {name}"))?;
        let row_len = t.shape.first().copied().unwrap_or(1) as usize;
        let row_bytes = t.ty.row_bytes(row_len as u64)? as usize;
        // Zero-copy: a slice of the memory map.
        let data = f.tensor_data(t);
        let mut row = vec![0f32; row_len];
        kiln_quant::dequantize(t.ty, &data[..row_bytes], &mut row)?;
        let shown: Vec<String> = row.iter().take(8).map(|x| format!("{x}")).collect();
        println!("{name}: first row ({row_len} values, {row_bytes} bytes of {}): [{}, …]", t.ty, shown.join(", "));
    }
    Ok(())
}
