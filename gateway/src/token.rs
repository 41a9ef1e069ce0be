//! Member tokens: `base64url(claims JSON) "." base64url(HMAC-SHA256)`, signed with
//! the secret all gateways share, so any gateway can admit any member. The
//! token names a stable member: reconnecting with it is the same member.
//! (jsonwebtoken's HMAC needs its rust_crypto feature, which drags in RSA and
//! elliptic-curve crates; two well-kept primitives do the job here.)

use bandsync_nats::{DisplayName, MemberId, SessionId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub session: SessionId,
    pub member: MemberId,
    pub name: DisplayName,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature does not match")]
    BadSignature,
}

#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            session: SessionId::parse("s1").expect("valid"),
            member: MemberId::parse("m1").expect("valid"),
            name: DisplayName::parse("Ana").expect("valid"),
        }
    }

    #[test]
    fn signed_tokens_verify_and_tampering_is_caught() {
        let key = TokenKey::new(b"0123456789abcdef");
        let token = key.sign(&claims());
        assert_eq!(key.verify(&token), Ok(claims()));
        assert_eq!(
            TokenKey::new(b"another secret!!").verify(&token),
            Err(TokenError::BadSignature)
        );
        let (body, sig) = token.split_once('.').expect("two parts");
        let forged = URL_SAFE_NO_PAD.encode(br#"{"session":"s1","member":"boss","name":"X"}"#);
        assert_eq!(
            key.verify(&format!("{forged}.{sig}")),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key.verify(body), Err(TokenError::Malformed));
        assert_eq!(key.verify("a.b.c"), Err(TokenError::Malformed));
    }
}
