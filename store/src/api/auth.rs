//! Who may read the log: every band's members, names and history are in it, so
//! the analysts' API answers only requests that carry one of the configured
//! analyst tokens (`Authorization: Bearer <token>`). With none configured it
//! answers nobody. Health, readiness and metrics stay open for operators.

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// The analysts' tokens, each at least `MIN_TOKEN_LEN` characters.
#[derive(Debug, Clone, Default)]
pub struct Analysts {
    tokens: Arc<Vec<String>>,
}

pub const MIN_TOKEN_LEN: usize = 16;

impl Analysts {
    pub fn new(tokens: &[String]) -> Self {
        Self {
            tokens: Arc::new(tokens.to_vec()),
        }
    }

    /// Whether `presented` is one of the tokens, compared in constant time so
    /// the answer's timing does not spell a token out.
    fn admits(&self, presented: &str) -> bool {
        self.tokens.iter().fold(false, |found, t| {
            found | same(t.as_bytes(), presented.as_bytes())
        })
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require_analyst(
    State(analysts): State<Analysts>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if analysts.tokens.is_empty() {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "the analysts' API is off: set BANDSYNC_ANALYST_TOKENS".into(),
        });
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if analysts.admits(token.trim()) => Ok(next.run(request).await),
        _ => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "an analyst token is required: Authorization: Bearer <token>".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_token_is_admitted() {
        let analysts = Analysts::new(&["a-token-of-sixteen".into(), "another-token-0123".into()]);
        assert!(analysts.admits("a-token-of-sixteen"));
        assert!(analysts.admits("another-token-0123"));
        assert!(!analysts.admits("a-token-of-sixteeN"));
        assert!(!analysts.admits("a-token-of-sixtee"), "a prefix");
        assert!(!analysts.admits(""));
        assert!(!Analysts::default().admits(""));
    }
}
