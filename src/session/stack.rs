//! A session's phases, in their fixed order: the rules first (a refused
//! statement never reaches masking), then masking when the identity has
//! masked columns. Masking's bookkeeping sees every request, refused or
//! not, since a refused one still gets an answer from the server.

use super::inflight::InFlight;
use super::masking::{self, MaskBackend, MaskFrontend, MaskSession};
use super::phases::{BackendPhases, FrontendAction, FrontendPhases, Refusal};
use super::rules::{RulesBackend, RulesFrontend};
use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::mask::rules::MaskConfig;
use crate::mask::store::UpstreamMap;
use crate::policy::rules::Identity;
use crate::wire::backend::{BackendKind, TransactionStatus};
use crate::wire::frontend::{parse_view, query_text, FrontendKind};
use crate::wire::Frame;
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Builds a session's phases. A masked identity waits for its upstream's
/// column map; if it cannot be read, the session does not start (fail
/// closed).
pub async fn build(
    gw: &Gateway,
    upstream: &str,
    identity: Identity,
    startup_messages: &[u8],
    inflight: &Arc<InFlight>,
) -> Result<(SessionFrontend, SessionBackend), SessionError> {
    let settings = Arc::new(super::rules::ReportedSettings::from_startup(
        startup_messages,
    ));
    let map = gw.masks.get(upstream);
    let mask = map.and_then(|m| {
        MaskSession::for_identity(Arc::clone(m), identity.clone(), Arc::clone(&settings))
    });
    if let (Some(_), Some(map)) = (&mask, map) {
        map.ensure().await.map_err(|e| {
            tracing::error!(upstream, "mask map unavailable: {e}");
            SessionError::BackendUnavailable {
                upstream: upstream.to_owned(),
                detail: format!("pgward cannot read the column map for masking: {e}"),
            }
        })?;
    }
    let ddl_sent = Arc::new(AtomicBool::new(false));
    let frontend = SessionFrontend {
        rules: RulesFrontend::new(
            Arc::clone(&gw.policy),
            identity.clone(),
            Arc::clone(&settings),
            Arc::clone(inflight),
        ),
        mask: mask.clone().map(MaskFrontend::new),
        masking: Arc::clone(&gw.masking),
        started_under: gw.masking.load_full(),
        identity,
        ddl_sent: Arc::clone(&ddl_sent),
    };
    let backend = SessionBackend {
        rules: RulesBackend::new(settings, Arc::clone(inflight)),
        mask: mask.map(MaskBackend::new),
        // Only where masking is on: watching costs a stop at every ReadyForQuery.
        map: map.filter(|_| !gw.masking.load().rules.is_empty()).cloned(),
        ddl_sent,
    };
    Ok((frontend, backend))
}

/// Client-side phases of one session.
pub struct SessionFrontend {
    /// Statement rules.
    pub rules: RulesFrontend,
    /// Masking, for identities with masked columns.
    pub mask: Option<MaskFrontend>,
    /// The mask rules in force, and those the session started under: an
    /// unmasked session whose identity a reload newly masks must reconnect.
    masking: Arc<ArcSwap<MaskConfig>>,
    started_under: Arc<MaskConfig>,
    identity: Identity,
    /// Set when a statement that may change the schema goes out; the server
    /// half refreshes the mask map once it has run.
    ddl_sent: Arc<AtomicBool>,
}

impl SessionFrontend {
    /// Notes a statement that may change the schema, when masking is on.
    fn watch_ddl(&self, text: Option<&[u8]>) {
        let masking_on = !self.masking.load().rules.is_empty();
        if let (true, Some(text)) = (masking_on, text) {
            if masking::schema_may_change(text) {
                self.ddl_sent.store(true, Ordering::Release);
            }
        }
    }

    /// Whether a reload has since masked columns for this unmasked session.
    fn newly_masked(&self) -> bool {
        if self.mask.is_some() {
            return false;
        }
        let now = self.masking.load();
        !Arc::ptr_eq(&now, &self.started_under)
            && now.rules.iter().any(|r| r.applies_to(&self.identity))
    }
}

fn reconnect() -> FrontendAction {
    FrontendAction::Refuse(Refusal {
        code: "42501",
        message: "statement denied by pgward masking: the masking rules changed and now cover this identity".into(),
        detail: None,
        hint: Some("Reconnect: new sessions apply the new rules.".into()),
        position: None,
    })
}

fn masking_refusal(why: String) -> FrontendAction {
    FrontendAction::Refuse(Refusal {
        code: "42501",
        message: format!("statement denied by pgward masking: {why}"),
        detail: None,
        hint: Some("Masked columns may only be selected as they are, not used in expressions, filters, ordering or copies.".into()),
        position: None,
    })
}

impl FrontendPhases for SessionFrontend {
    fn inspects(&self, kind: FrontendKind) -> bool {
        self.rules.inspects(kind)
            || (self.mask.is_some()
                && matches!(
                    kind,
                    FrontendKind::Bind
                        | FrontendKind::Describe
                        | FrontendKind::Execute
                        | FrontendKind::Close
                        | FrontendKind::Sync
                ))
    }

    fn on_query(&mut self, frame: &Frame) -> FrontendAction {
        if self.newly_masked() {
            return reconnect();
        }
        self.watch_ddl(query_text(frame).ok());
        let action = self.rules.on_query(frame);
        let Some(mask) = &mut self.mask else {
            return action;
        };
        mask.query_sent();
        match (action, query_text(frame)) {
            (FrontendAction::Forward, Ok(text)) => match mask.guard(text) {
                Ok(()) => FrontendAction::Forward,
                Err(why) => masking_refusal(why),
            },
            (FrontendAction::Forward, Err(_)) => masking_refusal("malformed Query".into()),
            (refused, _) => refused,
        }
    }

    fn on_parse(&mut self, frame: &Frame) -> FrontendAction {
        if self.newly_masked() {
            return reconnect();
        }
        self.watch_ddl(parse_view(frame).ok().map(|p| p.query));
        let action = self.rules.on_parse(frame);
        let Some(mask) = &mut self.mask else {
            return action;
        };
        let Ok(view) = parse_view(frame) else {
            return masking_refusal("malformed Parse".into());
        };
        if action != FrontendAction::Forward {
            // The stand-in is an unnamed Parse.
            mask.parse_sent(b"");
            return action;
        }
        match mask.guard(view.query) {
            Ok(()) => {
                mask.parse_sent(view.statement);
                FrontendAction::Forward
            }
            Err(why) => {
                mask.parse_sent(b"");
                masking_refusal(why)
            }
        }
    }

    fn on_bind(&mut self, frame: &Frame) -> FrontendAction {
        if let Some(mask) = &mut self.mask {
            mask.bind_sent(frame);
        }
        FrontendAction::Forward
    }

    fn on_describe(&mut self, frame: &Frame) -> FrontendAction {
        if let Some(mask) = &mut self.mask {
            mask.describe_sent(frame);
        }
        FrontendAction::Forward
    }

    fn on_execute(&mut self, frame: &Frame) -> FrontendAction {
        if let Some(mask) = &mut self.mask {
            mask.execute_sent(frame);
        }
        FrontendAction::Forward
    }

    fn on_close(&mut self, frame: &Frame) {
        if let Some(mask) = &mut self.mask {
            mask.close_sent(frame);
        }
    }

    fn on_sync(&mut self) {
        if let Some(mask) = &mut self.mask {
            mask.sync_sent();
        }
    }

    fn on_function_call_refused(&mut self) {
        if let Some(mask) = &mut self.mask {
            mask.query_sent();
        }
    }
}

/// Server-side phases of one session.
pub struct SessionBackend {
    /// Follows the lexing settings.
    pub rules: RulesBackend,
    /// Masking, for identities with masked columns.
    pub mask: Option<MaskBackend>,
    /// The upstream's mask map and the client half's DDL flag.
    map: Option<Arc<UpstreamMap>>,
    ddl_sent: Arc<AtomicBool>,
}

impl BackendPhases for SessionBackend {
    fn inspects(&self, kind: BackendKind) -> bool {
        self.rules.inspects(kind)
            || (self.map.is_some() && kind == BackendKind::ReadyForQuery)
            || (self.mask.is_some()
                && matches!(
                    kind,
                    BackendKind::RowDescription
                        | BackendKind::DataRow
                        | BackendKind::CommandComplete
                        | BackendKind::ErrorResponse
                        | BackendKind::NoticeResponse
                        | BackendKind::Notification
                        | BackendKind::ReadyForQuery
                        | BackendKind::Other(b'n' | b'I' | b's')
                ))
    }

    fn on_row_description(&mut self, frame: &Frame) {
        if let Some(mask) = &mut self.mask {
            mask.row_description(frame);
        }
    }

    fn on_no_data(&mut self) {
        if let Some(mask) = &mut self.mask {
            mask.no_data();
        }
    }

    fn on_data_row(&mut self, raw: &[u8], out: &mut BytesMut) {
        match &mut self.mask {
            Some(mask) => mask.data_row(raw, out),
            None => out.extend_from_slice(raw),
        }
    }

    fn on_result_end(&mut self, frame: Frame) -> Bytes {
        match &mut self.mask {
            Some(mask) => mask.result_end(frame),
            None => frame.into_raw(),
        }
    }

    fn on_error_response(&mut self, frame: Frame) -> Bytes {
        if self.rules.inspects(BackendKind::ErrorResponse) {
            self.rules.note_error();
        }
        match &mut self.mask {
            Some(mask) => mask.error(frame),
            None => frame.into_raw(),
        }
    }

    fn on_notice(&mut self, frame: Frame) -> Bytes {
        match (&self.mask, frame.tag()) {
            (Some(_), b'A') => masking::scrub_notification(frame),
            (Some(_), _) => masking::scrub(frame),
            (None, _) => frame.into_raw(),
        }
    }

    fn on_ready_for_query(&mut self, status: TransactionStatus) {
        self.rules.on_ready_for_query(status);
        if let Some(mask) = &mut self.mask {
            mask.ready();
        }
        if self.ddl_sent.swap(false, Ordering::AcqRel) {
            if let Some(map) = &self.map {
                map.invalidate();
            }
        }
    }

    fn on_parameter_status(&mut self, frame: &Frame) {
        self.rules.on_parameter_status(frame);
    }
}
