//! The digests dlt uses for identifiers, child row ids and dedup hashes.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use shake::{ExtendableOutput, Shake128, Update, XofReader};

/// base64 (standard alphabet, no padding) of the first `len` bytes of shake_128(`data`).
pub fn shake128_b64(data: &[u8], len: usize) -> String {
    let mut hasher = Shake128::default();
    hasher.update(data);
    let mut reader = hasher.finalize_xof();
    let mut out = vec![0u8; len];
    reader.read(&mut out);
    STANDARD_NO_PAD.encode(out)
}

/// dlt's `digest128(s, 10)`: the 14-character id of a child row, or of a key hash.
pub fn digest128(s: &str) -> String {
    shake128_b64(s.as_bytes(), 10)
}

/// dlt's random row id: base64 of 10 random bytes without padding (14 characters).
pub fn random_row_id() -> String {
    let bytes: [u8; 10] = rand::random();
    STANDARD_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_have_dlt_lengths() {
        assert_eq!(digest128("abc_events__labels_0"), "AieqksUMDAqmMw");
        assert_eq!(random_row_id().len(), 14);
        assert_ne!(random_row_id(), random_row_id());
    }
}
