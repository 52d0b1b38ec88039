//! `pgward approvals ...` and `pgward grants ...`: an approver's commands,
//! talking to a running pgward's admin API (docs/approvals-api.yaml).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pgward::approvals::display::visible;
use pgward::approvals::model::{Grant, GrantScope, GrantSubject, Ticket};
use pgward::http_client::{Client, Request, Url};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach and log in to the admin API.
#[derive(Args, Debug)]
pub struct Connection {
    /// The admin listener's URL [default: $PGWARD_URL, else
    /// http://127.0.0.1:9187].
    #[arg(long)]
    url: Option<String>,
    /// Log in as this pgward identity (password from $PGWARD_PASSWORD, or
    /// prompted for).
    #[arg(long, conflicts_with = "token")]
    user: Option<String>,
    /// Log in with a token minted by pgward (`pgward token mint`)
    /// [default: $PGWARD_TOKEN].
    #[arg(long)]
    token: Option<String>,
    /// CA certificate (PEM) for an HTTPS admin listener.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `pgward approvals`.
#[derive(Subcommand, Debug)]
pub enum ApprovalsCmd {
    /// Tickets waiting for a decision (all tickets with --all).
    List {
        #[command(flatten)]
        conn: Connection,
        /// Every ticket, decided ones too.
        #[arg(long)]
        all: bool,
    },
    /// Everything about one ticket.
    Show {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id.
        id: String,
    },
    /// Approve a ticket.
    Approve {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id.
        id: String,
        /// Why (optional).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a ticket.
    Deny {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
}

/// `pgward grants`.
#[derive(Subcommand, Debug)]
pub enum GrantsCmd {
    /// Grants in force (all grants with --all).
    List {
        #[command(flatten)]
        conn: Connection,
        /// Every grant, ended ones too.
        #[arg(long)]
        all: bool,
    },
    /// Grant an identity or a group a time window.
    Create {
        #[command(flatten)]
        conn: Connection,
        /// For this identity.
        #[arg(
            long = "to-user",
            conflicts_with = "to_group",
            required_unless_present = "to_group"
        )]
        to_user: Option<String>,
        /// For every member of this group.
        #[arg(long = "to-group")]
        to_group: Option<String>,
        /// The statements this require_approval rule would hold run at once.
        #[arg(long, conflicts_with = "role", required_unless_present = "role")]
        rule: Option<String>,
        /// Elevation: on --database, log in as this role.
        #[arg(long, requires = "database")]
        role: Option<String>,
        /// The client-facing database of --role.
        #[arg(long, requires = "role")]
        database: Option<String>,
        /// How long, e.g. 30m (at most approvals.max_grant).
        #[arg(long)]
        duration: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// End a grant now.
    Revoke {
        #[command(flatten)]
        conn: Connection,
        /// The grant's id.
        id: String,
        /// Why (optional).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs `pgward approvals ...`.
pub async fn approvals(cmd: ApprovalsCmd) -> anyhow::Result<()> {
    match cmd {
        ApprovalsCmd::List { conn, all } => {
            let state = if all { "all" } else { "pending" };
            list(
                &conn,
                &format!("/api/approvals?state={state}"),
                "tickets",
                |t| {
                    let ticket: Ticket = serde_json::from_value(t.clone())?;
                    Ok(summary(&ticket, waited(t)))
                },
            )
            .await
        }
        ApprovalsCmd::Show { conn, id } => {
            let v = Api::new(&conn)?
                .call("GET", &format!("/api/approvals/{}", path_id(&id)?), None)
                .await?;
            show_ticket(&conn, &v)
        }
        ApprovalsCmd::Approve { conn, id, reason } => vote(&conn, &id, "approve", reason).await,
        ApprovalsCmd::Deny { conn, id, reason } => vote(&conn, &id, "deny", Some(reason)).await,
    }
}

/// `approve` or `deny` (`verb`) ticket `id`, and shows it after.
async fn vote(
    conn: &Connection,
    id: &str,
    verb: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let v = Api::new(conn)?
        .call(
            "POST",
            &format!("/api/approvals/{}/{verb}", path_id(id)?),
            Some(json!({ "reason": reason })),
        )
        .await?;
    show_ticket(conn, &v)
}

/// GETs a listing and prints each of its `key` items with `line` (or the
/// JSON with --json).
async fn list(
    conn: &Connection,
    path: &str,
    key: &str,
    line: impl Fn(&Value) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let v = Api::new(conn)?.call("GET", path, None).await?;
    if conn.json {
        return print_json(&v);
    }
    let items = v[key].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("none");
    }
    for item in &items {
        println!("{}", visible(&line(item)?));
    }
    Ok(())
}

/// Runs `pgward grants ...`.
pub async fn grants(cmd: GrantsCmd) -> anyhow::Result<()> {
    match cmd {
        GrantsCmd::List { conn, all } => {
            let state = if all { "all" } else { "active" };
            list(
                &conn,
                &format!("/api/grants?state={state}"),
                "grants",
                grant_line,
            )
            .await
        }
        GrantsCmd::Create {
            conn,
            to_user,
            to_group,
            rule,
            role,
            database,
            duration,
            reason,
        } => {
            let subject = match (to_user, to_group) {
                (Some(u), None) => GrantSubject::User(u),
                (None, Some(g)) => GrantSubject::Group(g),
                _ => bail!("give exactly one of --to-user, --to-group"),
            };
            let scope = match (rule, role, database) {
                (Some(r), None, None) => GrantScope::Rule(r),
                (None, Some(role), Some(database)) => GrantScope::Role { database, role },
                _ => bail!("give --rule, or --role with --database"),
            };
            let body = json!({
                "subject": subject,
                "scope": scope,
                "duration": duration,
                "reason": reason,
            });
            let v = Api::new(&conn)?
                .call("POST", "/api/grants", Some(body))
                .await?;
            if conn.json {
                return print_json(&v);
            }
            println!("granted: {}", visible(&grant_line(&v)?));
            Ok(())
        }
        GrantsCmd::Revoke { conn, id, reason } => {
            let v = Api::new(&conn)?
                .call(
                    "POST",
                    &format!("/api/grants/{}/revoke", path_id(&id)?),
                    Some(json!({ "reason": reason })),
                )
                .await?;
            if conn.json {
                return print_json(&v);
            }
            println!("revoked: {}", visible(&grant_line(&v)?));
            Ok(())
        }
    }
}

/// The admin API, logged in.
pub(crate) struct Api {
    client: Client,
    base: Url,
    authorization: String,
}

impl Api {
    pub(crate) fn new(conn: &Connection) -> anyhow::Result<Self> {
        use base64::Engine;
        let url = conn
            .url
            .clone()
            .or_else(|| std::env::var("PGWARD_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:9187".into());
        let base = Url::parse(&url).map_err(anyhow::Error::msg)?;
        let token = match &conn.user {
            Some(_) => None,
            None => conn
                .token
                .clone()
                .or_else(|| std::env::var("PGWARD_TOKEN").ok()),
        };
        let authorization = match (&token, &conn.user) {
            (Some(token), _) => format!("Bearer {}", token.trim()),
            (None, Some(user)) => {
                let password = match std::env::var("PGWARD_PASSWORD") {
                    Ok(p) => p,
                    Err(_) => rpassword::prompt_password(format!("password for {user}: "))
                        .context("cannot read the password")?,
                };
                let pair = format!("{user}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            (None, None) => {
                bail!("give --user (password in PGWARD_PASSWORD or prompted) or --token")
            }
        };
        let client = Client::new(conn.ca_file.as_deref(), Duration::from_secs(30), 16 << 20)
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            client,
            base,
            authorization,
        })
    }

    /// One request; a non-2xx answer is an error with the API's message.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = self.base.join(path);
        let body = body.map(|b| b.to_string().into_bytes());
        let response = self
            .client
            .send(&Request {
                method,
                url: &url,
                headers: &[
                    ("Authorization", &self.authorization),
                    ("X-Pgward-Request", "1"),
                ],
                json: body.as_deref(),
            })
            .await
            .with_context(|| format!("{}:{}", url.host, url.port))?;
        let value: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if !response.is_success() {
            let message = value["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| response.text().trim().to_owned());
            bail!("{} ({})", message, response.status);
        }
        Ok(value)
    }
}

/// An id as typed, checked before it goes into a path.
pub(crate) fn path_id(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{id:?} is not a ticket or grant id");
    }
    Ok(id)
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// How long a pending ticket has waited, as text (`-` once it ended).
fn waited(v: &Value) -> String {
    v["waiting_seconds"]
        .as_u64()
        .map_or_else(|| "-".into(), since)
}

/// One line per ticket.
fn summary(t: &Ticket, waited: String) -> String {
    let statement: String = t.statement.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut short: String = statement.chars().take(60).collect();
    if short.len() < statement.len() {
        short.push('…');
    }
    format!(
        "{}  {:<9} {:>6}  {}@{}  rule {}  {}",
        t.id,
        format!("{:?}", t.state).to_lowercase(),
        waited,
        t.requester.user,
        t.requester.database,
        t.rule,
        short
    )
}

fn show_ticket(conn: &Connection, v: &Value) -> anyhow::Result<()> {
    if conn.json {
        return print_json(v);
    }
    let t: Ticket = serde_json::from_value(v.clone())?;
    let r = &t.requester;
    // Written whole, then printed with what a client sent made visible.
    let mut out = String::new();
    writeln!(
        out,
        "ticket {} ({:?} mode): {}",
        t.id,
        t.mode,
        format!("{:?}", t.state).to_lowercase()
    )?;
    if t.break_glass {
        writeln!(out, "  BREAK-GLASS: ran at once, recorded as self-approved")?;
    }
    writeln!(
        out,
        "  identity     {} (groups: {})",
        r.user,
        r.groups.join(", ")
    )?;
    writeln!(out, "  client       {}", r.client.as_deref().unwrap_or("-"))?;
    if let Some(app) = &r.application_name {
        writeln!(out, "  application  {app}")?;
    }
    writeln!(
        out,
        "  database     {} (upstream {}, role {})",
        r.database, r.upstream, r.role
    )?;
    writeln!(
        out,
        "  session      {} on instance {}",
        r.session, r.instance
    )?;
    writeln!(out, "  transaction  {}", t.transaction)?;
    writeln!(out, "  waiting      {}", waited(v))?;
    writeln!(
        out,
        "  expires      {}",
        v["expires"].as_str().unwrap_or("-")
    )?;
    match &t.rule_message {
        Some(m) => writeln!(out, "  rule         {}: {m}", t.rule)?,
        None => writeln!(out, "  rule         {}", t.rule)?,
    }
    if let Some(j) = &t.justification {
        writeln!(out, "  justification {j}")?;
    }
    writeln!(
        out,
        "  approvers    {} ({} of {} approvals)",
        t.approvers.join(", "),
        t.approvals(),
        t.threshold
    )?;
    for vote in &t.votes {
        let what = if vote.approve { "approved" } else { "denied" };
        match &vote.reason {
            Some(reason) => writeln!(out, "  vote         {} {what}: {reason}", vote.approver)?,
            None => writeln!(out, "  vote         {} {what}", vote.approver)?,
        }
    }
    if let Some(end) = &t.end_reason {
        writeln!(out, "  ended        {end}")?;
    }
    writeln!(out, "  statement:")?;
    for line in t.statement.lines() {
        writeln!(out, "    {line}")?;
    }
    for (i, p) in t.params.iter().enumerate() {
        writeln!(
            out,
            "  ${} {} ({}) = {}",
            i + 1,
            p.type_name.as_deref().unwrap_or("?"),
            p.format,
            p.value.as_deref().unwrap_or("NULL")
        )?;
    }
    if let Some(page) = v["page"].as_str() {
        writeln!(out, "  page         {page}")?;
    }
    print!("{}", terminal_text(&out));
    Ok(())
}

/// `text` for a terminal: every line as [`visible`] shows it, so nothing a
/// client sent (a carriage return, an escape sequence, a bidirectional
/// override) can move the cursor, recolour or reorder what an approver
/// reads.
fn terminal_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        out.push_str(&visible(body));
        out.push_str(newline);
    }
    out
}

fn grant_line(v: &Value) -> anyhow::Result<String> {
    let g: Grant = serde_json::from_value(v.clone())?;
    let subject = match &g.subject {
        GrantSubject::User(u) => format!("user {u}"),
        GrantSubject::Group(g) => format!("group {g}"),
    };
    let scope = match &g.scope {
        GrantScope::Rule(r) => format!("statements of rule {r}"),
        GrantScope::Role { database, role } => format!("role {role} on {database}"),
    };
    let state = match (&g.revoked, v["active"].as_bool()) {
        (Some(r), _) => format!("revoked by {}", r.by),
        (None, Some(true)) => format!("until {}", v["expires"].as_str().unwrap_or("?")),
        (None, _) => format!("ended {}", v["expires"].as_str().unwrap_or("?")),
    };
    Ok(format!(
        "{}  {subject}  {scope}  by {}  {state}  ({})",
        g.id,
        g.created_by,
        g.reason.as_deref().unwrap_or("no reason")
    ))
}

fn since(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}
