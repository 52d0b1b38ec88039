//! The relay core without sockets, fed arbitrary client and server bytes in
//! any interleaving (both directions), with holds released and refused in
//! between: no panic, whatever either peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgward::session::fuzzing::drive_core(data);
});
