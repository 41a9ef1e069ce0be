//! Sessions are hashed into a fixed number of shards; each shard has one owner.
//! The hash is specified (FNV-1a, 64 bit) so that every process, in any language
//! or version, maps a session to the same shard. Never use std's DefaultHasher here.

use crate::ids::SessionId;

/// Default shard count; changing it on a live fleet moves sessions between shards.
pub const DEFAULT_SHARDS: u16 = 256;

/// A shard number in `0..shards`.
pub type Shard = u16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// FNV-1a 64 of the session id's UTF-8 bytes, modulo `shards`.
pub fn shard_of(session: &SessionId, shards: u16) -> Shard {
    assert!(shards > 0, "shard count must be positive");
    (fnv1a(session.as_str().as_bytes()) % u64::from(shards)) as Shard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values_pin_the_hash() {
        // FNV-1a 64("a") = 0xaf63dc4c8601ec8c (published test vector).
        let a = SessionId::parse("a").expect("valid");
        assert_eq!(
            shard_of(&a, u16::MAX),
            (0xaf63_dc4c_8601_ec8c_u64 % 65535) as u16
        );
        let s = SessionId::parse("k3j9x2m4q8wz").expect("valid");
        assert_eq!(shard_of(&s, 256), shard_of(&s, 256));
        assert!(shard_of(&s, 256) < 256);
    }

    #[test]
    fn spreads_sessions_over_shards() {
        let mut counts = vec![0u32; 16];
        for i in 0..16_000 {
            let id = SessionId::parse(format!("s{i}")).expect("valid");
            counts[shard_of(&id, 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
