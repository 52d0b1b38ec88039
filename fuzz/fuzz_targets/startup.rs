//! Arbitrary bytes as the first packets of a connection: SSLRequest,
//! GSSENCRequest, CancelRequest, StartupMessage. No panic; every accepted
//! StartupMessage has a parameter list that stays inside the packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgward::wire::startup::{next_startup_packet, StartupPacket};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    for _ in 0..4 {
        match next_startup_packet(&mut buf) {
            Ok(Some(StartupPacket::Startup(s))) => {
                let _ = s.param("user");
                let _ = s.param("database");
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
