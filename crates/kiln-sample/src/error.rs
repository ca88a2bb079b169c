use thiserror::Error;

/// Why a set of sampling parameters or stop strings was refused.
///
/// Every variant describes invalid *user input*; the gRPC server maps all of them to
/// `INVALID_ARGUMENT` and can show the `Display` text to the client as it is.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplingError {
    /// A numeric parameter is outside its range (or NaN / infinite).
    #[error("invalid sampling parameter {name} = {value}: expected {expected}")]
    InvalidParameter {
        /// Field name as in [`SamplingParams`](crate::SamplingParams) (`"top_p"`, ...).
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// The accepted range in words.
        expected: &'static str,
    },
    /// A stop string is empty (it would match before any text and stop every request at once).
    #[error("stop string #{index} is empty")]
    EmptyStopString {
        /// Position of the empty string in the list the caller gave.
        index: usize,
    },
}
