//! Which StartupMessage parameters reach the server, and how.
//!
//! PostgreSQL applies every startup key other than `user`, `database`,
//! `options` and `replication` as a setting, and `options` holds
//! command-line switches, of which `-c name=value` and `--name=value` set
//! settings too. A setting at login is a `SET` without a statement, so pgward
//! judges each one exactly as the rules would judge `SET name TO 'value'` for
//! the identity, and forwards what passes as plain startup keys (the options
//! are unpacked: the server never parses a switch pgward did not read).
//!
//! Keys are forwarded only from an allowlist (what libpq, pgjdbc, psycopg,
//! asyncpg, node-postgres, tokio-postgres, sqlx and npgsql send, plus
//! `[server] startup_parameters`); `role`, `session_authorization`,
//! `replication` and any other switch in `options` are refused with a FATAL
//! naming the parameter.

use crate::error::SessionError;
use crate::policy::encoding::ClientEncoding;
use crate::policy::facts::Effect;
use crate::policy::lexer::LexSettings;
use crate::policy::rules::{Identity, Verdict};
use crate::policy::{Lexing, Policy};
use crate::sqlstate::Sqlstate;
use crate::wire::startup::StartupMessage;

/// Settings drivers send as startup keys (lowercase; PostgreSQL matches
/// setting names without regard to case).
const FORWARDED_KEYS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "geqo",
    "jit",
    "bytea_output",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
];

/// Startup keys the server reads as something other than a setting, or
/// that change who the session is: never forwarded, whatever the config.
const REFUSED_KEYS: &[&str] = &["role", "session_authorization", "replication"];

/// Startup keys pgward reads itself (never a setting to forward).
const READ_BY_PGWARD: &[&str] = &["user", "database", "options"];

/// A setting name pgward can write as a bare identifier: letters, digits,
/// `_`, `$` and the `.` of custom settings, starting with a letter or `_`.
fn plain_setting_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '$' | '.'))
}

/// Whether `[server] startup_parameters` may list `name` (lowercase):
/// a plain setting name that is neither read by pgward, refused, nor a
/// protocol extension.
pub(crate) fn forwardable_name(name: &str) -> bool {
    plain_setting_name(name)
        && !READ_BY_PGWARD.contains(&name)
        && !REFUSED_KEYS.contains(&name)
        && !name.starts_with("_pq_.")
}

/// What passed: the settings to put in the server's StartupMessage, and
/// what they do to the session's state as the rules see it.
#[derive(Debug, Default)]
pub(crate) struct StartupSettings {
    /// `(name, value)` in the order the server should apply them.
    pub(crate) forwarded: Vec<(String, String)>,
    /// Effects of the judged SETs (a search_path change, for instance).
    pub(crate) effects: Vec<Effect>,
}

/// One setting read from the StartupMessage, not judged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartupSetting {
    /// The setting's name, lowercase.
    name: String,
    /// Its value.
    value: String,
    /// How the client wrote it, for messages (`search_path`, `options -c x`).
    label: String,
}

/// Reads the client's startup settings and refuses what is never forwarded,
/// whoever asks: this needs no identity, so it runs before authentication.
pub(crate) fn read_startup(
    startup: &StartupMessage,
    extra_keys: &[String],
) -> Result<Vec<StartupSetting>, SessionError> {
    // The server applies `options` first and the keys after (a key wins).
    let mut settings = Vec::new();
    if let Some(options) = startup.param("options") {
        for (name, value) in options_settings(options)? {
            let label = format!("options -c {name}");
            settings.push(StartupSetting { name, value, label });
        }
    }
    for (key, value) in &startup.params {
        let lower = key.to_ascii_lowercase();
        // Read by pgward itself, or negotiated (NegotiateProtocolVersion).
        if READ_BY_PGWARD.contains(&key.as_str()) || key.starts_with("_pq_.") {
            continue;
        }
        if lower == "replication" {
            return Err(SessionError::StartupParameter {
                code: Sqlstate::FEATURE_NOT_SUPPORTED,
                message: "pgward does not accept replication connections \
                          (startup parameter \"replication\")"
                    .into(),
            });
        }
        if !REFUSED_KEYS.contains(&lower.as_str())
            && !FORWARDED_KEYS.contains(&lower.as_str())
            && !extra_keys.contains(&lower)
        {
            return Err(SessionError::StartupParameter {
                code: Sqlstate::FEATURE_NOT_SUPPORTED,
                message: format!(
                    "pgward does not forward the startup parameter \"{key}\" \
                     (server.startup_parameters lists extra ones)"
                ),
            });
        }
        settings.push(StartupSetting {
            name: lower,
            value: value.clone(),
            label: key.clone(),
        });
    }
    for s in &settings {
        check_name(&s.name, &s.label)?;
        if REFUSED_KEYS.contains(&s.name.as_str()) {
            return Err(refused(&s.label, "may not be set at login through pgward"));
        }
        if s.name == "client_encoding" && ClientEncoding::named(&s.value) != ClientEncoding::Utf8 {
            return Err(refused(
                &s.label,
                &format!("must be UTF8 through pgward at login (got \"{}\")", s.value),
            ));
        }
    }
    Ok(settings)
}

/// Judges each setting as the rules would judge `SET name TO 'value'` for
/// `who`, and collects what passes.
pub(crate) fn judge_startup(
    settings: Vec<StartupSetting>,
    policy: &Policy,
    who: &Identity,
) -> Result<StartupSettings, SessionError> {
    let mut out = StartupSettings::default();
    let lexing = Lexing::Known(LexSettings {
        standard_conforming_strings: true,
    });
    for StartupSetting { name, value, label } in settings {
        let sql = format!("SET {name} TO {}", quote_literal(&value));
        let outcome = policy.judge(sql.as_bytes(), who, lexing);
        let denial = match &outcome.verdict {
            Verdict::Approval(a) => Some(a.denial()),
            Verdict::Deny(d) => Some(d.clone()),
            Verdict::Allow(_) => None,
        };
        match &denial {
            Some(d) => {
                return Err(SessionError::StartupParameter {
                    code: Sqlstate::from_code(d.code),
                    message: format!("startup parameter \"{label}\": {}", d.message),
                })
            }
            None => out.effects.extend(outcome.effects.iter().cloned()),
        }
        out.forwarded.push((name, value));
    }
    Ok(out)
}

fn refused(label: &str, why: &str) -> SessionError {
    SessionError::StartupParameter {
        code: Sqlstate::INSUFFICIENT_PRIVILEGE,
        message: format!("startup parameter \"{label}\" {why}"),
    }
}

/// Refuses a name that could not be judged as the SET it stands for.
fn check_name(name: &str, label: &str) -> Result<(), SessionError> {
    if plain_setting_name(name) && !READ_BY_PGWARD.contains(&name) {
        return Ok(());
    }
    Err(SessionError::StartupParameter {
        code: Sqlstate::SYNTAX_ERROR,
        message: format!("startup parameter \"{label}\" is not a setting name pgward accepts"),
    })
}

/// `'value'` with quotes doubled (standard_conforming_strings is on for
/// the judged text, so a backslash is an ordinary character).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The settings an `options` value holds, as PostgreSQL reads it
/// (`pg_split_opts`, then `process_postgres_switches`): words split at
/// unescaped white space, a backslash taking the next character literally;
/// each switch `-c name=value`, `-cname=value` or `--name=value`, with `-`
/// in the name read as `_` and the name's case folded. Any other switch,
/// or a word that is not a switch, is refused.
pub(crate) fn options_settings(options: &str) -> Result<Vec<(String, String)>, SessionError> {
    let words = split_options(options);
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if let Some(long) = word.strip_prefix("--") {
            long.to_owned()
        } else if let Some(rest) = word.strip_prefix("-c") {
            if rest.is_empty() {
                words
                    .next()
                    .ok_or_else(|| bad_option(&word, "needs name=value"))?
            } else {
                rest.to_owned()
            }
        } else {
            return Err(bad_option(
                &word,
                "is not accepted: only -c name=value and --name=value settings are",
            ));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(bad_option(&assignment, "needs a value (name=value)"));
        };
        let name = name.replace('-', "_").to_ascii_lowercase();
        out.push((name, value.to_owned()));
    }
    Ok(out)
}

fn bad_option(word: &str, why: &str) -> SessionError {
    SessionError::StartupParameter {
        code: Sqlstate::FEATURE_NOT_SUPPORTED,
        message: format!("startup parameter \"options\": \"{word}\" {why}"),
    }
}

/// `pg_split_opts`: C-locale white space separates words unless escaped.
fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| is_c_space(*c)) {
            chars.next();
        }
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        let mut escaped = false;
        while let Some(&c) = chars.peek() {
            if is_c_space(c) && !escaped {
                break;
            }
            if !escaped && c == '\\' {
                escaped = true;
            } else {
                escaped = false;
                word.push(c);
            }
            chars.next();
        }
        words.push(word);
    }
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r')
}

#[cfg(test)]
mod tests;
