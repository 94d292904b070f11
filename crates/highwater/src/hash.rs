//! The digests dlt uses for identifiers, child row ids and dedup hashes.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use shake::{ExtendableOutput, Shake128, Update, XofReader};

/// base64 (standard alphabet, no padding) of the first `len` bytes of shake_128(`data`).
pub fn shake128_b64(data: &[u8], len: usize) -> String {
    let mut hasher = Shake128::default();
    hasher.update(data);
    let mut reader = hasher.finalize_xof();
    // Every digest dlt takes is short: one for a child row, so on the stack.
    let mut digest = [0u8; SHORT_DIGEST];
    if len > SHORT_DIGEST {
        let mut out = vec![0u8; len];
        reader.read(&mut out);
        return STANDARD_NO_PAD.encode(out);
    }
    reader.read(&mut digest[..len]);
    let mut text = [0u8; SHORT_DIGEST * 4 / 3 + 4];
    match STANDARD_NO_PAD
        .encode_slice(&digest[..len], &mut text)
        .map(|n| std::str::from_utf8(&text[..n]).map(str::to_owned))
    {
        Ok(Ok(encoded)) => encoded,
        _ => STANDARD_NO_PAD.encode(&digest[..len]),
    }
}

/// The longest digest [`shake128_b64`] keeps on the stack.
const SHORT_DIGEST: usize = 32;

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
        // Short digests are encoded on the stack, long ones on the heap: the same text.
        assert_eq!(shake128_b64(b"abc", 4), "WIEJLQ");
        assert_eq!(
            shake128_b64(b"abc", 40),
            STANDARD_NO_PAD.encode({
                let mut reader = {
                    let mut h = Shake128::default();
                    h.update(b"abc");
                    h.finalize_xof()
                };
                let mut out = [0u8; 40];
                reader.read(&mut out);
                out
            })
        );
        assert_ne!(random_row_id(), random_row_id());
    }
}
