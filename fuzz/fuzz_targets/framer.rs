//! Arbitrary bytes through the relay framer and every message view the relay
//! or a phase may apply: no panic, no read outside a frame, and the run
//! found by `complete_prefix` always equals the frames `next_frame` splits.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgward::wire::{backend, frontend, Framer};

fuzz_target!(|data: &[u8]| {
    let framer = Framer::new(1 << 20);
    let prefix = framer.complete_prefix(data, |tag| tag == b'Z', &[]);
    let mut buf = BytesMut::from(data);
    let mut split = 0usize;
    while let Ok(Some(frame)) = framer.next_frame(&mut buf) {
        assert!(frame.raw().len() >= 5);
        assert_eq!(frame.body().len() + 5, frame.raw().len());
        if let Ok(p) = &prefix {
            if split < p.len {
                split += frame.raw().len();
            }
        }
        let _ = frontend::query_text(frame.view());
        let _ = frontend::parse_view(frame.view());
        let _ = frontend::sasl_initial(&frame);
        let _ = backend::ready_status(frame.view());
        let _ = backend::parameter_status(frame.view());
        let _ = backend::backend_key_data(frame.view());
        let _ = backend::notice_fields(frame.view());
        let _ = backend::notice_field(frame.view(), b'C');
    }
    if let Ok(p) = prefix {
        // The run ends on a frame boundary that next_frame also reached.
        assert_eq!(split, p.len);
    }
});
