//! Arbitrary bytes as an HTTP/1.1 response (what a webhook receiver, a
//! JWKS server or an admin API may send): no panic, a body never longer
//! than the input, and a response complete before the connection ended is
//! the same once it ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::http_client::{parse_response, Parsed};

fuzz_target!(|data: &[u8]| {
    let open = parse_response(data, false);
    let ended = parse_response(data, true);
    if let Ok(Parsed::Complete(r)) = &open {
        assert!(r.body.len() <= data.len());
        assert_eq!(ended.as_ref().ok(), Some(&Parsed::Complete(r.clone())));
    }
    if let Ok(Parsed::Complete(r)) = &ended {
        assert!(r.body.len() <= data.len());
    }
});
