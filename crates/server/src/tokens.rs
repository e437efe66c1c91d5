//! Bearer tokens of the admin API.
//!
//! A token is 32 random bytes shown once, as `capf_<64 hex digits>`; the database keeps only
//! its SHA-256 (the secret is random and long, so a plain hash is enough: there is nothing to
//! guess). On first start capf creates the token `admin` and writes it to
//! `<data-dir>/admin.token` (mode 0600), which the CLI reads by default.

use std::path::{Path, PathBuf};

use rand::RngCore;
use sha2::{Digest, Sha256};

use capf_model::clock::Clock;
use capf_model::operation::TokenScope;
use capf_store::{ApiToken, Store, StoreError, Timestamp};

/// Name of the token file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// Name of the token created on first start.
pub const BOOTSTRAP_NAME: &str = "admin";
const PREFIX: &str = "capf_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name must be 1-64 characters of letters, digits, '.', '_' or '-'")]
    BadName,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A token just made: the secret (to show once) and what is stored.
pub struct NewToken {
    pub secret: String,
    pub record: ApiToken,
}

// The secret never appears in debug output.
impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

pub fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadName)
    }
}

/// Makes a new random token.
pub fn generate(name: &str, scope: TokenScope, now: Timestamp) -> Result<NewToken, TokenError> {
    check_name(name)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", hex::encode(bytes));
    Ok(NewToken {
        record: ApiToken {
            name: name.to_string(),
            token_sha256: hash(&secret),
            scope,
            created_at: now,
        },
        secret,
    })
}

/// What the database stores for a token secret.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// Looks a presented token up; `None` when it is unknown.
pub async fn lookup(store: &dyn Store, secret: &str) -> Result<Option<ApiToken>, StoreError> {
    // A token of the wrong shape cannot exist: no database round trip for it.
    if !secret.starts_with(PREFIX) || secret.len() != PREFIX.len() + 64 {
        return Ok(None);
    }
    store.token_by_hash(&hash(secret)).await
}

/// First start: when the database holds no token at all, creates `admin` and writes its
/// secret to `<data_dir>/admin.token`. Returns the file written, if any. Safe when several
/// nodes start at once: only one creates the token (the others find one exists).
pub async fn bootstrap(
    store: &dyn Store,
    data_dir: &Path,
    clock: &dyn Clock,
) -> Result<Option<PathBuf>, TokenError> {
    let token = generate(BOOTSTRAP_NAME, TokenScope::Admin, clock.now())?;
    if !store.bootstrap_token(&token.record, clock.now()).await? {
        return Ok(None);
    }
    let path = data_dir.join(TOKEN_FILE);
    let written = {
        let path = path.clone();
        let contents = format!("{}\n", token.secret);
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            capf_pki::files::write_atomic(&path, contents.as_bytes(), 0o600)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    if let Err(source) = written {
        // Without the file nobody knows the secret: drop the token so the next start tries
        // again instead of leaving an API nobody can use.
        let _ = store.revoke_token(BOOTSTRAP_NAME, clock.now()).await;
        return Err(TokenError::Write { path, source });
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate("a", TokenScope::Admin, chrono::Utc::now()).unwrap();
        let b = generate("b", TokenScope::ReadOnly, chrono::Utc::now()).unwrap();
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 5 + 64);
        assert_eq!(a.record.token_sha256, hash(&a.secret));
        assert!(!format!("{a:?}").contains(&a.secret));
        assert!(!a.record.token_sha256.contains(&a.secret[5..]));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-bot_1.x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("with space").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
