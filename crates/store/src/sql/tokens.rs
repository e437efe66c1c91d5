//! Admin API tokens: stored by the SHA-256 of their secret, audited by name and scope only.

use super::adapter::{in_tx, query, Durability, Pool, Row};
use super::audit::{write_event, Ev};
use crate::error::{Conflict, Result, StoreError};
use crate::records::{ApiToken, Timestamp};

fn token_from_row(row: &Row) -> Result<ApiToken> {
    Ok(ApiToken {
        name: row.text("name")?,
        token_sha256: row.text("token_sha256")?,
        scope: row.parse("scope")?,
        created_at: row.time("created_at")?,
    })
}

/// The audit record of a token change: its name and scope, never its secret or hash.
fn token_event<'a>(token: &'a ApiToken, kind: &'a str) -> Ev<'a> {
    Ev {
        device: None,
        operation: None,
        kind,
        source: None,
        detail: format!("token {:?} scope={}", token.name, token.scope),
    }
}

pub(super) async fn create_token(pool: &Pool, token: &ApiToken, now: Timestamp) -> Result<()> {
    in_tx!(pool, Durability::Full, [token], |tx| {
        let inserted = tx
            .fetch_optional(
                query(
                    "INSERT INTO api_tokens (name, token_sha256, scope, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
                )
                .text(&token.name)
                .text(&token.token_sha256)
                .text(token.scope.as_str())
                .time(token.created_at),
            )
            .await?;
        if inserted.is_none() {
            let name = token.name.clone();
            return Err(StoreError::Conflict(Conflict::TokenName(name)));
        }
        write_event(tx, now, token_event(token, "token_created")).await
    })
}

pub(super) async fn bootstrap_token(pool: &Pool, token: &ApiToken, now: Timestamp) -> Result<bool> {
    in_tx!(pool, Durability::Full, [token], |tx| {
        let inserted = tx
            .fetch_optional(
                query(
                    "INSERT INTO api_tokens (name, token_sha256, scope, created_at) \
                     SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM api_tokens) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .text(&token.name)
                .text(&token.token_sha256)
                .text(token.scope.as_str())
                .time(token.created_at),
            )
            .await?;
        if inserted.is_none() {
            return Ok(false);
        }
        write_event(tx, now, token_event(token, "token_created")).await?;
        Ok(true)
    })
}

pub(super) async fn token_by_hash(pool: &Pool, token_sha256: &str) -> Result<Option<ApiToken>> {
    let q = query(
        "SELECT name, token_sha256, scope, created_at FROM api_tokens WHERE token_sha256 = $1",
    )
    .text(token_sha256);
    pool.fetch_optional(q)
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
}

pub(super) async fn revoke_token(pool: &Pool, name: &str, now: Timestamp) -> Result<bool> {
    in_tx!(pool, Durability::Full, [name], |tx| {
        let deleted = tx
            .fetch_optional(
                query(
                    "DELETE FROM api_tokens WHERE name = $1 \
                     RETURNING name, token_sha256, scope, created_at",
                )
                .text(name),
            )
            .await?;
        let Some(row) = deleted else {
            return Ok(false);
        };
        let token = token_from_row(&row)?;
        write_event(tx, now, token_event(&token, "token_revoked")).await?;
        Ok(true)
    })
}

pub(super) async fn tokens(pool: &Pool) -> Result<Vec<ApiToken>> {
    let rows = pool
        .fetch_all(query(
            "SELECT name, token_sha256, scope, created_at FROM api_tokens ORDER BY name",
        ))
        .await?;
    rows.iter().map(token_from_row).collect()
}
