//! Identifiers built at the edges ("parse, don't validate"). Every id that can
//! appear in a NATS subject or KV key is restricted to `[A-Za-z0-9_-]`, so no id
//! can smuggle a `.`, `*` or `>` into a subject.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub why: String,
}

impl InvalidValue {
    pub fn new(what: &'static str, why: impl Into<String>) -> Self {
        Self {
            what,
            why: why.into(),
        }
    }
}

fn check_token(what: &'static str, s: &str, max: usize) -> Result<(), InvalidValue> {
    if s.is_empty() || s.len() > max {
        return Err(InvalidValue::new(
            what,
            format!("must be 1..={max} characters"),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(InvalidValue::new(
            what,
            "only letters, digits, '_' and '-' are allowed",
        ));
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidValue> {
                let s = s.into();
                check_token($what, &s, $max)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(
    /// A session, e.g. `k3j9x2m4q8wz`; safe as a subject token.
    SessionId, "session id", 64
);
token_id!(
    /// A stable member of a session; a reconnect with the same token is the same member.
    MemberId, "member id", 64
);
token_id!(
    /// A command's unique id, used for de-duplication on the bus.
    CommandId, "command id", 64
);
token_id!(
    /// A gateway process (its connections are named `<gateway>/<n>`).
    GatewayId, "gateway id", 64
);

/// One WebSocket connection of a member: `<gateway id>/<n>`, where `n` counts the
/// gateway's connections. The state machine keeps a member's live one so a late
/// `bye` from an older socket cannot disconnect a member who reconnected; the
/// ticker reads the gateway from it to notice members of a dead gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConnId(String);

impl ConnId {
    pub fn new(gateway: &GatewayId, n: u64) -> Self {
        Self(format!("{gateway}/{n}"))
    }

    pub fn parse(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        let (gateway, n) = s
            .split_once('/')
            .ok_or_else(|| InvalidValue::new("connection id", "must be <gateway>/<n>"))?;
        GatewayId::parse(gateway)?;
        n.parse::<u64>()
            .map_err(|_| InvalidValue::new("connection id", "must end in /<number>"))?;
        Ok(Self(s))
    }

    /// The gateway serving this connection.
    pub fn gateway(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(g, _)| g)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConnId {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(s)
    }
}

impl From<ConnId> for String {
    fn from(v: ConnId) -> String {
        v.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Letters that cannot be mistaken for each other when read aloud or off a screen.
pub const JOIN_CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Length of a new join code: 31^8 ≈ 853 billion codes, so that guessing one
/// against the per-address limit of wrong codes takes a botnet weeks
/// (docs/security.md, "Join codes").
pub const JOIN_CODE_LEN: usize = 8;
/// Length of the codes of sessions made before codes grew to 8 characters:
/// still accepted, so that a band in an older session can be joined.
pub const LEGACY_JOIN_CODE_LEN: usize = 6;

/// Human-friendly code a band member types to join, e.g. `K7MQ2XBD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JoinCode(String);

impl JoinCode {
    /// Accepts lower case, spaces and dashes (`k7m-q2x`), as people type them.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let code: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let len_ok = code.len() == JOIN_CODE_LEN || code.len() == LEGACY_JOIN_CODE_LEN;
        if !len_ok || !code.bytes().all(|b| JOIN_CODE_ALPHABET.contains(&b)) {
            return Err(InvalidValue::new(
                "join code",
                format!("must be {JOIN_CODE_LEN} letters and digits like K7MQ-2XBD"),
            ));
        }
        Ok(Self(code))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for JoinCode {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(&s)
    }
}
impl From<JoinCode> for String {
    fn from(v: JoinCode) -> String {
        v.0
    }
}
impl fmt::Display for JoinCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: trimmed, 1..=40 characters, the rule of `text::check_name`
/// (no control or direction-changing characters, no byte-order mark, something
/// visible). Deserialising applies the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 40;
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        crate::text::check_name("name", s, Self::MAX_CHARS).map(|s| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for DisplayName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(&s)
    }
}
impl From<DisplayName> for String {
    fn from(v: DisplayName) -> String {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_name_their_gateway() {
        let gw = GatewayId::parse("gw-a").expect("valid");
        let conn = ConnId::new(&gw, 7);
        assert_eq!((conn.as_str(), conn.gateway()), ("gw-a/7", "gw-a"));
        assert_eq!(ConnId::parse("gw-a/7"), Ok(conn));
        for bad in ["gw-a", "gw.a/7", "gw-a/x", "/7", "gw-a/"] {
            assert!(ConnId::parse(bad).is_err(), "{bad} refused");
        }
    }

    #[test]
    fn ids_refuse_subject_wildcards_and_dots() {
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            SessionId::parse("Ab_3-x").map(|s| s.to_string()),
            Ok("Ab_3-x".into())
        );
    }

    #[test]
    fn join_codes_are_forgiving_about_case_and_dashes() {
        assert_eq!(
            JoinCode::parse(" k7m-q2x ").map(|c| c.to_string()),
            Ok("K7MQ2X".into())
        );
        assert!(JoinCode::parse("K7MQ2").is_err());
        assert_eq!(
            JoinCode::parse("k7mq-2xbd").map(|c| c.to_string()),
            Ok("K7MQ2XBD".into())
        );
        assert!(JoinCode::parse("K7MQ2XB").is_err(), "7 characters");
        assert!(JoinCode::parse("K7MQ2O").is_err(), "O is ambiguous with 0");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Ana ").map(|n| n.as_str().to_owned()),
            Ok("Ana".into())
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse(&"é".repeat(41)).is_err());
    }

    #[test]
    fn names_refuse_direction_tricks_byte_order_marks_and_invisible_names() {
        for bad in [
            "Ana\u{202E}neB",
            "\u{2067}Ana",
            "\u{FEFF}Ana",
            "\u{200B}",
            "\u{200D}\u{2060} \u{200C}",
            "\u{3164}",
        ] {
            assert!(DisplayName::parse(bad).is_err(), "{bad:?} accepted");
            let json = serde_json::to_string(bad).expect("ser");
            assert!(
                serde_json::from_str::<DisplayName>(&json).is_err(),
                "{bad:?} deserialised"
            );
        }
        assert!(DisplayName::parse("Zoë 🎸").is_ok());
    }

    #[test]
    fn ids_deserialize_through_validation() {
        assert!(serde_json::from_str::<MemberId>("\"a.b\"").is_err());
        assert!(serde_json::from_str::<MemberId>("\"ab\"").is_ok());
    }
}
