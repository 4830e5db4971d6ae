//! Entry points for the fuzz targets in `fuzz/` (docs/fuzzing.md): thin calls into parsers that
//! are private to this crate, so they can be fuzzed without becoming part of its API.

/// The request-body reader every route uses (`lenient_json::parse`).
pub fn lenient_json(body: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    crate::lenient_json::parse(body)
}
