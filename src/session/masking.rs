//! The masking phase of a session whose identity sees some column masked.
//!
//! Request side: every Query and Parse goes through the guard
//! (`mask::guard`), which refuses any way a masked column could reach the
//! client other than as a bare output column.
//!
//! Response side: a result's plan comes from its description, which the
//! conversation tracker pairs with the result (a simple Query's
//! RowDescription, or for an Execute the portal's or statement's Describe
//! with Bind's formats). A result with no masked column streams untouched;
//! rows whose plan cannot be known are withheld with an error, never sent
//! in clear.

use super::phases::{Decision, Hold, Phase, Refusal, Release, RequestContext, RequestKind, Rows};
use super::rules::ReportedSettings;
use super::tracker::ResultInfo;
use crate::mask::exposure::{self, Exposure, Untrusted};
use crate::mask::guard::{self, Masked};
use crate::mask::memo::{self, Memo};
use crate::mask::rewrite::{self, ColumnMask, RowPlan};
use crate::mask::rules::MaskConfig;
use crate::mask::store::{MapCache, UpstreamMap};
use crate::mask::strategy::{BinaryKind, HashKey};
use crate::policy::encoding::ClientEncoding;
use crate::policy::lexer::{self, LexSettings, Span};
use crate::policy::rules::Identity;
use crate::sqlstate::Sqlstate;
use crate::wire::backend::{notice_fields, FieldInfo};
use crate::wire::encode::{self, Severity};
use crate::wire::FrameRef;
use bytes::BytesMut;
use std::sync::{Arc, Mutex};

/// How the rows of the result in progress are treated.
enum Plan {
    /// Rewrite them with this plan.
    Rewrite(RowPlan),
    /// Drop them; the result ends with an error instead.
    Withhold(String),
}

/// What the last result that passed untouched was planned under.
struct PassKey {
    fields: Arc<Vec<FieldInfo>>,
    formats: Option<Arc<[i16]>>,
    map: Arc<crate::mask::catalog::MaskMap>,
    config: Arc<MaskConfig>,
}

/// What the identity sees masked, derived from the map and the rules.
struct View {
    map: Arc<crate::mask::catalog::MaskMap>,
    config: Arc<MaskConfig>,
    guard: Masked,
    /// Texts and shapes the guard passed under this map (drivers repeat
    /// their Parse texts, applications their shapes with new literals);
    /// gone with the view when the map or the rules change.
    passed: Memo<()>,
    /// The identity's masked tables, as (schema, table).
    masked_tables: std::collections::BTreeSet<(String, String)>,
    /// What texts expose beyond their rows, by text and by shape.
    exposures: Memo<Exposure>,
    /// The last text scanned for its shape key: the guard and the exposure
    /// of one request scan the text once, and the next text that differs
    /// from it only in integer digits is not scanned at all.
    last_shape: Option<LastShape>,
}

/// A text, its shape key, and when texts differing from it only in integer
/// digits share that key, where its integer literals are.
struct LastShape {
    text: String,
    settings: LexSettings,
    key: Option<Vec<u8>>,
    /// `None` unless the text has one reading (no backslash: then neither
    /// has a text differing from it only in digits) and its guard shape
    /// keeps no literal's text: then a text the scanner sees the same
    /// tokens in but for integer digits has the same key. Its literals
    /// ([`lexer::free_literals`]) are found once, when it is scanned;
    /// each later text is compared by them alone
    /// ([`lexer::same_but_literals`], which with them is
    /// [`lexer::same_but_integers`]).
    literals: Option<Vec<Span>>,
}

/// [`memo::shape_key`] of `sql`, remembered in `last` for the next text
/// (borrowed from it: a lookup by the key copies nothing).
fn shape_key<'a>(
    last: &'a mut Option<LastShape>,
    sql: &str,
    settings: LexSettings,
) -> Option<&'a [u8]> {
    let known = last.as_ref().is_some_and(|last| {
        last.settings == settings
            && (last.text == sql
                || last.literals.as_ref().is_some_and(|literals| {
                    lexer::same_but_literals(last.text.as_bytes(), literals, sql.as_bytes())
                }))
    });
    if !known {
        let readings = readings(sql, settings);
        let (key, literals) = match readings.as_slice() {
            [one] => match lexer::scan(sql, *one) {
                Ok(tokens) => {
                    let key = memo::one_reading_key(sql, &tokens, *one);
                    let shared =
                        !tokens.is_empty() && !lexer::guard_shape_keeps_a_literal(sql, &tokens);
                    let literals = shared.then(|| lexer::free_literals(sql, &tokens)).flatten();
                    (Some(key), literals)
                }
                Err(_) => (None, None),
            },
            _ => (memo::shape_key(sql, &readings), None),
        };
        *last = Some(LastShape {
            text: sql.to_owned(),
            settings,
            key,
            literals,
        });
    }
    last.as_ref()?.key.as_deref()
}

impl View {
    /// Whether the guard passed this text, or one of its shape; on a miss,
    /// the shape key to remember the text under.
    fn passed(&mut self, sql: &str, settings: LexSettings) -> (bool, Option<Vec<u8>>) {
        if self.passed.texts.contains_key(sql.as_bytes()) {
            return (true, None);
        }
        let shape = shape_key(&mut self.last_shape, sql, settings);
        if shape.is_some_and(|k| self.passed.shapes.contains_key(k)) {
            return (true, None);
        }
        (false, shape.map(<[u8]>::to_vec))
    }

    /// What `text` exposes beyond its rows; `sql`: the text, when it was
    /// checked as UTF-8 already. `None` when it is not UTF-8.
    fn exposure(
        &mut self,
        text: &[u8],
        sql: Option<&str>,
        settings: LexSettings,
    ) -> Option<Exposure> {
        // Bind and Execute repeat their statement's text: a lookup, no
        // UTF-8 check or parse, once it is known.
        if let Some(known) = self.exposures.texts.get(text) {
            return Some(known.clone());
        }
        let sql = match sql {
            Some(sql) => sql,
            None => std::str::from_utf8(text).ok()?,
        };
        let shape = shape_key(&mut self.last_shape, sql, settings);
        if let Some(known) = shape.and_then(|k| self.exposures.shapes.get(k)) {
            return Some(known.clone());
        }
        let found = exposure::analyze_readings(
            sql,
            &readings(sql, settings),
            &self.map,
            &self.masked_tables,
        );
        // A verdict that read a literal's value holds for this text only.
        let shape = shape.filter(|_| !found.reads_literals);
        self.exposures.remember(text, shape, found.clone());
        Some(found)
    }
}

/// Most texts, and most shapes, remembered per session.
const PASSED_TEXTS: usize = 1024;

/// The masking phase of one session.
pub struct MaskPhase {
    map: Arc<UpstreamMap>,
    /// `map`'s current map, as [`Self::with_view`] reads it.
    map_cache: std::cell::RefCell<MapCache>,
    identity: Identity,
    settings: Arc<ReportedSettings>,
    view: Mutex<Option<View>>,
    key: HashKey,
    plan: Option<Plan>,
    /// The last result that passed untouched (`passes_again`).
    last_pass: Option<PassKey>,
    /// A statement that may change the schema went out: refresh the map
    /// at the next ReadyForQuery.
    ddl_pending: bool,
    /// The mask rules of the request sent last: its rows are planned under
    /// the rules it was judged under.
    request_rules: Option<Arc<MaskConfig>>,
    /// The map in force when this session's own DDL ran: until the map is
    /// replaced by one read after it, the session's statements wait for
    /// the refresh (a function or table it just created must be known
    /// before a statement that uses it is judged).
    map_before_ddl: Option<Arc<crate::mask::catalog::MaskMap>>,
    /// ReadyForQuery messages seen.
    answered: u64,
    /// The ReadyForQuery numbers (counting from 1) that end a request which
    /// may run code pgward cannot see into: the server's error and notice
    /// messages before them are withheld.
    unclean: std::collections::BTreeSet<u64>,
    /// Cells masked in the result in progress, added to `metrics` at its
    /// end (one shared atomic per result, not per row).
    masked_cells: u64,
    metrics: Arc<crate::admin::Metrics>,
}

impl MaskPhase {
    /// The masking phase for `identity`, or `None` when no rule masks
    /// anything for it (then the session has no masking phase at all).
    pub fn for_identity(
        map: Arc<UpstreamMap>,
        identity: Identity,
        settings: Arc<ReportedSettings>,
        metrics: Arc<crate::admin::Metrics>,
    ) -> Option<Self> {
        let config = map.config();
        if !config.rules.iter().any(|r| r.applies_to(&identity)) {
            return None;
        }
        let key = config.hash_key.clone();
        Some(Self {
            map_cache: std::cell::RefCell::new(MapCache::new(Arc::clone(&map))),
            map,
            identity,
            settings,
            view: Mutex::new(None),
            key,
            plan: None,
            last_pass: None,
            ddl_pending: false,
            request_rules: None,
            map_before_ddl: None,
            answered: 0,
            unclean: std::collections::BTreeSet::new(),
            masked_cells: 0,
            metrics,
        })
    }

    /// Runs `f` on the identity's view of the current map under the mask
    /// rules of the request sent last (those in force when none was), rebuilt
    /// when the map or the rules change.
    fn with_view<T>(&self, f: impl FnOnce(&mut View) -> T) -> Option<T> {
        let map = Arc::clone(self.map_cache.borrow_mut().current()?);
        let config = self.view_rules();
        if !map.answers_for(&config) {
            // Read under other rules (a reload since): its columns name
            // rules by their place in those, so nothing is judged by it.
            return None;
        }
        let mut cached = self.view.lock().ok()?;
        let fresh = cached
            .as_ref()
            .is_some_and(|v| Arc::ptr_eq(&v.map, &map) && Arc::ptr_eq(&v.config, &config));
        if !fresh {
            let mut guard = Masked::from_map(&map, |rule| {
                config
                    .rules
                    .get(rule)
                    .is_some_and(|r| r.applies_to(&self.identity))
            });
            // Functions reviewed not to read masked columns.
            guard.allow_functions(&config.allowed_functions);
            let masked_tables = guard
                .tables
                .iter()
                .map(|(schema, table, _)| (schema.clone(), table.clone()))
                .collect();
            *cached = Some(View {
                map,
                config,
                guard,
                passed: Memo::new(PASSED_TEXTS),
                masked_tables,
                exposures: Memo::new(PASSED_TEXTS),
                last_shape: None,
            });
        }
        cached.as_mut().map(f)
    }

    /// Judges a Query's or Parse's text under one look at the view: the
    /// guard, then what the text exposes beyond its rows (`Ok(None)`:
    /// nothing is proved). `Err` is the client's message. `ddl`: the text
    /// might change the schema.
    /// `sql`: the text as the server lexes it ([`Self::server_text`]).
    fn judge_text(&mut self, sql: &str, ddl: bool) -> Result<Option<Exposure>, String> {
        if self.map.due_after(self.view_rules().refresh) {
            self.map.refresh_in_background();
        }
        let text = sql.as_bytes();
        if ddl {
            self.ddl_pending = true;
        }
        let settings = self.settings.lexing();
        let verdict = self.with_view(|view| {
            let (hit, shape) = view.passed(sql, settings);
            if !hit {
                for reading in readings(sql, settings) {
                    guard::check(sql, reading, &view.guard)?;
                }
                view.passed.remember(text, shape.as_deref(), ());
            }
            Ok::<_, guard::Leak>(view.exposure(text, Some(sql), settings))
        });
        match verdict {
            None => Err(
                "pgward's column map is not available, so masked data cannot be protected".into(),
            ),
            Some(Ok(found)) => Ok(found),
            Some(Err(leak)) => {
                if leak.stale {
                    self.map.invalidate();
                }
                Err(leak.why)
            }
        }
    }

    /// What the text a Bind or Execute runs exposes beyond its rows
    /// (`None`: no text is known, or no map: nothing is proved).
    fn exposure(&self, text: Option<&[u8]>) -> Option<Exposure> {
        let text = text?;
        let settings = self.settings.lexing();
        // Known by the text the server lexes: a UTF8 session's bytes as
        // they are (checked only on a miss), others' converted first.
        let converted = match self.settings.client_encoding() {
            ClientEncoding::Utf8 => None,
            other => Some(other.to_utf8(text).ok()?.into_owned()),
        };
        let text = converted.as_deref().map_or(text, str::as_bytes);
        self.with_view(|view| view.exposure(text, converted.as_deref(), settings))
            .flatten()
    }

    /// The text the server lexes, as UTF-8: `text` converted from the
    /// session's client_encoding as last reported, as the statement rules
    /// convert it (`policy::encoding`). Read as UTF-8 whatever the
    /// encoding, a LATIN1 session's UTF-8 bytes of `"ssné"` would be judged
    /// for a column the server reads as `"ssnÃ©"`, and in SJIS the
    /// backslash of `E'ぁ\'` is a character's second byte, so the rest of
    /// the "string" runs as SQL. Text the conversion cannot judge is
    /// refused, and so is non-ASCII text while client_encoding may change
    /// before the server reads it, when the statement rules, which
    /// otherwise refuse it (`session/rules/encoding.rs`), judge nothing.
    fn server_text<'t>(
        &self,
        ctx: &RequestContext<'_>,
        text: &'t [u8],
    ) -> Result<std::borrow::Cow<'t, str>, Refusal> {
        if !text.is_ascii() && ctx.rules.policy.is_inert() && ctx.tracker.settings_may_change() {
            return Err(Refusal::new(
                Sqlstate::from_code("55000"),
                "statement denied by pgward masking: client_encoding may change before the \
                 server reads this text (a request before it is still unanswered), and the \
                 text is not ASCII",
            )
            .with_hint("Send non-ASCII text after the answers to the requests before it."));
        }
        self.settings.client_encoding().to_utf8(text).map_err(|e| {
            Refusal::new(Sqlstate::from_code(e.code), e.message)
                .with_hint("Use client_encoding UTF8 (or a single-byte encoding such as LATIN1).")
        })
    }

    /// Whether the current map was read under the mask rules of the
    /// request sent last (after a reload it is read again; until then it
    /// answers for the old rules only). No map: the guard says so.
    fn map_answers_for_request(&self) -> bool {
        let rules = self.view_rules();
        self.map_cache
            .borrow_mut()
            .current()
            .is_none_or(|map| map.answers_for(&rules))
    }

    /// Whether the map in force predates this session's own DDL.
    fn map_predates_own_ddl(&mut self) -> bool {
        let Some(before) = &self.map_before_ddl else {
            return false;
        };
        let replaced = self
            .map
            .current()
            .is_some_and(|now| !Arc::ptr_eq(&now, before));
        if replaced && !self.map.due() {
            self.map_before_ddl = None;
            return false;
        }
        true
    }

    /// Holds a statement until the map has been read again after this
    /// session's DDL, then judges it under the new map.
    fn hold_for_refresh(&self, text: &[u8]) -> Decision {
        let (release, decision) = tokio::sync::oneshot::channel();
        let map = Arc::clone(&self.map);
        let identity = self.identity.clone();
        let settings = self.settings.lexing();
        let text = text.to_vec();
        let limit = map.config().catalog_timeout;
        tokio::spawn(async move {
            let judged = async {
                map.refresh().await.map_err(|e| e.to_string())?;
                let current = map
                    .current()
                    .ok_or_else(|| "pgward's column map is not available".to_owned())?;
                // Judged under the rules the map was read under (its
                // columns name rules by their place in them).
                let config = current.built_under.clone().unwrap_or_else(|| map.config());
                let masked = Masked::from_map(&current, |rule| {
                    config
                        .rules
                        .get(rule)
                        .is_some_and(|r| r.applies_to(&identity))
                });
                let sql = std::str::from_utf8(&text)
                    .map_err(|_| "statement text is not valid UTF-8".to_owned())?;
                let readings = readings(sql, settings);
                for reading in &readings {
                    guard::check(sql, *reading, &masked).map_err(|leak| leak.why)?;
                }
                let tables = masked
                    .tables
                    .iter()
                    .map(|(schema, table, _)| (schema.clone(), table.clone()))
                    .collect();
                let found = exposure::analyze_readings(sql, &readings, &current, &tables);
                if let Some(why) = found.refusal() {
                    return Err(why);
                }
                Ok::<(), String>(())
            };
            let outcome = match judged.await {
                Ok(()) => Release::Run,
                Err(why) => Release::Refuse(masking_refusal(why)),
            };
            let _ = release.send(outcome);
        });
        Decision::Hold(Hold::new(std::time::Instant::now() + limit, decision))
    }

    /// Notes a request that may run code pgward cannot see: its answers,
    /// up to the ReadyForQuery that ends it, carry no server message.
    fn mark_unclean(&mut self, ctx: &RequestContext<'_>) {
        let due = self.answered + ctx.tracker.ready_pending() + 1;
        self.unclean.insert(due);
    }

    /// What a result that passes untouched is planned under: its fields,
    /// formats, and the map and rules of the view (`None`: no fields or no
    /// map).
    fn pass_key(&self, result: &ResultInfo) -> Option<PassKey> {
        Some(PassKey {
            fields: Arc::clone(result.fields.as_ref()?),
            formats: result.formats.clone(),
            map: Arc::clone(self.map_cache.borrow_mut().current()?),
            config: self.view_rules(),
        })
    }

    /// Whether `result` is planned as the last result that passed was:
    /// the same fields (the tracker shares the fields of a description
    /// that repeats the last one byte for byte), the same formats, under
    /// the same map and rules. The plan is a function of those alone (and
    /// of the identity, the phase's own), so it passes again.
    fn passes_again(&self, result: &ResultInfo) -> bool {
        let (Some(last), Some(fields)) = (&self.last_pass, &result.fields) else {
            return false;
        };
        let same_formats = match (&last.formats, &result.formats) {
            (None, None) => true,
            (Some(a), Some(b)) => a[..] == b[..],
            _ => false,
        };
        Arc::ptr_eq(&last.fields, fields)
            && same_formats
            && Arc::ptr_eq(&last.config, &self.view_rules())
            && self
                .map_cache
                .borrow_mut()
                .current()
                .is_some_and(|map| Arc::ptr_eq(&last.map, map))
    }

    /// The mask rules a view is built under now: the request's, else
    /// those in force.
    fn view_rules(&self) -> Arc<MaskConfig> {
        match &self.request_rules {
            Some(rules) => Arc::clone(rules),
            None => self.map.config(),
        }
    }

    /// The plan for rows described by `fields`, with `formats` from Bind
    /// (or the description's own for a simple query).
    fn plan(&self, fields: &[FieldInfo], formats: Option<&[i16]>) -> Plan {
        let identity = &self.identity;
        let planned = self.with_view(|view| {
            let mut plan = RowPlan::default();
            for (i, f) in fields.iter().enumerate() {
                let format = match formats {
                    None => f.format,
                    Some([]) => 0,
                    Some([one]) => *one,
                    Some(all) => all.get(i).copied().unwrap_or(0),
                };
                // A whole-row or system column of a table with masked
                // columns (attribute number 0 or below) would carry them
                // unmasked.
                if f.attnum <= 0
                    && f.table_oid != 0
                    && view.map.columns.iter().any(|((t, _), c)| {
                        *t == f.table_oid
                            && view
                                .config
                                .rules
                                .get(c.rule)
                                .is_some_and(|r| r.applies_to(identity))
                    })
                {
                    return Err("a whole-row column of a table with masked columns".to_owned());
                }
                if f.table_oid != 0 {
                    let newer_table = !view.map.relation_oids.contains(&f.table_oid);
                    let newer_column = view
                        .map
                        .max_attnum
                        .get(&f.table_oid)
                        .is_some_and(|max| f.attnum > *max);
                    if newer_table || newer_column {
                        return Err("stale".to_owned());
                    }
                }
                let mask = view
                    .map
                    .columns
                    .get(&(f.table_oid, f.attnum))
                    .and_then(|c| view.config.rules.get(c.rule))
                    .filter(|r| r.applies_to(identity))
                    .map(|r| ColumnMask {
                        strategy: Arc::clone(&r.strategy),
                        binary: format == 1,
                        kind: BinaryKind::of(f.type_oid),
                    });
                plan.columns.push(mask);
            }
            Ok(plan)
        });
        match planned {
            None if !self.map_answers_for_request() => Plan::Withhold(
                "the masking rules changed and pgward's column map is being read again; retry in a moment"
                    .into(),
            ),
            None => Plan::Withhold("pgward's column map is not available".into()),
            Some(Ok(plan)) => Plan::Rewrite(plan),
            Some(Err(why)) if why == "stale" => {
                self.map.invalidate();
                Plan::Withhold(
                    "the result has a column newer than pgward's column map; retry in a moment"
                        .into(),
                )
            }
            Some(Err(why)) => Plan::Withhold(why),
        }
    }
}

fn masking_refusal(why: String) -> Refusal {
    Refusal::new(Sqlstate::INSUFFICIENT_PRIVILEGE, format!("statement denied by pgward masking: {why}")).with_hint(
        "Masked columns may only be selected as they are, not used in expressions, filters, ordering or copies.",
    )
}

impl Phase for MaskPhase {
    fn name(&self) -> &'static str {
        "masking"
    }

    fn on_request(&mut self, ctx: &RequestContext<'_>) -> Decision {
        if !self
            .request_rules
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &ctx.rules.masking))
        {
            self.request_rules = Some(Arc::clone(&ctx.rules.masking));
        }
        let found = match (ctx.kind, ctx.text) {
            (RequestKind::Query | RequestKind::Parse, Some(text)) => {
                let sql = match self.server_text(ctx, text) {
                    Ok(sql) => sql,
                    Err(refusal) => return Decision::Refuse(refusal),
                };
                if self.map_predates_own_ddl() || !self.map_answers_for_request() {
                    // Judged once the map knows what the DDL made, or is
                    // read under the request's rules; its messages are
                    // withheld (nothing was proved).
                    self.mark_unclean(ctx);
                    if ctx.schema_may_change() {
                        self.ddl_pending = true;
                    }
                    return self.hold_for_refresh(sql.as_bytes());
                }
                match self.judge_text(&sql, ctx.schema_may_change()) {
                    Ok(found) => found,
                    Err(why) => return Decision::Refuse(masking_refusal(why)),
                }
            }
            (RequestKind::Bind | RequestKind::Execute, _) => self.exposure(ctx.text),
            _ => return Decision::Forward,
        };
        if let Some(why) = found.as_ref().and_then(Exposure::refusal) {
            if matches!(
                found.as_ref().and_then(|f| f.untrusted.as_ref()),
                Some(Untrusted::Unknown(_))
            ) {
                // Newer than the map: read it again; a retry may pass.
                self.map.invalidate();
            }
            return Decision::Refuse(masking_refusal(why));
        }
        match found {
            Some(Exposure { clean: true, .. }) => {}
            _ => self.mark_unclean(ctx),
        }
        Decision::Forward
    }

    fn withholds_parameter(&mut self, name: &[u8]) -> bool {
        // A statement can set application_name (or a custom setting) from
        // data; only the settings clients need to read results pass.
        !CLIENT_SETTINGS
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
    }

    fn takes_rows(&self) -> bool {
        true
    }

    fn on_result_start(&mut self, result: &ResultInfo) -> Rows {
        if self.passes_again(result) {
            self.plan = None;
            return Rows::Pass;
        }
        let plan = match &result.fields {
            Some(fields) => self.plan(fields, result.formats.as_deref()),
            None => {
                Plan::Withhold("rows arrived for a statement pgward has not seen described".into())
            }
        };
        let inspect = match &plan {
            Plan::Rewrite(p) => p.masks_anything(),
            Plan::Withhold(_) => true,
        };
        self.plan = inspect.then_some(plan);
        self.last_pass = if inspect { None } else { self.pass_key(result) };
        if inspect {
            Rows::Inspect
        } else {
            Rows::Pass
        }
    }

    fn on_row(&mut self, raw: FrameRef<'_>, out: &mut BytesMut) {
        if let Some(Plan::Rewrite(plan)) = &self.plan {
            match rewrite::rewrite_into(raw.raw(), plan, &self.key, out) {
                Ok(cells) => self.masked_cells += cells,
                Err(e) => self.plan = Some(Plan::Withhold(e.to_string())),
            }
        }
    }

    fn on_result_end(&mut self) -> Option<BytesMut> {
        if self.masked_cells > 0 {
            self.metrics.masked_cells.fetch_add(
                std::mem::take(&mut self.masked_cells),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        match self.plan.take() {
            Some(Plan::Withhold(why)) => {
                let mut out = BytesMut::new();
                encode::error_response(
                    &mut out,
                    Severity::Error,
                    Sqlstate::INSUFFICIENT_PRIVILEGE.as_str(),
                    &format!("pgward withheld this result: {why}"),
                    Some("The result may hold masked columns that pgward could not mask."),
                );
                Some(out)
            }
            _ => None,
        }
    }

    fn rewrites_notices(&self) -> bool {
        true
    }

    fn on_notice(&mut self, frame: FrameRef<'_>) -> Option<BytesMut> {
        if frame.tag() == b'A' {
            Some(scrub_notification(frame))
        } else if self.unclean.contains(&(self.answered + 1)) {
            withhold_message(frame)
        } else {
            scrub(frame)
        }
    }

    fn on_ready(&mut self, _status: crate::wire::backend::TransactionStatus) {
        self.answered += 1;
        self.unclean.remove(&self.answered);
        self.plan = None;
        if std::mem::take(&mut self.ddl_pending) {
            self.map_before_ddl = self.map.current();
            self.map.invalidate();
        }
    }
}

/// Whether a statement might change the schema (so the map is refreshed
/// once it has run). A cheap test on the bytes, without allocating (it runs
/// on every statement while masking is on); a miss is covered by the
/// newer-relation and newer-column checks and the refresh timer.
pub(crate) fn schema_may_change(sql: &[u8]) -> bool {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    sql[start..]
        .get(..7)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"COMMENT"))
        || [&b"CREATE"[..], b"ALTER", b"DROP"].iter().any(|w| {
            sql[start..]
                .get(..w.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(w))
        })
        || words_before_spaces(sql)
}

/// Whether `CREATE `, `ALTER ` or `DROP ` (any case) occurs anywhere in
/// `sql`: each is a space preceded by the word, so only the bytes before
/// each space are compared (this runs on every statement of a masked
/// session).
fn words_before_spaces(sql: &[u8]) -> bool {
    // One pass that keeps the byte before: a word is compared only at a
    // space after a byte that ends one (`e`, `r`, `p`, any case). (memchr
    // over the spaces costs a call per space, more on statements this
    // short.)
    let mut before = 0u8;
    for (i, &b) in sql.iter().enumerate() {
        if b == b' ' && matches!(before | 0x20, b'e' | b'r' | b'p') && word_ends_at(sql, i) {
            return true;
        }
        before = b;
    }
    false
}

/// Whether `CREATE`, `ALTER` or `DROP` (any case) ends just before `end`.
#[cold]
fn word_ends_at(sql: &[u8], end: usize) -> bool {
    [&b"CREATE"[..], b"ALTER", b"DROP"].iter().any(|w| {
        end.checked_sub(w.len())
            .is_some_and(|start| sql[start..end].eq_ignore_ascii_case(w))
    })
}

/// For masked identities, a NOTIFY payload is withheld: another session may
/// have put a masked value in it.
pub fn scrub_notification(frame: FrameRef<'_>) -> BytesMut {
    let body = frame.body();
    let Some(rest) = body.get(4..) else {
        return BytesMut::from(frame.raw());
    };
    let Some(end) = rest.iter().position(|b| *b == 0) else {
        return BytesMut::from(frame.raw());
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(b"A\0\0\0\0");
    out.extend_from_slice(&body[..4]);
    out.extend_from_slice(&rest[..=end]);
    out.extend_from_slice(b"(withheld by pgward)\0");
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out
}

/// The lexing settings a text must pass under: where it has a backslash,
/// the setting could move a string's end, so both readings.
fn readings(sql: &str, settings: LexSettings) -> Vec<LexSettings> {
    let mut readings = vec![settings];
    if sql.contains('\\') {
        readings.push(LexSettings {
            standard_conforming_strings: !settings.standard_conforming_strings,
        });
    }
    readings
}

/// The ParameterStatus settings a masked session still receives after
/// login: what drivers need to read results and the session's state.
/// application_name and custom settings are withheld (a statement, or a
/// trigger it fires, could set them from data).
const CLIENT_SETTINGS: &[&str] = &[
    "client_encoding",
    "server_encoding",
    "server_version",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "integer_datetimes",
    "standard_conforming_strings",
    "is_superuser",
    "session_authorization",
    "default_transaction_read_only",
    "in_hot_standby",
];

/// An error or notice of a request that may have run code pgward cannot
/// see into (a trigger, a function, a view): its message could carry a
/// masked value, so only the severity, the SQLSTATE and the position in
/// the client's own text pass, with a message that says so.
pub fn withhold_message(frame: FrameRef<'_>) -> Option<BytesMut> {
    let fields = notice_fields(frame).ok()?;
    let code = fields
        .iter()
        .find(|(c, _)| *c == b'C')
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let message = format!(
        "(message withheld by pgward: the statement may have run code pgward cannot see into, \
         and masked identities do not see its messages; SQLSTATE {code})"
    );
    let kept: Vec<(u8, &[u8])> = fields
        .into_iter()
        .filter(|(c, _)| matches!(c, b'S' | b'V' | b'C' | b'P'))
        .chain(std::iter::once((b'M', message.as_bytes())))
        .collect();
    let mut out = BytesMut::new();
    encode::notice_like(&mut out, frame.tag(), &kept);
    Some(out)
}

/// For masked identities, error and notice fields that can quote values
/// (detail, where, hint, internal query) are withheld: a unique violation's
/// `Key (ssn)=(...)` or a cast error would otherwise carry a masked value.
pub fn scrub(frame: FrameRef<'_>) -> Option<BytesMut> {
    let tag = frame.tag();
    let Ok(fields) = notice_fields(frame) else {
        return None;
    };
    if !fields
        .iter()
        .any(|(c, _)| matches!(c, b'D' | b'W' | b'H' | b'q' | b'p'))
    {
        return None;
    }
    let kept: Vec<(u8, &[u8])> = fields
        .into_iter()
        .filter(|(c, _)| !matches!(c, b'W' | b'q' | b'p'))
        .map(|(c, v)| match c {
            b'D' => (
                c,
                &b"(withheld by pgward: masked identities do not see error details)"[..],
            ),
            b'H' => (c, &b"(withheld by pgward)"[..]),
            _ => (c, v),
        })
        .collect();
    let mut out = BytesMut::new();
    encode::notice_like(&mut out, tag, &kept);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{schema_may_change, shape_key, words_before_spaces};
    use crate::policy::lexer::LexSettings;
    use proptest::prelude::*;

    proptest! {
        /// The same answer as a search for each word at every offset.
        #[test]
        fn words_before_spaces_is_a_substring_search(
            sql in "([a-zA-Z ;]{0,6}(create|ALTER|Drop|cReAtE|alter|DROP)?[ x]?){0,4}"
        ) {
            let sql = sql.as_bytes();
            let contains = |word: &[u8]| {
                sql.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word))
            };
            prop_assert_eq!(
                words_before_spaces(sql),
                contains(b"CREATE ") || contains(b"ALTER ") || contains(b"DROP ")
            );
        }
    }

    #[test]
    fn ddl_is_spotted_without_allocating() {
        for sql in [
            "CREATE TABLE t (a int)",
            "  alter table t add b int",
            "drop view v",
            "comment on table t is 'x'",
            "SELECT 1; create index i on t (a)",
        ] {
            assert!(schema_may_change(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT created_at FROM t",
            "UPDATE t SET a = 1 WHERE id = 2",
            "",
            "  ",
        ] {
            assert!(!schema_may_change(sql.as_bytes()), "{sql}");
        }
    }

    /// A digit twin of the last text takes its key; a select-list position
    /// (`ORDER BY 2`) or a second reading (a backslash) never does.
    #[test]
    fn only_a_digit_twin_shares_the_last_shape_key() {
        let on = LexSettings {
            standard_conforming_strings: true,
        };
        let off = LexSettings {
            standard_conforming_strings: false,
        };
        let key =
            |last: &mut _, sql: &str, settings| shape_key(last, sql, settings).map(<[u8]>::to_vec);
        let mut last = None;
        let first = key(&mut last, "SELECT a, b FROM t WHERE id = 5", on);
        let tokens_kept = last
            .as_ref()
            .is_some_and(|l: &super::LastShape| l.literals.is_some());
        assert!(tokens_kept, "a digit twin may reuse this key");
        assert_eq!(
            key(&mut last, "SELECT a, b FROM t WHERE id = 6000", on),
            first
        );
        assert_eq!(
            last.as_ref().map(|l| l.text.as_str()),
            Some("SELECT a, b FROM t WHERE id = 5")
        );
        // Another setting, another statement: scanned again.
        let other = key(&mut last, "SELECT a, b FROM t WHERE id = 5", off);
        assert_eq!(last.as_ref().map(|l| l.settings), Some(off));
        assert!(other.is_some());
        // Positions stay in the guard shape, so they are never twins.
        let by_one = key(&mut last, "SELECT a, b FROM t ORDER BY 1", on);
        assert!(last.as_ref().is_some_and(|l| l.literals.is_none()));
        let by_two = key(&mut last, "SELECT a, b FROM t ORDER BY 2", on);
        assert_ne!(by_one, by_two);
        // A backslash: two readings, no twin.
        key(&mut last, "SELECT 'a\\' FROM t WHERE id = 5", on);
        assert!(last.as_ref().is_some_and(|l| l.literals.is_none()));
    }
}
