//! What a gateway and a client decode from the bus and the socket: the header a
//! gateway reads before forwarding a message's bytes (`BusHeader`, in
//! gateway/src/hub.rs and api.rs), the `type` peek (`message_type`) and a
//! client's `ServerMsg::parse`. Any bytes: never a panic, and the peek agrees
//! with a full parse.
#![no_main]

use bandsync_protocol::wire::{BusHeader, message_type};
use bandsync_protocol::{EventMsg, ServerMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = serde_json::from_slice::<BusHeader>(data);
    let kind = message_type(data);
    if let (Ok(head), Ok(kind)) = (&head, &kind) {
        assert_eq!(head.kind, kind.as_ref(), "the peek and the header disagree");
        let _ = head.sent_at();
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(msg) = ServerMsg::parse(text)
    {
        // A message that parses has the type the peek saw, and survives a
        // round trip (the gateway forwards bytes that clients parse again).
        let kind = message_type(data).expect("a parsed message has a type");
        let bytes = msg.to_bytes();
        let back = ServerMsg::parse(std::str::from_utf8(&bytes).expect("UTF-8"))
            .expect("a server message reads back");
        assert_eq!(back, msg, "type {kind}");
        if let ServerMsg::Event(event) = &msg {
            // A receiver holding the event's own state can always rebuild it.
            let _ = EventMsg::state_after(event, &event.state);
        }
    }
});
