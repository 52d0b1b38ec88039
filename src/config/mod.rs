//! Configuration: the TOML file (`raw`) parsed once into typed, validated values.
//!
//! Every error names the field it is about, e.g.
//! `upstreams.main.sslmode: "maybe" is not one of disable, prefer, require, verify-full`.

pub mod admin;
pub mod approvals;
pub mod audit;
pub(crate) mod masking;
pub mod policy;
pub mod raw;
mod reload;
pub mod roles;
pub mod token_requests;
pub mod tokens;
pub mod units;

pub use reload::reload_refusal;

use crate::auth::verifier::ScramVerifier;
use raw::RawConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// An invalid configuration, naming the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field has an invalid value.
    #[error("{field}: {message}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A secret string that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener, TLS and limits.
    pub server: ServerConfig,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    /// Client database name -> upstream name (every target exists).
    pub databases: BTreeMap<String, String>,
    /// Client identities by name.
    pub users: BTreeMap<String, UserConfig>,
    /// Statement rules, compiled.
    pub policy: Arc<crate::policy::rules::RuleSet>,
    /// Column masking.
    pub masking: Arc<crate::mask::rules::MaskConfig>,
    /// Signed tokens: keys, issuers, expiry.
    pub tokens: Arc<tokens::TokensConfig>,
    /// The audit trail, when on.
    pub audit: Option<audit::AuditConfig>,
    /// The admin listener, when on.
    pub admin: Option<admin::AdminConfig>,
    /// Approvals: store, lifetimes, webhooks.
    pub approvals: Arc<approvals::ApprovalsConfig>,
    /// Top-level sections the file wrote out (`server`, `policy`, ...): a
    /// reload may not drop one of them and fall back to defaults.
    pub sections: std::collections::BTreeSet<String>,
}

/// `[server]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Client-facing TLS certificate chain and key, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// Refuse clients without TLS.
    pub require_client_tls: bool,
    /// Most concurrent client connections.
    pub max_client_connections: usize,
    /// Deadline for TLS plus authentication.
    pub startup_timeout: Duration,
    /// Idle timeout; `None` when disabled.
    pub idle_timeout: Option<Duration>,
    /// Largest client message accepted.
    pub max_message_size: usize,
    /// Grace period for sessions on shutdown.
    pub shutdown_timeout: Duration,
    /// Extra StartupMessage keys forwarded (lowercase).
    pub startup_parameters: Vec<String>,
    /// How sessions are scheduled.
    pub runtime: RuntimeMode,
    /// Threads that run sessions; `None`: one per available core.
    pub threads: Option<std::num::NonZeroUsize>,
    /// What relays plain-TCP sessions.
    pub relay: RelayMode,
}

/// `server.relay`: what moves a logged-in plain-TCP session's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// An event loop of pgward's own per session thread (epoll, a
    /// readiness flag per socket, no scheduler between a socket's event and
    /// its session): fewer instructions per message than tokio's reactor.
    /// Only with [`RuntimeMode::PerCore`]; TLS sessions stay on the runtime.
    EventLoop,
    /// The session thread's tokio runtime.
    Runtime,
}

/// `server.runtime`: how sessions are scheduled onto threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeMode {
    /// One multi-threaded runtime: any thread runs any session (work
    /// stealing evens out load; wake-ups cross threads).
    Shared,
    /// One single-threaded runtime per thread, each accepting on its own
    /// `SO_REUSEPORT` listener and running the sessions it accepted (no
    /// cross-thread wake-ups or scheduler bookkeeping per message; the
    /// kernel spreads connections over the listeners).
    PerCore,
}

/// Most session threads accepted in `server.threads`.
const MAX_THREADS: usize = 1024;

/// PEM files for a TLS endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// TLS towards an upstream, as libpq's sslmode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without verification.
    Prefer,
    /// TLS always, without verification.
    Require,
    /// TLS always, certificate chain and host name verified.
    VerifyFull,
}

/// One upstream, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The upstream's name in the config.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database on the server.
    pub dbname: String,
    /// Role pgward logs in as.
    pub user: String,
    /// Password, when the server asks for one.
    pub password: Option<Secret>,
    /// TLS mode.
    pub sslmode: SslMode,
    /// CA bundle for verify-full.
    pub ca_file: Option<PathBuf>,
    /// Connect and login deadline.
    pub connect_timeout: Duration,
    /// Most SCRAM iterations accepted from the server.
    pub scram_max_iterations: u32,
    /// Most bytes accepted from the server before its first ReadyForQuery.
    pub login_max_bytes: usize,
    /// Authentication the server may ask for.
    pub auth: crate::auth::require::AuthPolicy,
    /// The roles client identities log in as, and who acts as which.
    pub roles: roles::RoleMap,
}

/// One client identity, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// Name clients log in with.
    pub name: String,
    /// SCRAM verifier.
    pub verifier: ScramVerifier,
    /// Groups.
    pub groups: Vec<String>,
    /// Client database names allowed; empty means all.
    pub databases: Vec<String>,
    /// Upstream name -> the role this identity logs in as there (before the
    /// upstream's `role_map`).
    pub roles: BTreeMap<String, String>,
}

/// Where a client's database name leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// The database to open on its server.
    pub dbname: &'a str,
    /// Reached through the `"*"` catch-all, not a configured name: the
    /// upstream's column map (read from its own `dbname`) does not describe
    /// this database.
    pub catch_all: bool,
}

/// The `[databases]` key that sends every other database name to one upstream.
pub const CATCH_ALL_DATABASE: &str = "*";

impl Config {
    /// Where the client database name `db` leads: a configured name, or
    /// through the catch-all to the same-named database on its upstream.
    /// `None`: pgward does not serve it.
    pub fn route<'a>(&'a self, db: &'a str) -> Option<Route<'a>> {
        if db != CATCH_ALL_DATABASE {
            if let Some(name) = self.databases.get(db) {
                let upstream = self.upstreams.get(name)?;
                return Some(Route {
                    upstream: name,
                    dbname: &upstream.dbname,
                    catch_all: false,
                });
            }
        }
        let name = self.databases.get(CATCH_ALL_DATABASE)?;
        Some(Route {
            upstream: name,
            dbname: db,
            catch_all: true,
        })
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages and to
    /// resolve relative file names.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(syntax)?;
        // Parsed again as a plain table only to learn which sections were
        // written; the typed parse above already accepted the text.
        let table: toml::Table = toml::from_str(text).map_err(syntax)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::from_raw(raw, base)?;
        config.sections = table.keys().cloned().collect();
        Ok(config)
    }

    /// Validates raw values into typed ones.
    pub fn from_raw(raw: RawConfig, base: &Path) -> Result<Self, ConfigError> {
        let server = server_from_raw(raw.server, base)?;
        if raw.upstreams.is_empty() {
            return Err(field_err("upstreams", "at least one upstream is required"));
        }
        let mut upstreams = BTreeMap::new();
        for (name, u) in raw.upstreams {
            let typed = upstream_from_raw(&name, u, base)?;
            upstreams.insert(name, Arc::new(typed));
        }
        let mut databases = raw.databases;
        if databases.is_empty() {
            databases = upstreams.keys().map(|k| (k.clone(), k.clone())).collect();
        }
        for (db, target) in &databases {
            if !upstreams.contains_key(target) {
                return Err(field_err(
                    format!("databases.{db}"),
                    format!("names upstream {target:?}, which is not defined"),
                ));
            }
        }
        let tokens = tokens::from_raw(raw.tokens, base, &databases)?;
        if raw.users.is_empty() && !tokens.enabled() {
            return Err(field_err("users", "at least one user is required"));
        }
        let mut users = BTreeMap::new();
        for (name, u) in raw.users {
            let verifier = ScramVerifier::parse(&u.scram_verifier)
                .map_err(|m| field_err(format!("users.{name}.scram_verifier"), m))?;
            for db in &u.databases {
                if !databases.contains_key(db) && !databases.contains_key(CATCH_ALL_DATABASE) {
                    return Err(field_err(
                        format!("users.{name}.databases"),
                        format!("{db:?} is not a database in [databases]"),
                    ));
                }
            }
            for (upstream, role) in &u.roles {
                let field = format!("users.{name}.roles.{upstream}");
                let target = upstreams
                    .get(upstream)
                    .ok_or_else(|| field_err(&field, format!("{upstream:?} is not an upstream")))?;
                roles::check_role_known(&target.roles.credentials, &target.user, role, &field)?;
            }
            if tokens.is_token_user(&name) {
                return Err(field_err(
                    format!("users.{name}"),
                    "matches a token user pattern in [tokens]; a name logs in one way only",
                ));
            }
            let user = UserConfig {
                name: name.clone(),
                verifier,
                groups: u.groups,
                databases: u.databases,
                roles: u.roles,
            };
            users.insert(name, user);
        }
        // [approvals] first: require_approval rules take its defaults.
        let admin = admin::admin_from_raw(&raw.admin, base)?;
        let approvals = approvals::from_raw(&raw.approvals, base, &upstreams, admin.as_ref())?;
        let policy = Arc::new(policy::compile_with(&raw.policy, &approvals)?);
        let masking = Arc::new(masking_from_raw(&raw.masking, base)?);
        let audit = audit::audit_from_raw(&raw.audit, base)?;
        if let Some(audit::AuditConfig {
            sink: audit::AuditSink::Postgres { upstream, .. },
            ..
        }) = &audit
        {
            if !upstreams.contains_key(upstream) {
                return Err(field_err(
                    "audit.postgres_upstream",
                    format!("names upstream {upstream:?}, which is not defined"),
                ));
            }
        }
        if admin.is_some() && databases.contains_key(crate::admin::console::DATABASE) {
            return Err(field_err(
                "databases.pgward",
                "is the admin console's database while [admin] is on; name it differently",
            ));
        }
        Ok(Self {
            admin,
            approvals: Arc::new(approvals),
            server,
            upstreams,
            databases,
            users,
            policy,
            masking,
            tokens: Arc::new(tokens),
            audit,
            sections: Default::default(),
        })
    }
}

fn duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    units::parse_duration(text).map_err(|m| field_err(field, m))
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn server_from_raw(s: raw::RawServer, base: &Path) -> Result<ServerConfig, ConfigError> {
    let listen = s.listen.parse().map_err(|_| {
        field_err(
            "server.listen",
            format!("{:?} is not an address such as 127.0.0.1:6432", s.listen),
        )
    })?;
    let tls = match (s.tls_cert, s.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: resolve(base, cert),
            key: resolve(base, key),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(field_err("server.tls_key", "tls_cert needs tls_key")),
        (None, Some(_)) => return Err(field_err("server.tls_cert", "tls_key needs tls_cert")),
    };
    if s.require_client_tls && tls.is_none() {
        return Err(field_err(
            "server.require_client_tls",
            "needs server.tls_cert and server.tls_key",
        ));
    }
    if s.max_client_connections == 0 {
        return Err(field_err(
            "server.max_client_connections",
            "must be at least 1",
        ));
    }
    let max_message_size = units::parse_size(&s.max_message_size)
        .map_err(|m| field_err("server.max_message_size", m))?;
    if !(1024..=(1 << 30)).contains(&max_message_size) {
        return Err(field_err(
            "server.max_message_size",
            "must be between 1KiB and 1GiB",
        ));
    }
    let idle = duration("server.idle_timeout", &s.idle_timeout)?;
    let runtime = match s.runtime.as_str() {
        "shared" => RuntimeMode::Shared,
        "per-core" => RuntimeMode::PerCore,
        other => {
            return Err(field_err(
                "server.runtime",
                format!("{other:?} is not one of: \"shared\", \"per-core\""),
            ))
        }
    };
    Ok(ServerConfig {
        listen,
        tls,
        require_client_tls: s.require_client_tls,
        max_client_connections: s.max_client_connections,
        startup_timeout: duration("server.startup_timeout", &s.startup_timeout)?,
        idle_timeout: (!idle.is_zero()).then_some(idle),
        max_message_size,
        shutdown_timeout: duration("server.shutdown_timeout", &s.shutdown_timeout)?,
        startup_parameters: startup_parameters(s.startup_parameters)?,
        runtime,
        relay: match (s.relay.as_deref(), runtime) {
            (None, RuntimeMode::PerCore) | (Some("event-loop"), RuntimeMode::PerCore) => {
                RelayMode::EventLoop
            }
            (None | Some("runtime"), _) => RelayMode::Runtime,
            (Some("event-loop"), RuntimeMode::Shared) => return Err(field_err(
                "server.relay",
                "\"event-loop\" needs runtime = \"per-core\" (each session thread has its loop)"
                    .to_owned(),
            )),
            (Some(other), _) => {
                return Err(field_err(
                    "server.relay",
                    format!("{other:?} is not one of: \"event-loop\", \"runtime\""),
                ))
            }
        },
        threads: match s.threads {
            n if n > MAX_THREADS => {
                return Err(field_err(
                    "server.threads",
                    format!("must be at most {MAX_THREADS} (0: one per core)"),
                ))
            }
            n => std::num::NonZeroUsize::new(n),
        },
    })
}

/// Extra startup keys: setting names, never the keys PostgreSQL reads as
/// something else or that change the role.
fn startup_parameters(names: Vec<String>) -> Result<Vec<String>, ConfigError> {
    names
        .into_iter()
        .map(|name| {
            let lower = name.to_ascii_lowercase();
            if !crate::session::startup_params::forwardable_name(&lower) {
                return Err(field_err(
                    "server.startup_parameters",
                    format!("{name:?} is not a setting pgward may forward"),
                ));
            }
            Ok(lower)
        })
        .collect()
}

fn upstream_from_raw(
    name: &str,
    u: raw::RawUpstream,
    base: &Path,
) -> Result<UpstreamConfig, ConfigError> {
    let f = |leaf: &str| format!("upstreams.{name}.{leaf}");
    let sslmode = match u.sslmode.as_str() {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(field_err(
                f("sslmode"),
                format!("{other:?} is not one of disable, prefer, require, verify-full"),
            ))
        }
    };
    let password = secret_from(
        u.password_env,
        u.password_file,
        base,
        &f("password_env"),
        &f("password_file"),
    )?;
    if u.user.is_empty() {
        return Err(field_err(f("user"), "must not be empty"));
    }
    if !(4096..=10_000_000).contains(&u.scram_max_iterations) {
        return Err(field_err(
            f("scram_max_iterations"),
            "must be between 4096 (PostgreSQL's default) and 10000000",
        ));
    }
    let login_max_bytes =
        units::parse_size(&u.login_max_bytes).map_err(|m| field_err(f("login_max_bytes"), m))?;
    if !(1024..=(16 << 20)).contains(&login_max_bytes) {
        return Err(field_err(
            f("login_max_bytes"),
            "must be between 1KiB and 16MiB",
        ));
    }
    let auth = auth_policy(&f, &u.require_auth, u.channel_binding.as_deref(), sslmode)?;
    let roles = roles::role_map_from_raw(
        name,
        &u.user,
        u.roles,
        u.role_map,
        u.least_privilege.as_deref(),
        base,
    )?;
    Ok(UpstreamConfig {
        name: name.to_owned(),
        host: u.host,
        port: u.port,
        dbname: u.dbname.unwrap_or_else(|| name.to_owned()),
        user: u.user,
        password,
        sslmode,
        ca_file: u.ca_file.map(|p| resolve(base, p)),
        connect_timeout: duration(&f("connect_timeout"), &u.connect_timeout)?,
        scram_max_iterations: u.scram_max_iterations,
        login_max_bytes,
        auth,
        roles,
    })
}

fn auth_policy(
    f: &dyn Fn(&str) -> String,
    require_auth: &[String],
    channel_binding: Option<&str>,
    sslmode: SslMode,
) -> Result<crate::auth::require::AuthPolicy, ConfigError> {
    use crate::auth::require::AuthMethod;
    let mut allowed = Vec::new();
    for text in require_auth {
        let m = AuthMethod::parse(text).ok_or_else(|| {
            field_err(
                f("require_auth"),
                format!("{text:?} is not one of scram-sha-256, md5, password, none"),
            )
        })?;
        if !allowed.contains(&m) {
            allowed.push(m);
        }
    }
    if allowed.is_empty() {
        return Err(field_err(
            f("require_auth"),
            "must name at least one method",
        ));
    }
    let channel_binding = match channel_binding {
        None => matches!(sslmode, SslMode::Require | SslMode::VerifyFull),
        Some("require") => true,
        Some("prefer") => false,
        Some(other) => {
            return Err(field_err(
                f("channel_binding"),
                format!("{other:?} is not one of require, prefer"),
            ))
        }
    };
    if channel_binding && sslmode == SslMode::Disable {
        return Err(field_err(
            f("channel_binding"),
            "require needs TLS (sslmode prefer, require or verify-full)",
        ));
    }
    Ok(crate::auth::require::AuthPolicy {
        allowed,
        channel_binding,
    })
}

#[cfg(test)]
mod tests;

/// A secret from an environment variable or a file (trailing newline
/// ignored), at most one of them; `None` when neither is set.
fn secret_from(
    env: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
    env_field: &str,
    file_field: &str,
) -> Result<Option<Secret>, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(field_err(
            env_field,
            format!(
                "set {} or {}, not both",
                last_part(env_field),
                last_part(file_field)
            ),
        )),
        (Some(var), None) => std::env::var(&var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| field_err(env_field, format!("environment variable {var} is not set"))),
        (None, Some(path)) => {
            let path = resolve(base, path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| field_err(file_field, format!("{}: {e}", path.display())))?;
            Ok(Some(Secret::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

fn last_part(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

/// A human-readable summary of what a config sets up (for `check-config`).
/// Secrets are never shown, only whether they are set.
pub fn explain(c: &Config) -> String {
    use std::fmt::Write;
    let s = &c.server;
    let mut out = String::new();
    let _ = writeln!(out, "listen: {}", s.listen);
    let _ = match &s.tls {
        Some(t) => writeln!(
            out,
            "client TLS: on ({}), required: {}, SCRAM-SHA-256-PLUS offered over TLS",
            t.cert.display(),
            s.require_client_tls
        ),
        None => writeln!(out, "client TLS: off"),
    };
    let idle = s
        .idle_timeout
        .map_or("off".to_owned(), |d| format!("{d:?}"));
    let _ = writeln!(
        out,
        "limits: {} clients, startup {:?}, idle {idle}, messages up to {} bytes, shutdown drain {:?}",
        s.max_client_connections, s.startup_timeout, s.max_message_size, s.shutdown_timeout
    );
    let threads = s
        .threads
        .map_or("one per core".to_owned(), |n| n.to_string());
    let _ = writeln!(
        out,
        "runtime: {:?}, threads: {threads}, relay: {:?}",
        s.runtime, s.relay
    );
    for (name, u) in &c.upstreams {
        let _ = writeln!(
            out,
            "upstream {name}: {}:{} database {} as {}, sslmode {:?}, require_auth {}{}, password {}",
            u.host,
            u.port,
            u.dbname,
            u.user,
            u.sslmode,
            u.auth
                .allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            if u.auth.channel_binding {
                " (channel binding required)"
            } else {
                ""
            },
            if u.password.is_some() {
                "set"
            } else {
                "not set"
            }
        );
    }
    for (name, u) in &c.upstreams {
        for m in &u.roles.mappings {
            let _ = writeln!(
                out,
                "upstream {name}: users [{}] groups [{}] act as role {}",
                m.users.join(", "),
                m.groups.join(", "),
                m.role
            );
        }
        let _ = writeln!(
            out,
            "upstream {name}: least_privilege {:?}, roles with a credential: [{}]",
            u.roles.least_privilege,
            u.roles
                .credentials
                .values()
                .map(|r| format!(
                    "{} (password {})",
                    r.name,
                    if r.password.is_some() {
                        "set"
                    } else {
                        "not set"
                    }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (db, target) in &c.databases {
        let _ = writeln!(out, "database {db} -> upstream {target}");
    }
    for (name, u) in &c.users {
        let dbs = if u.databases.is_empty() {
            "all databases".to_owned()
        } else {
            u.databases.join(", ")
        };
        let roles = u
            .roles
            .iter()
            .map(|(upstream, role)| format!(", role {role} on {upstream}"))
            .collect::<String>();
        let _ = writeln!(
            out,
            "user {name}: groups [{}], {dbs}{roles}",
            u.groups.join(", ")
        );
    }
    let p = &c.policy;
    let _ = writeln!(
        out,
        "policy: {} rules ({}), default action {:?}, verdict cache {} shapes",
        p.rules.len(),
        p.rules
            .iter()
            .map(|r| format!("{} {:?}", r.name, r.action).to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
        p.default_action,
        p.cache_size
    );
    out.push_str(&tokens::explain(&c.tokens));
    out
}

/// `[masking]` with its hash key read from where it names.
fn masking_from_raw(
    m: &raw::RawMasking,
    base: &Path,
) -> Result<crate::mask::rules::MaskConfig, ConfigError> {
    let key = secret_from(
        m.hash_key_env.clone(),
        m.hash_key_file.clone(),
        base,
        "masking.hash_key_env",
        "masking.hash_key_file",
    )?;
    masking::compile(m, key)
}
