//! Encryption at rest for account secrets (passwords, session cookies): AES-256-GCM from
//! aws-lc-rs (already Trawl's TLS provider, so no second crypto library is built), with a fresh
//! random nonce per value and the value's owner as associated data, so a ciphertext copied to
//! another account's row does not decrypt.
//!
//! Sealed format: `1` (format version) ‖ 12-byte nonce ‖ ciphertext ‖ 16-byte tag.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

const FORMAT_V1: u8 = 1;
/// Key length in bytes (written as 64 hex characters in configuration).
pub const KEY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the encryption key must be 64 hex characters (32 bytes); got {0} characters")]
    KeyLength(usize),
    #[error("the encryption key must be hexadecimal (0-9, a-f)")]
    KeyNotHex,
    #[error("cannot decrypt: wrong key, a value moved to another owner, or tampered data")]
    Decrypt,
    #[error("sealed value is malformed (too short or unknown format)")]
    Malformed,
    #[error("the system random generator failed")]
    Random,
}

/// The well-known key `--insecure-dev-key` selects. Anything sealed with it is as good as clear.
pub const INSECURE_DEV_KEY: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Why no key is available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no encryption key for account secrets: set secrets.key (TRAWL_SECRETS__KEY) to 64 hex \
         characters (`trawl accounts new-key` prints one), or pass --insecure-dev-key for a \
         throwaway setup"
    )]
    Missing,
    #[error("secrets.key: {0}")]
    Invalid(CryptoError),
}

/// A key that seals and opens secrets.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(********)")
    }
}

impl SecretBox {
    /// A key from its 64-character hex form.
    pub fn from_hex(hex: &str) -> Result<Self, CryptoError> {
        let hex = hex.trim();
        if hex.len() != KEY_LEN * 2 {
            return Err(CryptoError::KeyLength(hex.len()));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or(CryptoError::KeyNotHex)?, 16)
                .map_err(|_| CryptoError::KeyNotHex)?;
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| CryptoError::KeyNotHex)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// The key from configuration (`secrets.key`). Without one, `insecure_dev_key` selects a
    /// fixed, publicly known key ([`INSECURE_DEV_KEY`]) for demos and tests; otherwise it is an
    /// error that says how to make a key.
    pub fn from_config(
        key: Option<&crate::secret::Secret>,
        insecure_dev_key: bool,
    ) -> Result<Self, KeyError> {
        match (key, insecure_dev_key) {
            (Some(k), _) => Self::from_hex(k.expose()).map_err(KeyError::Invalid),
            (None, true) => {
                tracing::warn!(
                    "using the insecure development key: account secrets are NOT protected at rest"
                );
                Self::from_hex(INSECURE_DEV_KEY).map_err(KeyError::Invalid)
            }
            (None, false) => Err(KeyError::Missing),
        }
    }

    /// A new random key in hex, for `trawl` to print when an operator needs one.
    pub fn generate_hex() -> Result<String, CryptoError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| CryptoError::Random)?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Encrypts `plaintext` for `owner` (e.g. `account:natgeo:session`).
    pub fn seal(&self, plaintext: &[u8], owner: &str) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut body,
            )
            .map_err(|_| CryptoError::Random)?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Decrypts a value sealed for `owner`.
    pub fn open(&self, sealed: &[u8], owner: &str) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != FORMAT_V1 {
            return Err(CryptoError::Malformed);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut body,
            )
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretBox {
        SecretBox::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_owner() {
        let b = key();
        let sealed = b.seal(b"sessionid=secret", "account:a:session").unwrap();
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "ciphertext hides the value"
        );
        assert_eq!(
            b.open(&sealed, "account:a:session").unwrap(),
            b"sessionid=secret"
        );
        assert_eq!(
            b.open(&sealed, "account:b:session"),
            Err(CryptoError::Decrypt)
        );
        let other = SecretBox::from_hex(&"cd".repeat(32)).unwrap();
        assert_eq!(
            other.open(&sealed, "account:a:session"),
            Err(CryptoError::Decrypt)
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            b.open(&tampered, "account:a:session"),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            b.open(&sealed[..10], "account:a:session"),
            Err(CryptoError::Malformed)
        );
        assert_ne!(
            b.seal(b"x", "o").unwrap(),
            b.seal(b"x", "o").unwrap(),
            "a fresh nonce every time"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(
            SecretBox::from_hex("abc").unwrap_err(),
            CryptoError::KeyLength(3)
        );
        assert_eq!(
            SecretBox::from_hex(&"zz".repeat(32)).unwrap_err(),
            CryptoError::KeyNotHex
        );
        let generated = SecretBox::generate_hex().unwrap();
        assert_eq!(generated.len(), 64);
        assert!(SecretBox::from_hex(&generated).is_ok());
        assert_eq!(format!("{:?}", key()), "SecretBox(********)");
    }
}
