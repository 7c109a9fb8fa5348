//! Secrets as the services' credential files hold them: the SHA-256 of each
//! secret in hex, never the secret itself (`printf %s "$secret" |
//! sha256sum`). Ingest's API keys and device tokens, the registry's users
//! and the query API's API keys are all checked this way.

use sha2::{Digest as _, Sha256};

/// The SHA-256 of a secret.
pub type Digest = [u8; 32];

/// The digest of a secret a caller presents.
pub fn digest_of(secret: &str) -> Digest {
    Sha256::digest(secret.as_bytes()).into()
}

/// The digest a credential file gives for the entry `name`.
pub fn parse_digest(name: &str, hex_digits: &str) -> anyhow::Result<Digest> {
    hex::decode(hex_digits)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("'{name}': sha256 must be 64 hex digits"))
}

/// Compares in time independent of where the digests differ, for a
/// digest looked up by name rather than by itself.
pub fn same_digest(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_digest_matches_the_secret_it_was_made_of() {
        // printf %s test | sha256sum
        let file = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let digest = parse_digest("a", file).expect("64 hex digits");
        assert!(same_digest(&digest, &digest_of("test")));
        assert!(!same_digest(&digest, &digest_of("Test")));
        for bad in [
            "",
            "00",
            &file[..63],
            &format!("{file}00"),
            &file.replace('f', "g"),
        ] {
            let e = parse_digest("a", bad).expect_err(bad).to_string();
            assert_eq!(e, "'a': sha256 must be 64 hex digits");
        }
    }
}
