//! Each request is judged under one rule snapshot: a reload between two of
//! its phases, or while it is held, never gives it a second rule set.

use super::*;
use crate::gateway::RuleSnapshot;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};

/// Records the rule version each request was judged under.
struct Recorder {
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Phase for Recorder {
    fn name(&self) -> &'static str {
        "test-record"
    }
    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        self.seen.lock().unwrap().push(ctx.rules.version);
        Decision::Forward
    }
}

/// Reloads (stores the next version) whenever it judges a request.
struct Reloader {
    rules: Arc<ArcSwap<RuleSnapshot>>,
}

impl Phase for Reloader {
    fn name(&self) -> &'static str {
        "test-reload"
    }
    fn on_request(&mut self, _ctx: &RequestContext<'_>) -> Decision {
        let next = self.rules.load().version + 1;
        self.rules.store(Arc::new(version(next)));
        Decision::Forward
    }
}

fn version(v: u64) -> RuleSnapshot {
    let mut s = RuleSnapshot::inert();
    s.version = v;
    s
}

#[test]
fn a_reload_between_two_phases_does_not_split_a_request() {
    let rules = Arc::new(ArcSwap::from_pointee(version(1)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = || {
        Box::new(Recorder {
            seen: Arc::clone(&seen),
        }) as Box<dyn Phase>
    };
    let reloader = Box::new(Reloader {
        rules: Arc::clone(&rules),
    });
    let mut c = core_under(vec![recorder(), reloader, recorder()], &rules, false);
    let (out, _) = client(&mut c, &concat(&[query("select 1"), query("select 2")]));
    assert_eq!(
        &out[..],
        &concat(&[query("select 1"), query("select 2")])[..]
    );
    // The phase after the reload judged each request under the rules the
    // phase before it saw; the next request got the reloaded ones.
    assert_eq!(*seen.lock().unwrap(), vec![1, 1, 2, 2]);
    assert_eq!(rules.load().version, 3);
}

#[test]
fn a_held_request_goes_on_under_the_rules_it_was_held_under() {
    let rules = Arc::new(ArcSwap::from_pointee(version(1)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let senders = Arc::new(Mutex::new(Vec::new()));
    let phases: Vec<Box<dyn Phase>> = vec![
        Box::new(HoldPhase {
            senders: Arc::clone(&senders),
        }),
        Box::new(Recorder {
            seen: Arc::clone(&seen),
        }),
    ];
    let mut c = core_under(phases, &rules, false);
    let mut input = BytesMut::from(&concat(&[query("select 'hold'"), query("select 2")])[..]);
    let mut to_server = BytesMut::new();
    let step = c.client_input(&mut input, &mut to_server).unwrap();
    assert!(matches!(step, ClientStep::Hold(_)));
    // A reload while it is held.
    rules.store(Arc::new(version(7)));
    c.release(Release::Run);
    c.client_input(&mut input, &mut to_server).unwrap();
    assert!(input.is_empty());
    assert_eq!(*seen.lock().unwrap(), vec![1, 7]);
}
