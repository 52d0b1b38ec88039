//! Statement rules: classify every statement with PostgreSQL's own grammar
//! (libpg_query) and allow, deny, log or hold it per identity. A pure
//! function of (text, lexing settings, identity): the session layer feeds it
//! and acts on its verdict; nothing here does I/O.
//!
//! - [`lexer`]: PostgreSQL's scanner; fingerprints and normalized text.
//! - [`classify`]: parse trees -> [`facts`] (kinds, relations, functions).
//! - [`rules`]: the ordered rules and their evaluation.
//! - `config::policy` (in the config layer) compiles `[policy]` into a [`rules::RuleSet`].
//! - [`kind`]: statement kind names.
//!
//! Fast path: a verdict is cached under the exact text and under the
//! statement's token shape (literals left out), each with the lexing setting
//! and the identity, so a repeated text costs one lookup and a repeated shape
//! one scan and one lookup, not a parse.

mod audience_memo;
pub mod called;
pub mod classify;
mod code;
pub mod encoding;
mod encoding_tables;
pub mod facts;
mod hazards;
pub use hazards::search_path_lists_pg_temp;
pub mod kind;
pub mod lexer;
mod params;
pub mod parse_error;
mod plpgsql;
mod scan_memo;
mod text_key;
mod verdict_memo;
use params::Bound;
pub use params::Param;
pub mod rules;
pub mod versions;

use classify::{classify_bound, ClassifyError, Env};
use encoding::ClientEncoding;
use facts::{Effect, Statement};
use kind::Kind;
use lexer::LexSettings;
use rules::{Audience, Denial, Identity, RuleSet, Verdict};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What pgward knows of the session's lexing settings when a message arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lexing {
    /// Nothing is in flight: the server's last report holds.
    Known(LexSettings),
    /// Statements are still running that may change the settings (a SET, a
    /// function calling set_config, a ROLLBACK): the text is judged under
    /// every setting it could be read with, and the strictest verdict wins.
    Uncertain(LexSettings),
}

/// What pgward knows of the session when a message arrives, besides its
/// text: gathered by the session from the server's reports and from the
/// statements it allowed, and passed in (the policy keeps no session state).
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// The lexing settings.
    pub lexing: Lexing,
    /// The session's own backend process id, when known.
    pub own_pid: Option<i32>,
    /// Bare names of the temporary tables the session created and still has.
    pub own_temp_tables: &'a BTreeSet<String>,
    /// The server's major version (from its `server_version` at login).
    pub server_major: u32,
    /// The session's client_encoding, as the server last reported it.
    pub client_encoding: &'a ClientEncoding,
    /// The database's user-defined code, when the session layer read it:
    /// what a statement calls, triggers or fills is judged with it (see
    /// [`called`]). `None`: only the statement's own text is judged.
    pub code: Option<&'a called::CodeCatalog>,
    /// The rules that apply to the identity judged, when the caller kept
    /// them ([`Policy::audience_of`] for that identity): used only by the
    /// policy that worked them out, others work them out again.
    pub audience: Option<&'a KnownAudience>,
}

/// The rules of one policy that apply to one identity, worked out once by
/// [`Policy::audience_of`] for a caller that judges many statements of that
/// identity (a session), in place of the thread's memo of the last identity
/// judged, which compares the whole identity on every statement. Tied to
/// the policy by its id (never reused: a reload makes a new one); the
/// caller keeps it beside the identity it was made for, which it does not
/// change.
#[derive(Debug, Clone)]
pub struct KnownAudience {
    policy: u64,
    audience: Audience,
}

static NO_TABLES: BTreeSet<String> = BTreeSet::new();
static UTF8: ClientEncoding = ClientEncoding::Utf8;

impl Session<'static> {
    /// A session of which only the lexing settings are known.
    pub fn new(lexing: Lexing) -> Self {
        Self {
            lexing,
            own_pid: None,
            own_temp_tables: &NO_TABLES,
            server_major: versions::GRAMMAR_MAJOR,
            client_encoding: &UTF8,
            code: None,
            audience: None,
        }
    }
}

/// The decision on one message, and what it does to prepared statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Allow (with matched `log` rules) or deny.
    pub verdict: Verdict,
    /// Effects to apply if the message runs.
    pub effects: Vec<Effect>,
    /// The message's normalized text (for EXECUTE inheritance and logs).
    pub text: Arc<str>,
    /// Whether the verdict may be shared by texts of the same shape (no fact
    /// was read from a literal's value).
    by_shape: bool,
    /// Whether the verdict may be cached at all (no fact was read from the
    /// session's state).
    by_text: bool,
    /// Whether the verdict read `$n` parameters as unknown.
    by_params: bool,
    /// Whether a unit may change the database's code (DDL, in the text or
    /// in code it calls): the session has the code catalog read again once
    /// it ran.
    changes_schema: bool,
    /// Whether running it may change the session's client_encoding (see
    /// [`Outcome::sets_client_encoding`]).
    sets_client_encoding: bool,
    /// Whether it ends a transaction or rolls back to a savepoint (which
    /// undoes a SET of client_encoding made in it).
    ends_transaction: bool,
}

impl Outcome {
    fn deny(code: &'static str, message: String, hint: &str) -> Self {
        Self::refuse(Denial {
            code,
            message,
            detail: None,
            hint: Some(hint.into()),
            position: None,
        })
    }

    fn refuse(denial: Denial) -> Self {
        Self {
            verdict: Verdict::Deny(denial),
            effects: Vec::new(),
            text: Arc::from(""),
            by_shape: false,
            by_text: false,
            by_params: false,
            changes_schema: false,
            sets_client_encoding: false,
            ends_transaction: false,
        }
    }

    /// Whether the verdict was reached with `$n` parameters unknown (read as
    /// the worst value): a Deny may then turn into an Allow with the values
    /// of a Bind, which [`Policy::judge_bound`] judges.
    pub fn depends_on_parameters(&self) -> bool {
        self.by_params
    }

    /// Whether running the message may change the code the database runs
    /// (see [`kind::Kind::changes_schema`]).
    pub fn changes_schema(&self) -> bool {
        self.changes_schema
    }

    /// Whether running the message may change the session's
    /// client_encoding: a SET, RESET or set_config of it (or of a name
    /// that is not a literal), RESET ALL, DISCARD, EXECUTE of a prepared
    /// statement, code pgward cannot see into, and, where called code is
    /// not resolved, any function call. The server converts each later
    /// message with the new encoding before it reports it.
    pub fn sets_client_encoding(&self) -> bool {
        self.sets_client_encoding
    }

    /// Whether the message ends a transaction or rolls back to a savepoint:
    /// that undoes a SET of client_encoding made in it.
    pub fn ends_transaction(&self) -> bool {
        self.ends_transaction
    }

    /// The outcome when nothing needs judging.
    pub fn allow() -> Self {
        Self {
            verdict: Verdict::Allow(Vec::new()),
            effects: Vec::new(),
            text: Arc::from(""),
            by_shape: false,
            by_text: false,
            by_params: false,
            changes_schema: false,
            sets_client_encoding: false,
            ends_transaction: false,
        }
    }
}

/// Exact-text key: the text, the lexing setting, the server's major version,
/// the code catalog's generation (0: none) and the rules that apply to the
/// identity (looked up without a copy). With the generation in the key, a
/// verdict never outlives the catalog it was reached with.
use text_key::{KeyView, Lookup, TextKey};
/// Shape key: [`lexer::shape`] (which holds the lexing setting), the
/// server's major version, the catalog's generation and the rules that
/// apply to the identity.
type ShapeKey = (Box<[u8]>, u32, u64, Audience);
type Cache<K> = moka::sync::Cache<K, Arc<Outcome>, foldhash::fast::RandomState>;

/// Rules plus their verdict caches; replaced whole on reload.
///
/// Two levels, both compared byte for byte (a hash only picks the bucket):
/// the exact text (drivers and ORMs repeat the same Parse text, and pgbench
/// -M extended / prepared do too: one hash and compare), then the shape from
/// PostgreSQL's scanner (same statement, other literals: one scan more).
pub struct Policy {
    /// The compiled rules.
    pub rules: Arc<RuleSet>,
    /// Unique among the policies of this process (the verdict memo tells
    /// this policy's verdicts from an older one's by it).
    id: u64,
    texts: Cache<TextKey>,
    shapes: Cache<ShapeKey>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// A policy with an empty cache.
    pub fn new(rules: Arc<RuleSet>) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            texts: new_cache(rules.cache_size),
            shapes: new_cache(rules.cache_size),
            rules,
        }
    }

    /// The rules that apply to `who`, for [`Session::audience`] of the
    /// sessions that judge as `who`.
    pub fn audience_of(&self, who: &Identity) -> KnownAudience {
        KnownAudience {
            policy: self.id,
            audience: self.rules.audience(who),
        }
    }

    /// Whether this policy worked out `known` (for whatever identity).
    pub fn made(&self, known: &KnownAudience) -> bool {
        known.policy == self.id
    }

    /// Whether nothing can be refused (then sessions skip judging entirely).
    pub fn is_inert(&self) -> bool {
        self.rules.is_inert()
    }

    /// How fresh the code catalog must be for statements of `who`, or
    /// `None` when they are judged without one: `policy.called_code` is
    /// off, or no rule can apply to them (then no catalog is read for them).
    pub fn needs_code(&self, who: &Identity) -> Option<called::Freshness> {
        let freshness = self.rules.called_code?;
        let applies = self.rules.default_action != rules::DefaultAction::Allow
            || self.rules.rules.iter().any(|r| r.applies_to(who));
        applies.then_some(freshness)
    }

    /// Judges the SQL text of one Query or Parse message, for a session of
    /// which only the lexing settings are known.
    pub fn judge(&self, text: &[u8], who: &Identity, lexing: Lexing) -> Arc<Outcome> {
        self.judge_in(text, who, &Session::new(lexing))
    }

    /// Judges the SQL text of one Query or Parse message run by `who` in
    /// `session`.
    pub fn judge_in(&self, text: &[u8], who: &Identity, session: &Session<'_>) -> Arc<Outcome> {
        self.judge_any(text, who, session, None)
    }

    /// Judges a statement again at Bind, with its parameters' values: for a
    /// Parse whose outcome [`Outcome::depends_on_parameters`] (judged then
    /// with every parameter unknown, the worst), the session calls this with
    /// the Bind's values and refuses the Bind if the verdict is Deny.
    /// `params[n - 1]` is `$n`. Not cached.
    pub fn judge_bound(
        &self,
        text: &[u8],
        who: &Identity,
        session: &Session<'_>,
        params: &[Param<'_>],
    ) -> Arc<Outcome> {
        // A value the encoding cannot convert stays unknown.
        let utf8 = |bytes: &[u8]| {
            session
                .client_encoding
                .to_utf8(bytes)
                .ok()
                .map(|s| s.into_owned())
        };
        let values: Vec<Bound> = params
            .iter()
            .map(|p| match p {
                Param::Null => Bound::Null,
                Param::Text(bytes) => utf8(bytes).map_or(Bound::Unknown, Bound::Text),
                Param::Inferred(bytes) => utf8(bytes).map_or(Bound::Unknown, Bound::Inferred),
                Param::Binary => Bound::Unknown,
            })
            .collect();
        self.judge_any(text, who, session, Some(&values))
    }

    /// The outcome [`Self::judge_in`] gives `text` when the verdict memo
    /// holds it, asked with only what the memo's key holds, or `None`
    /// (then ask `judge_in`, which judges it). For a caller that can say
    /// those parts more cheaply than it builds a whole [`Session`] (a
    /// session, for each of its statements: the whole snapshot cost more
    /// than the memo's answer). The parts must be those of the `Session`
    /// `judge_in` would be given: `code_generation` is its catalog's
    /// generation (0: none), `audience` its audience (one another policy
    /// worked out is no answer). It answers as `judge_any` asks the memo:
    /// only for a UTF8 client under known settings.
    pub fn recall(
        &self,
        text: &[u8],
        lexing: Lexing,
        client_encoding: &ClientEncoding,
        server_major: u32,
        code_generation: u64,
        audience: &KnownAudience,
    ) -> Option<Arc<Outcome>> {
        if self.is_inert() || !self.made(audience) {
            return None;
        }
        let (ClientEncoding::Utf8, Lexing::Known(settings)) = (client_encoding, lexing) else {
            return None;
        };
        let rest = self.rest(settings, server_major, code_generation, &audience.audience);
        verdict_memo::recall(self.id, &rest, text)
    }

    fn judge_any(
        &self,
        text: &[u8],
        who: &Identity,
        session: &Session<'_>,
        values: Option<&[Bound]>,
    ) -> Arc<Outcome> {
        if self.is_inert() {
            return Arc::new(Outcome::allow());
        }
        let audience = match session.audience {
            Some(known) if self.made(known) => known.audience.clone(),
            _ => audience_memo::audience(&self.rules, who),
        };
        // A UTF8 client's bytes go to the verdict memo before they are
        // checked and converted: it answers only for bytes those steps pass
        // as they are (`verdict_memo`'s "Asked before the text is
        // converted"), so the answer is the one judging them would give. A
        // miss is judged as ever, and not asked again.
        let mut asked = None;
        if let (None, ClientEncoding::Utf8, Lexing::Known(settings)) =
            (values, session.client_encoding, session.lexing)
        {
            let generation = session.code.map_or(0, called::CodeCatalog::generation);
            let rest = self.rest(settings, session.server_major, generation, &audience);
            if let Some(hit) = verdict_memo::recall(self.id, &rest, text) {
                return hit;
            }
            asked = Some(rest);
        }
        if memchr::memchr(0, text).is_some() {
            return Arc::new(Outcome::deny(
                "22021",
                "statement denied by pgward: it contains a NUL byte".into(),
                "Statement text cannot contain NUL bytes.",
            ));
        }
        // The text the server will lex: converted from the client encoding.
        let sql = match session.client_encoding.to_utf8(text) {
            Ok(sql) => sql,
            Err(e) => {
                return Arc::new(Outcome::deny(
                    e.code,
                    e.message,
                    "Use client_encoding UTF8 (or a single-byte encoding such as LATIN1).",
                ))
            }
        };
        let sql = sql.as_ref();
        let who = &audience;
        let env = |settings| Env {
            settings,
            own_pid: session.own_pid,
            own_temp_tables: session.own_temp_tables,
            server_major: session.server_major,
        };
        // Without a backslash the setting cannot move a token boundary.
        let one_reading = match session.lexing {
            Lexing::Known(settings) => Some(settings),
            Lexing::Uncertain(settings) if memchr::memchr(b'\\', sql.as_bytes()).is_none() => {
                Some(settings)
            }
            Lexing::Uncertain(_) => None,
        };
        let code = session.code;
        match (one_reading, values) {
            (Some(settings), None) => self.judge_cached(sql, who, &env(settings), code, asked),
            (Some(settings), Some(values)) => {
                Arc::new(self.judge_fresh(sql, who, &env(settings), code, values))
            }
            (None, values) => {
                let mut outcomes = [true, false].map(|scs| {
                    self.judge_fresh(
                        sql,
                        who,
                        &env(LexSettings {
                            standard_conforming_strings: scs,
                        }),
                        code,
                        values.unwrap_or_default(),
                    )
                });
                // Strictest wins: a denial under either reading denies,
                // then an approval asked for under either.
                let [on, off] = &mut outcomes;
                let strictness = |v: &Verdict| match v {
                    Verdict::Deny(_) => 2,
                    Verdict::Approval(_) => 1,
                    Verdict::Allow(_) => 0,
                };
                if strictness(&off.verdict) > strictness(&on.verdict) {
                    return Arc::new(std::mem::replace(off, Outcome::allow()));
                }
                Arc::new(std::mem::replace(on, Outcome::allow()))
            }
        }
    }

    /// The verdict memo's and the text cache's key but for the text.
    fn rest(
        &self,
        settings: LexSettings,
        server_major: u32,
        generation: u64,
        who: &Audience,
    ) -> text_key::Rest {
        text_key::Rest {
            standard_conforming_strings: settings.standard_conforming_strings,
            server_major,
            generation,
            audience: who.clone(),
        }
    }

    /// `asked`: the key the verdict memo was asked with (and had nothing)
    /// for this text already.
    fn judge_cached(
        &self,
        sql: &str,
        who: &Audience,
        env: &Env<'_>,
        code: Option<&called::CodeCatalog>,
        asked: Option<text_key::Rest>,
    ) -> Arc<Outcome> {
        let settings = env.settings;
        let generation = code.map_or(0, called::CodeCatalog::generation);
        let rest = match asked {
            // Asked with the same key and, the bytes having passed as they
            // are, the same text: no need to ask again.
            Some(rest) if rest == self.rest(settings, env.server_major, generation, who) => rest,
            _ => {
                let rest = self.rest(settings, env.server_major, generation, who);
                if let Some(hit) = verdict_memo::recall(self.id, &rest, sql.as_bytes()) {
                    return hit;
                }
                rest
            }
        };
        let text_key = Lookup {
            text: sql.as_bytes(),
            rest: &rest,
        };
        if let Some(hit) = self.texts.get(&text_key as &dyn KeyView) {
            verdict_memo::remember(self.id, &rest, sql, None, &hit);
            return hit;
        }
        let tokens = match lexer::scan(sql, settings) {
            Ok(t) => t,
            Err(e) => return Arc::new(unparsable(&ClassifyError::Syntax(e))),
        };
        if let Some(newer) = versions::in_tokens(sql, &tokens, env.server_major) {
            return Arc::new(unparsable(&ClassifyError::NewerSyntax(newer)));
        }
        let shape_key: ShapeKey = (
            lexer::shape(sql, &tokens, settings).into(),
            env.server_major,
            generation,
            who.clone(),
        );
        if let Some(hit) = self.shapes.get(&shape_key) {
            // Not added to the text cache: texts that differ only in their
            // literals would crowd out the ones that repeat exactly.
            verdict_memo::remember(self.id, &rest, sql, Some(&tokens), &hit);
            return hit;
        }
        match self.decide(sql, &tokens, who, env, code, &[]) {
            Ok(outcome) => {
                let outcome = Arc::new(outcome);
                // Verdicts that read a literal's value are shared only by
                // the exact text; those that read the session's state not at
                // all.
                if outcome.by_shape {
                    self.shapes.insert(shape_key, Arc::clone(&outcome));
                }
                if outcome.by_text {
                    self.texts.insert(text_key.to_owned(), Arc::clone(&outcome));
                }
                verdict_memo::remember(self.id, &rest, sql, Some(&tokens), &outcome);
                outcome
            }
            // Not shared: a parse error can depend on a literal's value (a
            // bad U&'' escape), which the shape leaves out.
            Err(refused) => Arc::from(refused),
        }
    }

    fn judge_fresh(
        &self,
        sql: &str,
        who: &Audience,
        env: &Env<'_>,
        code: Option<&called::CodeCatalog>,
        values: &[Bound],
    ) -> Outcome {
        match lexer::scan(sql, env.settings) {
            Ok(tokens) => match versions::in_tokens(sql, &tokens, env.server_major) {
                Some(newer) => unparsable(&ClassifyError::NewerSyntax(newer)),
                None => self
                    .decide(sql, &tokens, who, env, code, values)
                    .unwrap_or_else(|e| *e),
            },
            Err(e) => unparsable(&ClassifyError::Syntax(e)),
        }
    }

    fn decide(
        &self,
        sql: &str,
        tokens: &[pg_query::protobuf::ScanToken],
        who: &Audience,
        env: &Env<'_>,
        code: Option<&called::CodeCatalog>,
        values: &[Bound],
    ) -> Result<Outcome, Box<Outcome>> {
        let mut statements =
            classify_bound(sql, env, values).map_err(|e| Box::new(unparsable(&e)))?;
        if let Some(code) = code {
            for statement in &mut statements {
                with_called_code(statement, code, env.server_major);
            }
        }
        for statement in &mut statements {
            if let Some(effect) = hazards::temp_effect(&statement.units, &statement.effects) {
                statement.effects.push(effect);
            }
        }
        let texts: Vec<String> = statements
            .iter()
            .map(|s| lexer::normalized(sql, tokens, s.range.clone()))
            .collect();
        let units = statements
            .iter()
            .zip(&texts)
            .flat_map(|(s, t)| s.units.iter().map(move |u| (u, t.as_str())));
        let verdict = self.rules.judge(units, who);
        Ok(Outcome {
            verdict,
            by_shape: statements
                .iter()
                .all(|s| !s.reads_literals && !s.reads_session),
            by_text: statements.iter().all(|s| !s.reads_session),
            by_params: statements.iter().any(|s| s.reads_params),
            changes_schema: statements
                .iter()
                .flat_map(|s| &s.units)
                .any(|u| u.kind.changes_schema()),
            sets_client_encoding: statements.iter().any(|s| {
                s.effects.iter().any(|e| matches!(e, Effect::Execute(_)))
                    || s.units
                        .iter()
                        .any(|u| may_set_client_encoding(u, code.is_none()))
            }),
            ends_transaction: statements.iter().flat_map(|s| &s.units).any(|u| {
                matches!(
                    u.kind,
                    Kind::Commit
                        | Kind::Rollback
                        | Kind::RollbackToSavepoint
                        | Kind::PrepareTransaction
                )
            }),
            effects: statements
                .into_iter()
                .flat_map(|s: Statement| s.effects)
                .collect(),
            text: Arc::from(texts.join("; ").as_str()),
        })
    }
}

/// Whether running `unit` may change client_encoding (see
/// [`Outcome::sets_client_encoding`]); `unseen_code`: called code is not
/// resolved, so any function may.
fn may_set_client_encoding(unit: &facts::Unit, unseen_code: bool) -> bool {
    match unit.kind {
        Kind::Set | Kind::SetRole | Kind::SetSessionAuthorization | Kind::Reset => unit
            .setting
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case("client_encoding")),
        Kind::Discard | Kind::UnjudgeableClientEncoding | Kind::OpaqueCode | Kind::Do => true,
        Kind::Call => unseen_code,
        _ => unseen_code && !unit.functions.is_empty(),
    }
}

/// Adds to `statement` (and to what it prepares) the units of the code it
/// runs without naming it in its text, found in `code`.
fn with_called_code(statement: &mut Statement, code: &called::CodeCatalog, major: u32) {
    let more = called::resolve(code, &statement.units, major);
    statement.units.extend(more);
    for effect in &mut statement.effects {
        if let Effect::Prepare { units, .. } = effect {
            let more = called::resolve(code, units, major);
            if !more.is_empty() {
                Arc::make_mut(units).extend(more);
            }
        }
    }
}

fn new_cache<K: std::hash::Hash + Eq + Send + Sync + 'static>(size: u64) -> Cache<K> {
    moka::sync::Cache::builder()
        .max_capacity(size)
        .build_with_hasher(foldhash::fast::RandomState::default())
}

/// Text that cannot be parsed is refused whenever rules apply (fail closed),
/// with the parser's own message.
fn unparsable(e: &ClassifyError) -> Outcome {
    match e {
        // PostgreSQL's own message, SQLSTATE and position, as the server
        // would have sent them.
        ClassifyError::Syntax(e) => Outcome::refuse(Denial {
            code: e.code,
            message: e.message.clone(),
            detail: Some("pgward could not parse this statement, so its rules refuse it.".into()),
            hint: Some(
                "Fix the statement's syntax; pgward parses with PostgreSQL's own grammar.".into(),
            ),
            position: e.position,
        }),
        ClassifyError::NewerSyntax(newer) => Outcome::deny(
            "0A000",
            format!("statement denied by pgward: {newer}"),
            "pgward parses with PostgreSQL 18's grammar; write the statement in the server's version's syntax.",
        ),
        ClassifyError::Unjudgeable(m) => Outcome::deny(
            "42501",
            format!("statement denied by pgward: {m}"),
            "pgward refuses what it cannot judge.",
        ),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod builtin_tests;
