//! Arbitrary bytes through the extended-protocol and result views the
//! tracker and phases read (Bind, Describe / Close, Execute, Parse,
//! RowDescription, CommandComplete, ErrorResponse): no panic, no read
//! outside the frame, no allocation a count alone can make huge.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::wire::{backend, frontend, FrameRef};

fuzz_target!(|data: &[u8]| {
    // Frame the input as one message of each tag under test.
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    let mut raw = Vec::with_capacity(body.len() + 5);
    raw.push(tag);
    raw.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
    raw.extend_from_slice(body);
    let Some(frame) = FrameRef::new(&raw) else {
        return;
    };
    if let Ok(b) = frontend::bind_view(frame) {
        assert!(b.params.len() <= body.len() / 4);
        assert!(b.result_formats.len() <= body.len() / 2);
    }
    let _ = frontend::target_view(frame);
    let _ = frontend::execute_view(frame);
    let _ = frontend::parse_view(frame);
    let _ = frontend::query_text(frame);
    if let Ok(fields) = backend::row_description(frame) {
        assert!(fields.len() <= body.len() / 19);
    }
    let _ = backend::command_tag(frame);
    let _ = backend::error_summary(frame);
    let _ = backend::ready_status(frame);
    let _ = backend::parameter_status(frame);
});
