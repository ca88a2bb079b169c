//! Builds the tokenizer of a GGUF file from its metadata (no weights are read), tokenizes a text,
//! and turns the ids back into text, all at once and token by token.
//!
//! ```sh
//! cargo run -p kiln-tokenizer --example tokenize -- MODEL.gguf "Hello, world"
//! ```

use std::process::ExitCode;

use kiln_tokenizer::{Detokenizer, Message, Tokenizer};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(text)) = (args.first(), args.get(1)) else {
        eprintln!("usage: tokenize MODEL.gguf TEXT");
        return ExitCode::from(2);
    };
    match run(path, text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenize: {path}: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &str, text: &str) -> Result<(), kiln_tokenizer::TokenizerError> {
    let tok = Tokenizer::from_gguf_path(path)?;
    println!(
        "{:?} ({} {}), {} tokens, BOS {:?}, EOS {:?}, end of generation {:?}, adds BOS: {}",
        tok.kind(),
        tok.model(),
        tok.pre().unwrap_or("-"),
        tok.vocab_size(),
        tok.bos_id(),
        tok.eos_id(),
        tok.eog_ids(),
        tok.add_bos()
    );

    // add_special: BOS/EOS as the vocabulary asks; parse_special: "<|im_start|>" becomes the token.
    let ids = tok.encode(text, true, true)?;
    println!("ids: {ids:?}");
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| tok.token_to_piece(id, true).map(|p| String::from_utf8_lossy(&p).into_owned()))
        .collect::<Result<_, _>>()?;
    println!("pieces: {pieces:?}");
    // special = false leaves control tokens (BOS, chat markers) out of the text.
    println!("decoded: {:?}", tok.decode(&ids, false)?);

    // Streaming: only whole UTF-8 characters come out; the pieces add up to `decode`.
    let mut detok = Detokenizer::new(&tok);
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&detok.push(id)?);
    }
    streamed.push_str(&detok.flush());
    println!("streamed: {streamed:?}");

    if tok.chat_template().is_some() {
        let prompt = tok.render_chat(&[Message::new("user", text)], true)?;
        println!("chat prompt: {prompt:?}");
    }
    Ok(())
}
