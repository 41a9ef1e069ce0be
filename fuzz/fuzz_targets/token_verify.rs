//! The gateway's token verifier (`TokenKey::verify`), which reads whatever a
//! stranger puts where a token goes: never a panic, and a token it accepts
//! names valid ids and a valid name and is the one the key would sign for
//! them (no second spelling of a signed token verifies).
#![no_main]

use bandsync_gateway::token::TokenKey;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"0123456789abcdef-fuzz";

fuzz_target!(|data: &[u8]| {
    let key = TokenKey::new(SECRET);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(claims) = key.verify(token) {
        // Only the key's own signatures verify: the fuzzer cannot forge one
        // (that would be an HMAC break), but it can find a token that
        // verifies while spelled differently from what the key signs.
        let signed = key.sign(&claims);
        assert_eq!(key.verify(&signed).as_ref(), Ok(&claims));
        assert_eq!(
            signed, token,
            "a second spelling of a signed token verifies"
        );
    }
});
