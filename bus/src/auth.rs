//! Department authentication: bearer tokens, kept in configuration only as SHA-256 hashes.
//! Shared by every HTTP API a department calls (intake, e-licence store, dossiers).

use std::collections::HashMap;

use crate::{config::TokenConfig, Department};
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of a token, as configuration stores it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    let bytes: Vec<u8> =
        uuid::Uuid::new_v4().into_bytes().into_iter().chain(uuid::Uuid::new_v4().into_bytes()).collect();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token no department has.
    Unknown,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<String, (Department, Option<String>)>,
}

impl Tokens {
    /// Reads `intake.tokens`; an error names the entry and what is wrong with it.
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        for (i, token) in tokens.iter().enumerate() {
            let department: Department = token
                .department
                .parse()
                .map_err(|_| format!("intake.tokens[{i}].department: '{}' is not a department", token.department))?;
            let hex_ok = token.sha256.len() == 64
                && token.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(format!("intake.tokens[{i}].sha256: expected 64 lower-case hex digits (the SHA-256 of the token, not the token)"));
            }
            by_hash.insert(token.sha256.clone(), (department, token.label.clone()));
        }
        Ok(Self { by_hash })
    }

    /// The department an `Authorization` header value authenticates, and the token's label.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<(Department, Option<&str>), AuthError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        // Hashing first makes the lookup's timing independent of how much of a guess matches.
        match self.by_hash.get(&hash_token(token)) {
            Some((department, label)) => Ok((*department, label.as_deref())),
            None => Err(AuthError::Unknown),
        }
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// How many distinct tokens are configured.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_by_hash_only() {
        let token = new_token();
        assert_eq!(token.len(), 64);
        let config =
            vec![TokenConfig { department: "tax".into(), sha256: hash_token(&token), label: Some("tax-core".into()) }];
        let tokens = Tokens::from_config(&config).unwrap();
        assert_eq!(tokens.authenticate(Some(&format!("Bearer {token}"))), Ok((Department::Tax, Some("tax-core"))));
        assert_eq!(tokens.authenticate(Some("Bearer nope")), Err(AuthError::Unknown));
        assert_eq!(tokens.authenticate(Some(&token)), Err(AuthError::Missing), "the Bearer scheme is required");
        assert_eq!(tokens.authenticate(None), Err(AuthError::Missing));
        let plain = vec![TokenConfig { department: "tax".into(), sha256: token.to_uppercase(), label: None }];
        assert!(Tokens::from_config(&plain).unwrap_err().starts_with("intake.tokens[0].sha256"));
        let unknown = vec![TokenConfig { department: "police".into(), sha256: hash_token("x"), label: None }];
        assert!(Tokens::from_config(&unknown).unwrap_err().contains("'police' is not a department"));
    }
}
