use super::*;
use std::future::Future;
use std::pin::pin;
use std::task::Waker;

fn target() -> CancelTarget {
    CancelTarget {
        upstream: crate::auth::backend::test_upstream(),
        process_id: 4242,
        secret_key: 7,
    }
}

fn session(registry: &Arc<Registry>) -> Registration {
    let who = NewSession {
        user: "alice".into(),
        groups: vec![],
        client: None,
        database: "db".into(),
    };
    registry.register(who, target())
}

/// The control the session would take now, if one is pending.
fn control(r: &mut Registration) -> Option<Control> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut poll = pin!(std::future::poll_fn(|cx| r.poll_control(cx).map(Some)));
    match poll.as_mut().poll(&mut cx) {
        Poll::Ready(c) => c,
        Poll::Pending => None,
    }
}

#[test]
fn a_cancel_of_a_hold_alone_stays_away_from_the_idle_server() {
    let registry = Arc::new(Registry::default());
    let mut r = session(&registry);
    r.set_state(SessionState::Held, false);
    let route = registry.cancel(r.process_id, r.secret_key);
    assert!(matches!(route, CancelRoute::Session), "{route:?}");
    assert_eq!(
        control(&mut r),
        Some(Control::Cancel { server_told: false })
    );
    assert_eq!(control(&mut r), None);
    // Listings still show the hold.
    assert_eq!(registry.list()[0].state, SessionState::Held);
}

#[test]
fn a_cancel_reaches_the_server_while_it_works_for_the_session() {
    let registry = Arc::new(Registry::default());
    let mut r = session(&registry);
    for (state, busy) in [
        (SessionState::Running, true),
        // Held behind pipelined requests the server still runs.
        (SessionState::Held, true),
        // Idle: as PostgreSQL itself would be told.
        (SessionState::Idle, false),
        (SessionState::InTransaction, false),
    ] {
        r.set_state(state, busy);
        let route = registry.cancel(r.process_id, r.secret_key);
        let CancelRoute::Server(t) = route else {
            panic!("{state:?} busy={busy}: {route:?}");
        };
        assert_eq!((t.process_id, t.secret_key), (4242, 7));
        assert_eq!(control(&mut r), Some(Control::Cancel { server_told: true }));
        assert_eq!(registry.list()[0].state, state);
    }
}

#[test]
fn two_cancels_at_once_are_one_and_told_the_server_if_either_was() {
    let registry = Arc::new(Registry::default());
    let mut r = session(&registry);
    r.set_state(SessionState::Held, false);
    assert!(matches!(
        registry.cancel(r.process_id, r.secret_key),
        CancelRoute::Session
    ));
    r.set_state(SessionState::Running, true);
    assert!(matches!(
        registry.cancel(r.process_id, r.secret_key),
        CancelRoute::Server(_)
    ));
    assert_eq!(control(&mut r), Some(Control::Cancel { server_told: true }));
    assert_eq!(control(&mut r), None);
}

#[test]
fn a_wrong_secret_is_unknown_and_tells_no_one() {
    let registry = Arc::new(Registry::default());
    let mut r = session(&registry);
    r.set_state(SessionState::Running, true);
    let wrong = r.secret_key.wrapping_add(1);
    assert!(matches!(
        registry.cancel(r.process_id, wrong),
        CancelRoute::Unknown
    ));
    assert_eq!(control(&mut r), None);
}

#[test]
fn ending_a_session_stops_what_its_server_runs_even_behind_a_hold() {
    let registry = Arc::new(Registry::default());
    let r = session(&registry);
    for (state, busy) in [
        (SessionState::Running, true),
        (SessionState::Held, true),
        (SessionState::Held, false),
        (SessionState::Idle, false),
        (SessionState::InTransaction, false),
    ] {
        r.set_state(state, busy);
        assert_eq!(
            registry.running_cancel_target(r.id).is_some(),
            busy,
            "{state:?} busy={busy}"
        );
    }
}
