//! Entry points for the fuzz targets (fuzz/): the relay core driven with
//! arbitrary client and server bytes, in any interleaving. Not an API.

use super::core::{ClientStep, Core, ServerStep};
use super::phases::{Decision, Hold, Phase, Refusal, Release, RequestContext, SessionInfo};
use bytes::BytesMut;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Holds every request whose text starts with `h`, so holds interleave
/// with everything else.
struct HoldSome;

impl Phase for HoldSome {
    fn name(&self) -> &'static str {
        "fuzz-hold"
    }

    fn takes_rows(&self) -> bool {
        true
    }

    fn on_result_start(&mut self, result: &super::tracker::ResultInfo) -> super::phases::Rows {
        // Take some results' rows, so the inspected path is driven too.
        if result.fields.as_ref().is_some_and(|f| f.len() % 2 == 1) {
            super::phases::Rows::Inspect
        } else {
            super::phases::Rows::Pass
        }
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        if ctx.text.is_some_and(|t| t.first() == Some(&b'h')) {
            // The sender is dropped: a release comes from the input instead.
            let (_tx, rx) = oneshot::channel();
            return Decision::Hold(Hold {
                notice: Some("held".into()),
                ..Hold::new(Instant::now() + Duration::from_secs(1), rx)
            });
        }
        Decision::Forward
    }
}

/// Feeds `data` to a relay core: the first byte picks whether descriptions
/// are kept (masking's mode); then each chunk is a header byte (bit 0: 0
/// client, 1 server; bit 1: after it, release a hold, bit 2: refuse it),
/// a length byte, and that many bytes. Must never panic, whatever the
/// bytes; an error ends the run, as it ends a session.
#[doc(hidden)]
pub fn drive_core(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let info = SessionInfo::detached("fuzz");
    let phases: Vec<Box<dyn Phase>> = vec![Box::new(HoldSome)];
    let rules = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
        crate::gateway::RuleSnapshot::inert(),
    ));
    let mut core = Core::new(info, phases, rules, mode & 1 == 1, 1 << 16);
    let (mut client_in, mut server_in) = (BytesMut::new(), BytesMut::new());
    let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
    while rest.len() >= 2 {
        let (header, len) = (rest[0], usize::from(rest[1]));
        let chunk = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        if header & 2 != 0 {
            core.release(if header & 4 != 0 {
                Release::Refuse(Refusal::new(
                    crate::sqlstate::Sqlstate::INSUFFICIENT_PRIVILEGE,
                    "no",
                ))
            } else {
                Release::Run
            });
        }
        let ok = if header & 1 == 0 {
            client_in.extend_from_slice(chunk);
            match core.client_input(&mut client_in, &mut to_server) {
                Ok(ClientStep::Terminate) | Err(_) => false,
                Ok(ClientStep::NeedMore | ClientStep::Hold(_)) => true,
            }
        } else {
            server_in.extend_from_slice(chunk);
            drain_server(&mut core, &mut server_in, &mut to_client)
        };
        core.own_notices_into(&mut to_client);
        // What the loop would have written.
        to_server.clear();
        to_client.clear();
        if !ok {
            return;
        }
    }
}

fn drain_server(core: &mut Core, input: &mut BytesMut, out: &mut BytesMut) -> bool {
    loop {
        match core.server_input(input, out) {
            Ok(ServerStep::Direct(n)) => {
                assert!(out.is_empty() && n <= input.len());
                bytes::Buf::advance(input, n);
            }
            Ok(ServerStep::Full) => out.clear(),
            Ok(ServerStep::NeedMore) => return true,
            Ok(ServerStep::Fatal) | Err(_) => return false,
        }
    }
}
