//! API tokens: what a bearer may do (scopes), how tokens are made, and how a presented token is
//! checked against the configuration, which holds only their SHA-256 hashes.
//!
//! A token is `trawl_` and 64 hex digits (256 random bits), so a hash without salt or stretching
//! is enough: nobody can guess a preimage of a random 256-bit value, unlike a password. Checks
//! compare hashes in constant time and look at every configured token, so response times say
//! nothing about which token, or which part of one, was close.

use std::collections::BTreeSet;
use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// What a token lets its bearer do. `admin` includes the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// List and show jobs, statistics and limits.
    Read,
    /// Submit jobs (one or a batch), cancel and retry them.
    Submit,
    /// Pause and resume kinds; everything else too.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Submit, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[scheduler.tokens]]` entry of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (shown in logs and in 403 answers; never the token).
    pub name: String,
    /// Hex SHA-256 of the token, as `trawl token new` prints it.
    pub sha256: String,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token {name:?}: sha256 must be 64 hex digits (the hash `trawl token new` prints)")]
    BadHash { name: String },
    #[error("token {name:?}: give it at least one scope (read, submit, admin)")]
    NoScopes { name: String },
    #[error("token names must be 1 to 64 characters of letters, digits, '-', '_' or '.': {0:?}")]
    BadName(String),
    #[error("two tokens are named {0:?}")]
    DuplicateName(String),
    #[error("two tokens have the same hash ({0:?} and {1:?})")]
    DuplicateHash(String, String),
}

/// The holder of a token that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    pub name: String,
    pub scopes: BTreeSet<Scope>,
}

impl Bearer {
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

struct Known {
    hash: [u8; 32],
    bearer: Bearer,
}

/// Every token the scheduler accepts.
pub struct TokenSet {
    known: Vec<Known>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.known.iter().map(|k| &k.bearer.name))
            .finish()
    }
}

fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TokenSet {
    /// The configured tokens; `legacy` is `scheduler.api_token` (a plaintext token with every
    /// scope, kept for development set-ups), hashed here and named `api_token`.
    pub fn new(entries: &[TokenEntry], legacy: Option<&str>) -> Result<Self, TokenError> {
        let mut known: Vec<Known> = Vec::new();
        for entry in entries {
            if !valid_name(&entry.name) {
                return Err(TokenError::BadName(entry.name.clone()));
            }
            let hash = parse_hex(&entry.sha256).ok_or_else(|| TokenError::BadHash {
                name: entry.name.clone(),
            })?;
            if entry.scopes.is_empty() {
                return Err(TokenError::NoScopes {
                    name: entry.name.clone(),
                });
            }
            known.push(Known {
                hash,
                bearer: Bearer {
                    name: entry.name.clone(),
                    scopes: entry.scopes.iter().copied().collect(),
                },
            });
        }
        if let Some(token) = legacy {
            known.push(Known {
                hash: sha256(token),
                bearer: Bearer {
                    name: "api_token".into(),
                    scopes: Scope::ALL.into_iter().collect(),
                },
            });
        }
        for (i, a) in known.iter().enumerate() {
            for b in &known[i + 1..] {
                if a.bearer.name == b.bearer.name {
                    return Err(TokenError::DuplicateName(a.bearer.name.clone()));
                }
                if a.hash == b.hash {
                    return Err(TokenError::DuplicateHash(
                        a.bearer.name.clone(),
                        b.bearer.name.clone(),
                    ));
                }
            }
        }
        Ok(Self { known })
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The bearer of `presented`, if it is a configured token. Every entry is compared, each in
    /// constant time.
    pub fn verify(&self, presented: &str) -> Option<&Bearer> {
        let hash = sha256(presented);
        let mut found = None;
        for known in &self.known {
            let mut diff = 0u8;
            for (x, y) in known.hash.iter().zip(hash.iter()) {
                diff |= x ^ y;
            }
            if diff == 0 {
                found = Some(&known.bearer);
            }
        }
        found
    }
}

/// A fresh token and its hash: (`trawl_<64 hex>`, hex SHA-256).
pub fn generate() -> Result<(String, String), aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    let token = format!("trawl_{}", hex(&bytes));
    let hash = hex(&sha256(&token));
    Ok((token, hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex SHA-256 of a token, as configured in `sha256`.
pub fn hash_hex(token: &str) -> String {
    hex(&sha256(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str, scopes: &[Scope]) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            sha256: hash_hex(token),
            scopes: scopes.to_vec(),
        }
    }

    #[test]
    fn a_token_is_known_by_its_hash_and_carries_its_scopes() {
        let set = TokenSet::new(
            &[
                entry("reader", "r-token", &[Scope::Read]),
                entry("ops", "o-token", &[Scope::Admin]),
            ],
            None,
        )
        .unwrap();
        let reader = set.verify("r-token").unwrap();
        assert_eq!(reader.name, "reader");
        assert!(reader.may(Scope::Read));
        assert!(!reader.may(Scope::Submit));
        assert!(!reader.may(Scope::Admin));
        let ops = set.verify("o-token").unwrap();
        assert!(Scope::ALL.iter().all(|&s| ops.may(s)), "admin may all");
        assert!(set.verify("r-toke").is_none());
        assert!(set.verify("").is_none());
        assert!(
            set.verify(&hash_hex("r-token")).is_none(),
            "the hash is no token"
        );
    }

    #[test]
    fn the_legacy_token_has_every_scope() {
        let set = TokenSet::new(&[], Some("plain")).unwrap();
        assert_eq!(set.verify("plain").unwrap().name, "api_token");
        assert!(TokenSet::new(&[], None).unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        let bad_hash = TokenEntry {
            sha256: "abc".into(),
            ..entry("ci", "x", &[Scope::Read])
        };
        assert_eq!(
            TokenSet::new(&[bad_hash], None).unwrap_err(),
            TokenError::BadHash { name: "ci".into() }
        );
        assert!(matches!(
            TokenSet::new(&[entry("ci", "x", &[])], None),
            Err(TokenError::NoScopes { .. })
        ));
        assert!(matches!(
            TokenSet::new(&[entry("bad name", "x", &[Scope::Read])], None),
            Err(TokenError::BadName(_))
        ));
        assert!(matches!(
            TokenSet::new(
                &[
                    entry("a", "x", &[Scope::Read]),
                    entry("a", "y", &[Scope::Read])
                ],
                None
            ),
            Err(TokenError::DuplicateName(_))
        ));
        assert!(matches!(
            TokenSet::new(&[entry("a", "x", &[Scope::Read])], Some("x")),
            Err(TokenError::DuplicateHash(..))
        ));
    }

    #[test]
    fn generated_tokens_verify_against_their_printed_hash() {
        let (token, hash) = generate().unwrap();
        assert!(token.starts_with("trawl_") && token.len() == 70);
        assert_eq!(hash, hash_hex(&token));
        let set = TokenSet::new(
            &[TokenEntry {
                name: "new".into(),
                sha256: hash,
                scopes: vec![Scope::Submit],
            }],
            None,
        )
        .unwrap();
        assert!(set.verify(&token).is_some());
        assert_ne!(generate().unwrap().0, token);
    }
}
