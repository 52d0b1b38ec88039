//! The masking phases of a session whose identity sees some column masked.
//!
//! Request side: every Query and Parse goes through the guard
//! (`mask::guard`), which refuses any way a masked column could reach the
//! client other than as a bare output column.
//!
//! Response side: a result's plan comes from its RowDescription (table OID
//! and attribute number per column). In the extended protocol, Execute sends
//! no RowDescription, so the client half follows statements and portals
//! (Parse, Bind with its result formats, Describe, Execute, Close, Sync) and
//! queues what each request will be answered with; the server half reads
//! that queue to know which description and formats the rows of an Execute
//! have. Rows whose plan cannot be known are withheld with an error, never
//! sent in clear.

use super::rules::ReportedSettings;
use crate::mask::guard::{self, Masked};
use crate::mask::rewrite::{self, ColumnMask, RowPlan};
use crate::mask::rules::MaskConfig;
use crate::mask::store::UpstreamMap;
use crate::mask::strategy::BinaryKind;
use crate::policy::rules::Identity;
use crate::wire::backend::{notice_fields, row_description, FieldInfo};
use crate::wire::encode::{self, Severity};
use crate::wire::frontend::{bind_view, execute_portal, target_view};
use crate::wire::Frame;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// What a request will be answered with, in order.
#[derive(Debug, Clone)]
enum Expect {
    /// A simple Query: RowDescription, rows, ..., ReadyForQuery.
    Query,
    /// Describe of a statement (by id): ParameterDescription, then
    /// RowDescription or NoData.
    DescribeStatement(u64),
    /// Describe of a portal (by id): RowDescription or NoData.
    DescribePortal(u64),
    /// Execute of a portal: rows, then CommandComplete / PortalSuspended.
    Execute {
        statement: u64,
        portal: u64,
        formats: Arc<Vec<i16>>,
    },
    /// Sync: ReadyForQuery.
    Sync,
}

/// How the rows arriving now are treated.
enum Rows {
    /// No result in progress.
    Idle,
    /// Apply this plan.
    Plan(RowPlan),
    /// Drop them; the result ends with an error instead.
    Withhold(String),
}

/// State both halves share.
struct Shared {
    expect: VecDeque<Expect>,
    statements: HashMap<u64, Arc<Vec<FieldInfo>>>,
    portals: HashMap<u64, Arc<Vec<FieldInfo>>>,
    rows: Rows,
    /// A statement that may change the schema ran: refresh at ReadyForQuery.
    ddl_pending: bool,
}

/// What the identity sees masked, derived from the map and the rules.
struct View {
    map: Arc<crate::mask::catalog::MaskMap>,
    config: Arc<MaskConfig>,
    guard: Masked,
    /// Texts the guard passed under this map (drivers repeat their Parse
    /// texts); emptied when full, and gone with the view when the map or
    /// the rules change.
    passed: Mutex<std::collections::HashSet<Vec<u8>>>,
}

/// Most texts remembered as passed per session.
const PASSED_TEXTS: usize = 1024;

/// The masking state of one session, shared by its two halves.
pub struct MaskSession {
    map: Arc<UpstreamMap>,
    identity: Identity,
    settings: Arc<ReportedSettings>,
    shared: Mutex<Shared>,
    view: Mutex<Option<Arc<View>>>,
}

impl MaskSession {
    /// The masking state for `identity`, or `None` when no rule masks
    /// anything for it (then the session has no masking phases at all).
    pub fn for_identity(
        map: Arc<UpstreamMap>,
        identity: Identity,
        settings: Arc<ReportedSettings>,
    ) -> Option<Arc<Self>> {
        let config = map.config();
        if !config.rules.iter().any(|r| r.applies_to(&identity)) {
            return None;
        }
        Some(Arc::new(Self {
            map,
            identity,
            settings,
            shared: Mutex::new(Shared {
                expect: VecDeque::new(),
                statements: HashMap::new(),
                portals: HashMap::new(),
                rows: Rows::Idle,
                ddl_pending: false,
            }),
            view: Mutex::new(None),
        }))
    }

    /// The identity's view of the current map, rebuilt when the map changes.
    fn view(&self) -> Option<Arc<View>> {
        let map = self.map.current()?;
        let config = self.map.config();
        let mut cached = self.view.lock().ok()?;
        if let Some(v) = cached.as_ref() {
            if Arc::ptr_eq(&v.map, &map) && Arc::ptr_eq(&v.config, &config) {
                return Some(Arc::clone(v));
            }
        }
        let guard = Masked::from_map(&map, |rule| {
            config
                .rules
                .get(rule)
                .is_some_and(|r| r.applies_to(&self.identity))
        });
        let v = Arc::new(View {
            map,
            config,
            guard,
            passed: Mutex::new(std::collections::HashSet::new()),
        });
        *cached = Some(Arc::clone(&v));
        Some(v)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> Option<T> {
        self.shared.lock().ok().map(|mut s| f(&mut s))
    }

    /// Judges one statement text: `Err` is the client's message.
    pub fn guard(&self, text: &[u8]) -> Result<(), String> {
        if self.map.due() {
            self.map.refresh_in_background();
        }
        let Some(view) = self.view() else {
            return Err(
                "pgward's column map is not available, so masked data cannot be protected".into(),
            );
        };
        let Ok(sql) = std::str::from_utf8(text) else {
            return Err("statement text is not valid UTF-8".into());
        };
        if schema_may_change(text) {
            self.with(|s| s.ddl_pending = true);
        }
        if view.passed.lock().is_ok_and(|p| p.contains(text)) {
            return Ok(());
        }
        // Where the text has a backslash, the lexing setting could move a
        // string's end: the text must pass under both readings.
        let settings = self.settings.lexing();
        let mut readings = vec![settings];
        if sql.contains('\\') {
            readings.push(crate::policy::lexer::LexSettings {
                standard_conforming_strings: !settings.standard_conforming_strings,
            });
        }
        for reading in readings {
            if let Err(leak) = guard::check(sql, reading, &view.guard) {
                if leak.stale {
                    self.map.invalidate();
                }
                return Err(leak.why);
            }
        }
        if let Ok(mut passed) = view.passed.lock() {
            if passed.len() >= PASSED_TEXTS {
                passed.clear();
            }
            passed.insert(text.to_vec());
        }
        Ok(())
    }

    /// The plan for rows described by `fields`, with `formats` from Bind
    /// (or the description's own for a simple query).
    fn plan(&self, fields: &[FieldInfo], formats: Option<&[i16]>) -> Rows {
        let Some(view) = self.view() else {
            return Rows::Withhold("pgward's column map is not available".into());
        };
        let mut plan = RowPlan::default();
        for (i, f) in fields.iter().enumerate() {
            let format = match formats {
                None => f.format,
                Some([]) => 0,
                Some([one]) => *one,
                Some(all) => all.get(i).copied().unwrap_or(0),
            };
            // A whole-row or system column of a table with masked columns
            // (attribute number 0 or below) would carry them unmasked.
            if f.attnum <= 0
                && f.table_oid != 0
                && view.map.columns.iter().any(|((t, _), c)| {
                    *t == f.table_oid
                        && view
                            .config
                            .rules
                            .get(c.rule)
                            .is_some_and(|r| r.applies_to(&self.identity))
                })
            {
                return Rows::Withhold("a whole-row column of a table with masked columns".into());
            }
            if f.table_oid != 0 {
                let newer_table = !view.map.relation_oids.contains(&f.table_oid);
                let newer_column = view
                    .map
                    .max_attnum
                    .get(&f.table_oid)
                    .is_some_and(|max| f.attnum > *max);
                if newer_table || newer_column {
                    self.map.invalidate();
                    return Rows::Withhold(
                        "the result has a column newer than pgward's column map; retry in a moment"
                            .into(),
                    );
                }
            }
            let mask = view
                .map
                .columns
                .get(&(f.table_oid, f.attnum))
                .and_then(|c| view.config.rules.get(c.rule))
                .filter(|r| r.applies_to(&self.identity))
                .map(|r| ColumnMask {
                    strategy: Arc::clone(&r.strategy),
                    binary: format == 1,
                    kind: BinaryKind::of(f.type_oid),
                });
            plan.columns.push(mask);
        }
        Rows::Plan(plan)
    }

    fn hash_key(&self) -> crate::mask::strategy::HashKey {
        self.map.config().hash_key.clone()
    }
}

/// Whether a statement might change the schema (so the map is refreshed
/// once it has run). A cheap test on the bytes, without allocating (it runs
/// on every statement while masking is on); a miss is covered by the
/// newer-relation and newer-column checks and the refresh timer.
pub(crate) fn schema_may_change(sql: &[u8]) -> bool {
    let contains = |word: &[u8]| {
        sql.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
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
        || contains(b"CREATE ")
        || contains(b"ALTER ")
        || contains(b"DROP ")
}

/// The client half's bookkeeping of statement and portal names.
pub struct MaskFrontend {
    session: Arc<MaskSession>,
    next_id: u64,
    statements: HashMap<Vec<u8>, u64>,
    portals: HashMap<Vec<u8>, Portal>,
}

/// A bound portal: its statement's id, its own id, and Bind's result formats.
type Portal = (u64, u64, Arc<Vec<i16>>);

impl MaskFrontend {
    /// The client half.
    pub fn new(session: Arc<MaskSession>) -> Self {
        Self {
            session,
            next_id: 0,
            statements: HashMap::new(),
            portals: HashMap::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A Query goes out (the client's or a stand-in for a refused message).
    pub fn query_sent(&mut self) {
        self.session.with(|s| s.expect.push_back(Expect::Query));
    }

    /// Judges a Query or Parse text.
    pub fn guard(&self, text: &[u8]) -> Result<(), String> {
        self.session.guard(text)
    }

    /// A Parse goes out for statement `name` (a new statement each time).
    pub fn parse_sent(&mut self, name: &[u8]) {
        let id = self.id();
        self.statements.insert(name.to_vec(), id);
    }

    /// A Bind goes out.
    pub fn bind_sent(&mut self, frame: &Frame) {
        let Ok(b) = bind_view(frame) else { return };
        let statement = self.statements.get(b.statement).copied().unwrap_or(0);
        let portal = self.id();
        self.portals.insert(
            b.portal.to_vec(),
            (statement, portal, Arc::new(b.result_formats)),
        );
    }

    /// A Describe goes out.
    pub fn describe_sent(&mut self, frame: &Frame) {
        let Ok((kind, name)) = target_view(frame) else {
            return;
        };
        let expect = if kind == b'S' {
            Expect::DescribeStatement(self.statements.get(name).copied().unwrap_or(0))
        } else {
            Expect::DescribePortal(self.portals.get(name).map_or(0, |p| p.1))
        };
        self.session.with(|s| s.expect.push_back(expect));
    }

    /// An Execute goes out.
    pub fn execute_sent(&mut self, frame: &Frame) {
        let Ok(name) = execute_portal(frame) else {
            return;
        };
        let (statement, portal, formats) =
            self.portals
                .get(name)
                .cloned()
                .unwrap_or((0, 0, Arc::new(Vec::new())));
        self.session.with(|s| {
            s.expect.push_back(Expect::Execute {
                statement,
                portal,
                formats,
            })
        });
    }

    /// A Close goes out.
    pub fn close_sent(&mut self, frame: &Frame) {
        let Ok((kind, name)) = target_view(frame) else {
            return;
        };
        if kind == b'S' {
            self.statements.remove(name);
        } else {
            self.portals.remove(name);
        }
    }

    /// A Sync goes out.
    pub fn sync_sent(&mut self) {
        // Unnamed portals end with the transaction's implicit block; named
        // ones live on, as the server keeps them.
        self.session.with(|s| s.expect.push_back(Expect::Sync));
    }
}

/// The server half: plans results and rewrites rows.
pub struct MaskBackend {
    session: Arc<MaskSession>,
    key: crate::mask::strategy::HashKey,
}

impl MaskBackend {
    /// The server half.
    pub fn new(session: Arc<MaskSession>) -> Self {
        let key = session.hash_key();
        Self { session, key }
    }

    /// A RowDescription: a statement's or portal's description, or the start
    /// of a simple query's result.
    pub fn row_description(&mut self, frame: &Frame) {
        let fields = match row_description(frame) {
            Ok(f) => Arc::new(f),
            Err(_) => {
                self.session
                    .with(|s| s.rows = Rows::Withhold("malformed RowDescription".into()));
                return;
            }
        };
        let front = self.session.with(|s| s.expect.front().cloned()).flatten();
        match front {
            Some(Expect::DescribeStatement(id)) => {
                self.session.with(|s| {
                    s.statements.insert(id, Arc::clone(&fields));
                    s.expect.pop_front();
                });
            }
            Some(Expect::DescribePortal(id)) => {
                self.session.with(|s| {
                    s.portals.insert(id, Arc::clone(&fields));
                    s.expect.pop_front();
                });
            }
            _ => {
                let rows = self.session.plan(&fields, None);
                self.session.with(|s| s.rows = rows);
            }
        }
    }

    /// NoData: a Describe with no result columns.
    pub fn no_data(&mut self) {
        self.session.with(|s| {
            if matches!(
                s.expect.front(),
                Some(Expect::DescribeStatement(_) | Expect::DescribePortal(_))
            ) {
                s.expect.pop_front();
            }
        });
    }

    /// A DataRow (`raw`: the whole message): appended to `out` rewritten or
    /// as is, or withheld.
    pub fn data_row(&mut self, raw: &[u8], out: &mut BytesMut) {
        let session = &self.session;
        let Ok(mut shared) = session.shared.lock() else {
            return;
        };
        let shared = &mut *shared;
        if let Rows::Idle = shared.rows {
            // The rows of an Execute: plan from the portal's or statement's
            // description and Bind's formats.
            shared.rows = match shared.expect.front() {
                Some(Expect::Execute {
                    statement,
                    portal,
                    formats,
                }) => {
                    match shared
                        .portals
                        .get(portal)
                        .or_else(|| shared.statements.get(statement))
                    {
                        Some(fields) => session.plan(fields, Some(formats)),
                        None => Rows::Withhold(
                            "rows arrived for a statement pgward has not seen described".into(),
                        ),
                    }
                }
                _ => Rows::Withhold("rows arrived without a description".into()),
            };
        }
        if let Rows::Plan(plan) = &shared.rows {
            if let Err(e) = rewrite::rewrite_into(raw, plan, &self.key, out) {
                shared.rows = Rows::Withhold(e.to_string());
            }
        }
    }

    /// The end of a result (CommandComplete, EmptyQueryResponse,
    /// PortalSuspended): forwarded, or replaced by an error if rows were
    /// withheld.
    pub fn result_end(&mut self, frame: Frame) -> Bytes {
        let withheld = self
            .session
            .with(|s| {
                let rows = std::mem::replace(&mut s.rows, Rows::Idle);
                if matches!(s.expect.front(), Some(Expect::Execute { .. })) {
                    s.expect.pop_front();
                }
                match rows {
                    Rows::Withhold(why) => Some(why),
                    _ => None,
                }
            })
            .flatten();
        match withheld {
            None => frame.into_raw(),
            Some(why) => {
                let mut out = BytesMut::new();
                encode::error_response(
                    &mut out,
                    Severity::Error,
                    "42501",
                    &format!("pgward withheld this result: {why}"),
                    Some("The result may hold masked columns that pgward could not mask."),
                );
                out.freeze()
            }
        }
    }

    /// An ErrorResponse: the extended protocol skips to Sync.
    pub fn error(&mut self, frame: Frame) -> Bytes {
        self.session.with(|s| {
            s.rows = Rows::Idle;
            if !matches!(s.expect.front(), Some(Expect::Query) | None) {
                while !matches!(s.expect.front(), Some(Expect::Sync) | None) {
                    s.expect.pop_front();
                }
            }
        });
        scrub(frame)
    }

    /// ReadyForQuery: one request is fully answered.
    pub fn ready(&mut self) {
        let ddl = self
            .session
            .with(|s| {
                s.rows = Rows::Idle;
                while let Some(e) = s.expect.pop_front() {
                    if matches!(e, Expect::Sync | Expect::Query) {
                        break;
                    }
                }
                std::mem::take(&mut s.ddl_pending)
            })
            .unwrap_or(false);
        if ddl {
            self.session.map.invalidate();
        }
    }
}

/// For masked identities, a NOTIFY payload is withheld: another session may
/// have put a masked value in it.
pub fn scrub_notification(frame: Frame) -> Bytes {
    let body = frame.body();
    let Some(rest) = body.get(4..) else {
        return frame.into_raw();
    };
    let Some(end) = rest.iter().position(|b| *b == 0) else {
        return frame.into_raw();
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(b"A\0\0\0\0");
    out.extend_from_slice(&body[..4]);
    out.extend_from_slice(&rest[..=end]);
    out.extend_from_slice(b"(withheld by pgward)\0");
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// For masked identities, error and notice fields that can quote values
/// (detail, where, hint, internal query) are withheld: a unique violation's
/// `Key (ssn)=(...)` or a cast error would otherwise carry a masked value.
pub fn scrub(frame: Frame) -> Bytes {
    let tag = frame.tag();
    let Ok(fields) = notice_fields(&frame) else {
        return frame.into_raw();
    };
    if !fields
        .iter()
        .any(|(c, _)| matches!(c, b'D' | b'W' | b'H' | b'q' | b'p'))
    {
        return frame.into_raw();
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
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::schema_may_change;

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
}
