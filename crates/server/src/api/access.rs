//! Bearer-token access to `/api/`: extractors that a handler names to say what it needs.
//! A handler taking [`AdminAccess`] cannot run for a read-only token.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

use super::problem::Problem;
use super::ApiState;
use crate::tokens;
use capf_model::operation::TokenScope;
use capf_store::ApiToken;

/// Any valid token: may read.
#[derive(Debug)]
pub struct ReadAccess(pub ApiToken);

/// An admin token: may change things.
#[derive(Debug)]
pub struct AdminAccess(pub ApiToken);

impl ReadAccess {
    pub fn is_admin(&self) -> bool {
        self.0.scope == TokenScope::Admin
    }
}

async fn token_of(parts: &Parts, state: &ApiState) -> Result<ApiToken, Problem> {
    let secret = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(Problem::Unauthorized)?;
    tokens::lookup(state.store.as_ref(), secret)
        .await?
        .ok_or(Problem::Unauthorized)
}

impl FromRequestParts<ApiState> for ReadAccess {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Problem> {
        token_of(parts, state).await.map(ReadAccess)
    }
}

impl FromRequestParts<ApiState> for AdminAccess {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Problem> {
        let token = token_of(parts, state).await?;
        if token.scope != TokenScope::Admin {
            return Err(Problem::Forbidden);
        }
        Ok(AdminAccess(token))
    }
}
