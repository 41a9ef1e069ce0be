//! Member tokens: `kid "." base64url(claims JSON) "." base64url(HMAC-SHA256)`,
//! the MAC taken over `kid "." claims`. All gateways share the keys, so any
//! gateway admits any member; the token names a stable member, so reconnecting
//! with it is the same member.
//!
//! A token expires (`exp`, Unix seconds): a connected member is handed a fresh
//! one on every connect and after half its lifetime (`ServerMsg::Token`), so only
//! a device away for longer than the lifetime must join again. The key id says
//! which key signed it: one key signs, older ones still verify until their
//! tokens have lapsed, so the secret can be rotated without logging a band out
//! (docs/security.md, "Rotating secrets").
//! (jsonwebtoken's HMAC needs its rust_crypto feature, which drags in RSA and
//! elliptic-curve crates; two well-kept primitives do the job here.)

use bandsync_nats::{DisplayName, MemberId, SessionId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest key id: a token carries it in the clear.
pub const MAX_KEY_ID: usize = 16;
/// Shortest secret accepted.
pub const MIN_SECRET: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub session: SessionId,
    pub member: MemberId,
    pub name: DisplayName,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was signed by a key this gateway no longer knows")]
    UnknownKey,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

/// A key that signs or verifies tokens.
#[derive(Clone)]
pub struct Key {
    id: String,
    secret: Vec<u8>,
}

impl Key {
    /// `id` is letters, digits, `-` or `_` (at most 16); `secret` 16+ bytes.
    pub fn new(id: &str, secret: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !id.is_empty()
                && id.len() <= MAX_KEY_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "a token key id is 1-{MAX_KEY_ID} letters, digits, '-' or '_' (got {id:?})"
        );
        anyhow::ensure!(
            secret.len() >= MIN_SECRET,
            "the secret of token key {id:?} must be at least {MIN_SECRET} bytes"
        );
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_vec(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `id:secret`, as `--token-old-keys` lists them.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let (id, secret) = spec
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("a token key is written id:secret"))?;
        Self::new(id, secret.as_bytes())
    }

    fn mac(&self, kid: &str, body: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(kid.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        mac
    }
}

/// The gateways' token keys: the first signs, all verify.
#[derive(Clone)]
pub struct TokenKeys {
    signing: Key,
    old: Vec<Key>,
    lifetime: Duration,
}

impl TokenKeys {
    pub fn new(signing: Key, old: Vec<Key>, lifetime: Duration) -> Self {
        Self {
            signing,
            old,
            lifetime,
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for `member`, valid for the lifetime from `now`.
    pub fn sign(
        &self,
        session: &SessionId,
        member: &MemberId,
        name: &DisplayName,
        now: SystemTime,
    ) -> (String, Claims) {
        let claims = Claims {
            session: session.clone(),
            member: member.clone(),
            name: name.clone(),
            exp: unix_secs(now + self.lifetime),
        };
        (self.sign_claims(&claims), claims)
    }

    /// The token the signing key makes of exactly these claims.
    pub fn sign_claims(&self, claims: &Claims) -> String {
        let key = &self.signing;
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let sig = URL_SAFE_NO_PAD.encode(key.mac(&key.id, &body).finalize().into_bytes());
        format!("{}.{body}.{sig}", key.id)
    }

    /// The claims of a token signed by one of the keys and not expired at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let mut parts = token.splitn(3, '.');
        let (Some(kid), Some(body), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let key = std::iter::once(&self.signing)
            .chain(&self.old)
            .find(|k| k.id == kid)
            .ok_or(TokenError::UnknownKey)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        key.mac(kid, body)
            .verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= unix_secs(now) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn ids() -> (SessionId, MemberId, DisplayName) {
        (
            SessionId::parse("s1").expect("valid"),
            MemberId::parse("m1").expect("valid"),
            DisplayName::parse("Ana").expect("valid"),
        )
    }

    fn key(id: &str, secret: &[u8]) -> Key {
        Key::new(id, secret).expect("valid key")
    }

    fn keys(signing: Key, old: Vec<Key>) -> TokenKeys {
        TokenKeys::new(signing, old, DAY)
    }

    #[test]
    fn signed_tokens_verify_and_tampering_is_caught() {
        let now = SystemTime::now();
        let keys = keys(key("k1", b"0123456789abcdef"), vec![]);
        let (s, m, n) = ids();
        let (token, claims) = keys.sign(&s, &m, &n, now);
        assert_eq!(keys.verify(&token, now), Ok(claims.clone()));
        let other = TokenKeys::new(key("k1", b"another secret!!"), vec![], DAY);
        assert_eq!(other.verify(&token, now), Err(TokenError::BadSignature));
        let mut parts = token.split('.');
        let (kid, _, sig) = (parts.next(), parts.next(), parts.next());
        let forged = URL_SAFE_NO_PAD
            .encode(br#"{"session":"s1","member":"boss","name":"X","exp":99999999999}"#);
        let forged = format!("{}.{forged}.{}", kid.expect("kid"), sig.expect("sig"));
        assert_eq!(keys.verify(&forged, now), Err(TokenError::BadSignature));
        // The key id is signed too: the same body and MAC under another id fail.
        let renamed = token.replacen("k1.", "k2.", 1);
        let both = TokenKeys::new(
            key("k1", b"0123456789abcdef"),
            vec![key("k2", b"0123456789abcdef")],
            DAY,
        );
        assert_eq!(both.verify(&renamed, now), Err(TokenError::BadSignature));
        assert_eq!(keys.verify("k1.abc", now), Err(TokenError::Malformed));
        assert_eq!(keys.verify("no-dots", now), Err(TokenError::Malformed));
        assert_eq!(keys.verify("k9.a.b", now), Err(TokenError::UnknownKey));
    }

    #[test]
    fn tokens_expire_after_their_lifetime() {
        let now = SystemTime::now();
        let keys = keys(key("k1", b"0123456789abcdef"), vec![]);
        let (s, m, n) = ids();
        let (token, claims) = keys.sign(&s, &m, &n, now);
        assert_eq!(claims.exp, unix_secs(now + DAY));
        let almost = now + DAY - Duration::from_secs(2);
        assert!(keys.verify(&token, almost).is_ok());
        assert_eq!(keys.verify(&token, now + DAY), Err(TokenError::Expired));
    }

    #[test]
    fn an_old_key_verifies_until_it_is_dropped() {
        let now = SystemTime::now();
        let (s, m, n) = ids();
        let old = key("k1", b"the first secret");
        let (token, _) = keys(old.clone(), vec![]).sign(&s, &m, &n, now);
        let rotated = keys(key("k2", b"the second secret"), vec![old]);
        assert!(rotated.verify(&token, now).is_ok());
        let (fresh, _) = rotated.sign(&s, &m, &n, now);
        assert!(fresh.starts_with("k2."), "{fresh}");
        let done = keys(key("k2", b"the second secret"), vec![]);
        assert_eq!(done.verify(&token, now), Err(TokenError::UnknownKey));
        assert!(done.verify(&fresh, now).is_ok());
    }

    /// The documented recipe (docs/protocol.md), made outside Rust: `kid`,
    /// base64url of the claims JSON, base64url of HMAC-SHA256 over `kid.body`.
    #[test]
    fn a_token_made_by_the_documented_recipe_verifies() {
        let token = "k1.eyJzZXNzaW9uIjoiczEiLCJtZW1iZXIiOiJtMSIsIm5hbWUiOiJBbmEiLCJleHAiOjE4MDAwMDAwMDB9.aajVoAknmMlA8p8JDVhBl0_BW75GZ8viPoMb_rNjyWk";
        let keys = keys(key("k1", b"0123456789abcdef-fuzz"), vec![]);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let claims = keys.verify(token, now).expect("verifies");
        assert_eq!((claims.member.as_str(), claims.exp), ("m1", 1_800_000_000));
        assert_eq!(keys.sign_claims(&claims), token, "one spelling");
    }

    #[test]
    fn keys_are_checked() {
        assert!(Key::parse("k1:0123456789abcdef").is_ok());
        assert!(Key::parse("k1:short").is_err());
        assert!(Key::parse("no-colon").is_err());
        assert!(Key::parse("k.1:0123456789abcdef").is_err());
        assert!(Key::parse(":0123456789abcdef").is_err());
    }
}
