//! Sample tickets and grants for the approvals' unit tests (the model's,
//! and every store's).

use super::model::{
    now_ms, ApprovalMode, Grant, GrantScope, GrantSubject, Requester, Ticket, TicketState,
};

/// A pending ticket of `user`'s, approvable by group `ops`, needing
/// `threshold` approvals, pending for a minute.
pub(crate) fn ticket(id: &str, user: &str, mode: ApprovalMode, threshold: u32) -> Ticket {
    let now = now_ms();
    Ticket {
        id: id.into(),
        mode,
        state: TicketState::Pending,
        created_at: now,
        expires_at: now + 60_000,
        valid_until: None,
        requester: Requester {
            user: user.into(),
            groups: vec!["dev".into()],
            client: Some("127.0.0.1:5000".into()),
            database: "db".into(),
            upstream: "main".into(),
            role: "app".into(),
            application_name: None,
            session: 1,
            instance: "test".into(),
        },
        statement: "UPDATE t SET x = 1".into(),
        params: Vec::new(),
        binding: super::model::binding(user, "db", "UTF8", b"UPDATE t SET x = 1", &[]),
        transaction: "idle".into(),
        rule: "approve-updates".into(),
        rule_message: None,
        justification: None,
        approvers: vec!["ops".into()],
        threshold,
        votes: Vec::new(),
        break_glass: false,
        end_reason: None,
        token: None,
    }
}

/// A grant to `user` of rule `rule`'s statements, for a minute.
pub(crate) fn grant(id: &str, user: &str, rule: &str) -> Grant {
    let now = now_ms();
    Grant {
        id: id.into(),
        subject: GrantSubject::User(user.into()),
        scope: GrantScope::Rule(rule.into()),
        created_by: "boss".into(),
        created_at: now,
        expires_at: now + 60_000,
        reason: None,
        revoked: None,
    }
}
