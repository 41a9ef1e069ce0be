//! The gateway's token verifier (`TokenKeys::verify`), which reads whatever a
//! stranger puts where a token goes: never a panic, and a token it accepts
//! names valid ids and a valid name and is the one the key would sign for
//! them (no second spelling of a signed token verifies).
#![no_main]

use bandsync_gateway::token::{Key, TokenKeys};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

const SECRET: &[u8] = b"0123456789abcdef-fuzz";

fuzz_target!(|data: &[u8]| {
    let key = Key::new("k1", SECRET).expect("a valid key");
    let keys = TokenKeys::new(key, Vec::new(), Duration::from_secs(86_400));
    // A fixed instant, so that a run is repeatable.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(claims) = keys.verify(token, now) {
        // Only the key's own signatures verify: the fuzzer cannot forge one
        // (that would be an HMAC break), but it can find a token that
        // verifies while spelled differently from what the key signs.
        let signed = keys.sign_claims(&claims);
        assert_eq!(keys.verify(&signed, now).as_ref(), Ok(&claims));
        assert_eq!(
            signed, token,
            "a second spelling of a signed token verifies"
        );
    }
});
