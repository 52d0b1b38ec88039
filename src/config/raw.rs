//! The configuration file as written: serde structs, every field documented
//! with its default. `super::Config::from_raw` turns these into typed values.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listener, TLS and limits. Default: all defaults below.
    #[serde(default)]
    pub server: RawServer,
    /// Named upstream databases. Default: none (at least one is required).
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Client database name -> upstream name. Default: each upstream is
    /// reachable under its own name.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    /// Client identities. Default: none (at least one is required).
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    /// Statement rules. Default: the built-in rules, everything else allowed.
    #[serde(default)]
    pub policy: RawPolicy,
    /// Column masking. Default: nothing masked.
    #[serde(default)]
    pub masking: RawMasking,
    /// Signed tokens (docs/identity.md). Default: no token users.
    #[serde(default)]
    pub tokens: super::tokens::RawTokens,
    /// The audit trail. Default: off.
    #[serde(default)]
    pub audit: super::audit::RawAudit,
    /// The admin HTTP listener. Default: off.
    #[serde(default)]
    pub admin: super::admin::RawAdmin,
    /// Approvals: store, lifetimes, default approvers, webhooks.
    #[serde(default)]
    pub approvals: super::approvals::RawApprovals,
}

/// `[masking]`: which columns reach which identities masked.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMasking {
    /// Environment variable holding the key of the `hash` strategy. Default: none.
    #[serde(default)]
    pub hash_key_env: Option<String>,
    /// File holding the key of the `hash` strategy. Default: none.
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
    /// How often the column map is re-read from each database's catalog.
    /// Default `"60s"`.
    #[serde(default)]
    pub refresh: Option<String>,
    /// Time allowed to read the column map (login and catalog queries); a
    /// masked identity whose map cannot be read in time is refused.
    /// Default `"10s"`.
    #[serde(default)]
    pub catalog_timeout: Option<String>,
    /// Functions outside pg_catalog that masked identities may still call
    /// (reviewed not to read masked columns), by name. Default: none.
    #[serde(default)]
    pub allowed_functions: Vec<String>,
    /// The mask rules; a column matched by several takes the first.
    /// Default: none.
    #[serde(default)]
    pub rules: Vec<RawMaskRule>,
}

/// `[[masking.rules]]`: columns, a strategy, and who sees them masked.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMaskRule {
    /// Name, quoted in refusals. Required, unique.
    pub name: String,
    /// `schema.table.column`, `table.column` or `column`, `*` globs in each
    /// part. Required.
    pub columns: Vec<String>,
    /// `redact`, `null`, `partial`, `email`, `hash` or `constant`. Required.
    pub strategy: String,
    /// `redact`: the replacement text. Default `"****"`.
    #[serde(default)]
    pub replacement: Option<String>,
    /// `constant`: the value, as PostgreSQL text for the column's type. Required
    /// for `constant`.
    #[serde(default)]
    pub value: Option<String>,
    /// `partial`: characters kept at the start. Default 0.
    #[serde(default)]
    pub keep_first: usize,
    /// `partial`: characters kept at the end. Default 0.
    #[serde(default)]
    pub keep_last: usize,
    /// `partial`: the fill character. Default `"*"`.
    #[serde(default)]
    pub fill: Option<String>,
    /// Identities that see the column masked (with `groups` empty:
    /// everyone). Default: everyone.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups that see the column masked. Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Identities that see clear values even if listed above. Default: none.
    #[serde(default)]
    pub exempt_users: Vec<String>,
    /// Groups that see clear values. Default: none.
    #[serde(default)]
    pub exempt_groups: Vec<String>,
}

/// `[policy]`: how statements are judged.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `allow`, `deny` or `require_approval`: the action for statements no
    /// rule decides. Default `"allow"`.
    #[serde(default = "default_action")]
    pub default_action: String,
    /// Apply pgward's built-in rules (docs/policy.md) after `rules`.
    /// Default `true`.
    #[serde(default = "default_true")]
    pub builtin_rules: bool,
    /// Schemas an unqualified name is assumed to resolve to, for allow rules
    /// (`pg_catalog` is always first). Default `["public"]`.
    #[serde(default = "default_search_path")]
    pub search_path: Vec<String>,
    /// Most distinct statement shapes whose verdicts are cached. Default 10000.
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// Resolve the code a statement runs without naming it (functions it
    /// calls, operators, casts, triggers, defaults) through the database's
    /// catalog and judge it like the statement (docs/policy.md, *called
    /// code*). Default `true`.
    #[serde(default = "default_true")]
    pub called_code: bool,
    /// How often each database's code catalog is read again, for code
    /// created outside pgward (DDL through pgward refreshes it at once).
    /// Default `"60s"`.
    #[serde(default)]
    pub catalog_refresh: Option<String>,
    /// Time allowed to read a code catalog (login and queries); a statement
    /// of an identity the rules apply to waits at most this long for it and
    /// is refused if it cannot be read. Default `"10s"`.
    #[serde(default)]
    pub catalog_timeout: Option<String>,
    /// The rules, in order; the first that matches decides. Default: none.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            default_action: default_action(),
            builtin_rules: true,
            search_path: default_search_path(),
            cache_size: default_cache_size(),
            called_code: true,
            catalog_refresh: None,
            catalog_timeout: None,
            rules: Vec::new(),
        }
    }
}

/// `[[policy.rules]]`: one rule. Every condition given must hold; a rule
/// with no conditions matches every statement.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Name quoted in denials and logs. Required, unique.
    pub name: String,
    /// `allow`, `deny`, `require_approval` or `log`. Required.
    pub action: String,
    /// Text added to the denial message. Default: none.
    #[serde(default)]
    pub message: Option<String>,
    /// Hint sent with a denial. Default: a generic one.
    #[serde(default)]
    pub hint: Option<String>,
    /// Identities the rule applies to. Default: everyone (with `groups` empty).
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups the rule applies to. Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Statement kinds or families (docs/policy.md). Default: any.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Relations (`schema.table` or `table`, `*` globs). Default: any.
    #[serde(default)]
    pub relations: Vec<String>,
    /// Functions called (`schema.fn` or `fn`, `*` globs). Default: any.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Settings named by SET / RESET / SHOW / set_config. Default: any.
    #[serde(default)]
    pub settings: Vec<String>,
    /// Only UPDATE or DELETE without a WHERE clause. Default `false`.
    #[serde(default)]
    pub without_where: bool,
    /// Regex over the normalized statement text (comments removed, literals
    /// as `?`, one space between tokens). Default: none.
    #[serde(default)]
    pub text_regex: Option<String>,
    /// `require_approval` only (docs/approvals.md): `hold` or `ticket`.
    /// Default `"hold"`.
    #[serde(default)]
    pub approval_mode: Option<String>,
    /// `require_approval` only: groups whose members may approve. Default
    /// `[approvals] approvers`.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// `require_approval` only: approvals needed (any one denial ends the
    /// ticket). Default 1.
    #[serde(default)]
    pub approvals_required: Option<u32>,
    /// `require_approval` only: groups whose statements run at once,
    /// recorded as self-approved break-glass tickets. Default
    /// `[approvals] break_glass`.
    #[serde(default)]
    pub break_glass: Vec<String>,
    /// `require_approval` only: this rule's hold deadline outside a
    /// transaction. Default `[approvals] hold_timeout`.
    #[serde(default)]
    pub hold_timeout: Option<String>,
}

/// A file of rules only (the built-in set).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    /// The rules.
    pub rules: Vec<RawRule>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on. Default `127.0.0.1:6432`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// PEM certificate chain for client-facing TLS. Default: none (TLS off).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for client-facing TLS. Default: none.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS. Default `false`.
    #[serde(default)]
    pub require_client_tls: bool,
    /// Most client connections at once; more get SQLSTATE 53300. Default 1000.
    #[serde(default = "default_max_clients")]
    pub max_client_connections: usize,
    /// Time a client has to finish TLS and authentication. Default `"10s"`.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout: String,
    /// Close a session with no traffic either way for this long; `"0s"` never.
    /// Default `"0s"`.
    #[serde(default = "default_zero")]
    pub idle_timeout: String,
    /// Largest message a client may send, e.g. `"64MiB"`. Default `"64MiB"`.
    #[serde(default = "default_max_message")]
    pub max_message_size: String,
    /// How long SIGTERM / SIGINT waits for sessions to end. Default `"30s"`.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: String,
    /// StartupMessage keys forwarded besides the built-in list (each judged
    /// as the same `SET` would be). Default: none.
    #[serde(default)]
    pub startup_parameters: Vec<String>,
    /// How sessions are scheduled: `"shared"` (one runtime whose threads
    /// share every session) or `"per-core"` (one single-threaded runtime
    /// per thread, each with its own `SO_REUSEPORT` listener). Default
    /// `"per-core"`.
    #[serde(default = "default_runtime")]
    pub runtime: String,
    /// Threads that run sessions; 0 means one per available core. Default 0.
    #[serde(default)]
    pub threads: usize,
    /// What relays a plain-TCP session once it is logged in: `"event-loop"`
    /// (a loop of pgward's own over epoll, one per session thread) or
    /// `"runtime"` (the session thread's tokio runtime, as TLS sessions
    /// always are). Default `"event-loop"` with `runtime = "per-core"`;
    /// `"runtime"` is the only choice with `"shared"`.
    #[serde(default)]
    pub relay: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
            require_client_tls: false,
            max_client_connections: default_max_clients(),
            startup_timeout: default_startup_timeout(),
            idle_timeout: default_zero(),
            max_message_size: default_max_message(),
            shutdown_timeout: default_shutdown_timeout(),
            startup_parameters: Vec::new(),
            runtime: default_runtime(),
            threads: 0,
            relay: None,
        }
    }
}

/// `[upstreams.NAME]`: one real database and the credential pgward uses for it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Host name or address. Default `"127.0.0.1"`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port. Default 5432.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database name on the server. Default: the upstream's own name.
    #[serde(default)]
    pub dbname: Option<String>,
    /// Role pgward logs in as. Required.
    pub user: String,
    /// Environment variable holding the password. Default: none.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored). Default: none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `disable`, `prefer`, `require` or `verify-full`. Default `"prefer"`.
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    /// PEM CA bundle for `verify-full`. Default: the webpki roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Time allowed to connect and log in. Default `"5s"`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Most SCRAM iterations (PBKDF2 rounds) pgward computes for this
    /// server's login; a server asking for more is refused (a hostile one
    /// could otherwise burn a core per login). PostgreSQL's own default is
    /// 4096. Default 100000.
    #[serde(default = "default_scram_max_iterations")]
    pub scram_max_iterations: u32,
    /// Most bytes the server may send during login before its first
    /// ReadyForQuery (authentication, ParameterStatus, NoticeResponse and
    /// the rest together), e.g. `"64KiB"`; more ends the login. Default
    /// `"64KiB"`.
    #[serde(default = "default_login_max_bytes")]
    pub login_max_bytes: String,
    /// Authentication methods the server may ask for before pgward sends
    /// the credential (as libpq's `require_auth`): `scram-sha-256`, `md5`,
    /// `password` (clear text) and `none` (trust). The server's SCRAM
    /// signature is always verified. Default `["scram-sha-256"]`.
    #[serde(default = "default_require_auth")]
    pub require_auth: Vec<String>,
    /// `require`: SCRAM must be bound to the TLS channel
    /// (SCRAM-SHA-256-PLUS); `prefer`: bound when the server offers it.
    /// Default `"require"` with sslmode `require` or `verify-full`, else
    /// `"prefer"`.
    #[serde(default)]
    pub channel_binding: Option<String>,
    /// Roles pgward may log in as for client identities, each with the
    /// credential it holds for it (`user` above is the catalog role, used
    /// for pgward's own catalog reads). Default: none.
    #[serde(default)]
    pub roles: BTreeMap<String, RawRole>,
    /// Which identities log in as which role, first match wins (see
    /// `config::roles`). An identity nothing maps is refused. Default: none.
    #[serde(default)]
    pub role_map: Vec<RawRoleMapping>,
    /// `masked`: a role that fails the least-privilege check refuses
    /// identities with masked columns and is a warning for the others;
    /// `masked_only`: as `masked`, without checking the others' roles at
    /// login; `strict`: it refuses every identity. Default `"masked"`.
    #[serde(default)]
    pub least_privilege: Option<String>,
}

/// `[upstreams.NAME.roles.ROLE]`: the credential pgward holds for one role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    /// Environment variable holding the role's password. Default: none.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the role's password (trailing newline ignored).
    /// Default: none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `[[upstreams.NAME.role_map]]`: identities and groups, and their role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoleMapping {
    /// Identities mapped (`"*"`: every identity). Default: none.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups mapped. Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The role they log in as: one of `roles`, or the upstream's `user`.
    /// Required.
    pub role: String,
}

/// `[users.NAME]`: one client identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// SCRAM-SHA-256 verifier from `pgward passwd NAME`. Required.
    pub scram_verifier: String,
    /// Groups the identity belongs to. Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Client database names this identity may open. Default: all.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Upstream name -> the role this identity logs in as there, before
    /// any `role_map` entry. Default: none.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
}

fn default_action() -> String {
    "allow".into()
}
fn default_true() -> bool {
    true
}
fn default_search_path() -> Vec<String> {
    vec!["public".into()]
}
fn default_cache_size() -> u64 {
    10_000
}
fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_max_clients() -> usize {
    1000
}
fn default_startup_timeout() -> String {
    "10s".into()
}
fn default_zero() -> String {
    "0s".into()
}
fn default_max_message() -> String {
    "64MiB".into()
}
fn default_runtime() -> String {
    "per-core".into()
}

fn default_shutdown_timeout() -> String {
    "30s".into()
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_sslmode() -> String {
    "prefer".into()
}
fn default_require_auth() -> Vec<String> {
    vec!["scram-sha-256".into()]
}
fn default_login_max_bytes() -> String {
    "64KiB".into()
}
fn default_scram_max_iterations() -> u32 {
    100_000
}
fn default_connect_timeout() -> String {
    "5s".into()
}
