//! GGUF container (being written).
