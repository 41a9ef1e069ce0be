//! The gateway's decoder of client frames (`ClientMsg::parse`): any text, never
//! a panic, and whatever it accepts keeps the rules of docs/protocol.md §2.1.
#![no_main]

use bandsync_protocol::wire::{ClientMsg, MAX_CLIENT_REF};
use bandsync_protocol::{Command, ErrorCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The gateway only ever sees text frames, which tungstenite has checked
    // are UTF-8; lossy decoding keeps the rest of the input useful.
    let text = String::from_utf8_lossy(data);
    match ClientMsg::parse(&text) {
        Ok(ClientMsg::Command { id, command }) => {
            assert!(Command::CLIENT_TYPES.contains(&command.kind()));
            assert_eq!(
                command.validate(),
                Ok(()),
                "accepted an invalid {command:?}"
            );
            assert!(id.is_none_or(|id| (1..=MAX_CLIENT_REF).contains(&id.len())));
            // What the gateway accepted, the owner reads back the same from the bus.
            let json = serde_json::to_string(&command).expect("commands serialise");
            let back: Command = serde_json::from_str(&json).expect("a command reads back");
            assert_eq!(back, command);
        }
        Ok(ClientMsg::Ping { t0 }) => assert!(t0.is_finite()),
        Err(e) => {
            assert!(!e.message.is_empty());
            assert_ne!(e.code, ErrorCode::Internal);
        }
    }
});
