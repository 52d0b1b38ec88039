//! Approvals test setup: approver identities, a rule that needs approval,
//! the admin listener with the approvals routes over a file store, tickets
//! made directly in the store, and JSON requests to the API.

use super::{Backend, Pgward};
use pgward::admin::AdminState;
use pgward::approvals::model::{binding, now_ms, ApprovalMode, Requester, Ticket, TicketState};
use pgward::approvals::store::ApprovalStore;
use pgward::auth::verifier::ScramVerifier;
use pgward::http_client::{Client, Request, Response, Url};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Approvers (group `dba`): their passwords are their names plus `-pw`.
pub const APPROVERS: [&str; 2] = ["dana", "erin"];
/// An admin (group `admin`), not an approver.
pub const ROOT: &str = "root";

/// The config lines for approvers, the admin, a rule needing approval of
/// UPDATEs (by `dba`), and the admin listener.
pub fn config_extra() -> String {
    let mut text = String::new();
    for user in APPROVERS {
        text.push_str(&format!(
            "\n[users.{user}]\nscram_verifier = \"{}\"\ngroups = [\"dba\"]\n",
            ScramVerifier::generate(&format!("{user}-pw"))
        ));
    }
    text.push_str(&format!(
        "\n[users.{ROOT}]\nscram_verifier = \"{}\"\ngroups = [\"admin\"]\n",
        ScramVerifier::generate(&format!("{ROOT}-pw"))
    ));
    text.push_str(
        "\n[policy]\n[[policy.rules]]\nname = \"approve-updates\"\naction = \"require_approval\"\n\
         kinds = [\"update\"]\napprovers = [\"dba\"]\n\n[approvals]\napprovers = [\"dba\"]\n\
         \n[admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
    );
    text
}

/// pgward with [`config_extra`], its approvals store and admin listener.
pub struct Setup {
    /// pgward.
    pub pw: Pgward,
    /// The store the admin API works on.
    pub store: Arc<dyn ApprovalStore>,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Holds the config and store files, when the setup made them.
    pub _dir: Option<tempfile::TempDir>,
}

/// Starts pgward, a file store and the admin listener with the approvals
/// routes.
pub async fn start(backend: &Backend) -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let text = format!("{}\n{}", backend.config("", ""), config_extra());
    let pw = Pgward::start_in(&text, dir.path()).await;
    let mut setup = serve(pw).await;
    setup._dir = Some(dir);
    setup
}

/// The admin listener (with the approvals routes) for `pw` (started with
/// [`config_extra`]); its approvals store is the gateway's.
pub async fn serve(pw: Pgward) -> Setup {
    let store = Arc::clone(pw.gateway.approvals().store());
    let state = AdminState {
        gw: Arc::clone(&pw.gateway),
        config_path: None,
        ready: Arc::new(AtomicBool::new(true)),
    };
    let admin = pgward::admin::start(
        state,
        "127.0.0.1:0".parse().expect("addr"),
        Default::default(),
    )
    .await
    .expect("admin listener");
    Setup {
        pw,
        store,
        admin,
        _dir: None,
    }
}

/// A pending hold-mode ticket of alice's, approvable by `dba`.
pub fn ticket(threshold: u32) -> Ticket {
    let now = now_ms();
    let id = pgward::approvals::model::new_id();
    let statement = "UPDATE customers SET email = 'x' WHERE id = $1";
    Ticket {
        id,
        mode: ApprovalMode::Hold,
        state: TicketState::Pending,
        created_at: now,
        expires_at: now + 600_000,
        valid_until: None,
        requester: Requester {
            user: super::USER.into(),
            groups: vec!["dev".into()],
            client: Some("127.0.0.1:40000".into()),
            database: super::DB.into(),
            upstream: super::DB.into(),
            role: super::APP_ROLE.into(),
            application_name: Some("psql".into()),
            session: 1,
            instance: "test".into(),
        },
        statement: statement.into(),
        params: vec![pgward::approvals::model::ShownParam {
            type_name: Some("int4".into()),
            format: "binary".into(),
            value: Some("42".into()),
        }],
        binding: binding(super::USER, super::DB, "UTF8", statement.as_bytes(), &[]),
        transaction: "transaction".into(),
        rule: "approve-updates".into(),
        rule_message: Some("updates need a second pair of eyes".into()),
        justification: Some("INC-7: fix a customer's address".into()),
        approvers: vec!["dba".into()],
        threshold,
        votes: Vec::new(),
        break_glass: false,
        end_reason: None,
        token: None,
    }
}

/// One JSON request to the admin listener as `user` (password
/// `{user}-pw`; `None`: no credentials), with the CSRF header unless
/// `plain`; (status, body as JSON or Null).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let r = send(addr, method, path, user, body, &[("X-Pgward-Request", "1")]).await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

/// A request with exactly `headers` (plus credentials).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: Option<serde_json::Value>,
    headers: &[(&str, &str)],
) -> Response {
    use base64::Engine;
    let url = Url::parse(&format!("http://{addr}{path}")).expect("url");
    let auth = user.map(|u| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{u}-pw"))
        )
    });
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &auth {
        all.push(("Authorization", a));
    }
    let body = body.map(|b| b.to_string().into_bytes());
    Client::new(None, Duration::from_secs(30), 1 << 20)
        .expect("client")
        .send(&Request {
            method,
            url: &url,
            headers: &all,
            json: body.as_deref(),
        })
        .await
        .expect("response")
}

/// A fresh table `{prefix}_<random>` of the app role with one row
/// `(1, 'old@example.com')`.
pub fn table(prefix: &str) -> String {
    let table = format!("{prefix}_{:08x}", rand::random::<u32>());
    Backend::shared().admin_sql(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, email text); \
         INSERT INTO {table} VALUES (1, 'old@example.com'); \
         ALTER TABLE {table} OWNER TO {}",
        super::APP_ROLE
    ));
    table
}

/// Runs `sql` with psql as alice through `pw`, in the background.
pub fn psql(pw: &Pgward, sql: &str) -> tokio::task::JoinHandle<std::process::Output> {
    let mut command = std::process::Command::new(Backend::shared().cluster.program("psql"));
    command
        .env("PGPASSWORD", super::PASSWORD)
        .args(["-X", "-c", sql])
        .arg(pw.dsn());
    tokio::task::spawn_blocking(move || command.output().expect("psql"))
}

/// Polls the store until a statement is held (a pending ticket).
pub async fn wait_pending(store: &dyn ApprovalStore) -> Ticket {
    let started = std::time::Instant::now();
    loop {
        if let Some(t) = store
            .tickets(true, 10)
            .await
            .expect("read")
            .into_iter()
            .next()
        {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no statement was held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ticket id named in a ticket-mode refusal.
pub fn ticket_of(e: &tokio_postgres::Error) -> String {
    let m = super::message(e);
    assert_eq!(super::sqlstate(e), "42501", "{m}");
    m.split("ticket ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ticket in {m}"))
        .to_owned()
}

/// Ticket `id` as the store holds it (what its approvers are shown).
pub async fn shown(pw: &Pgward, id: &str) -> Ticket {
    pw.gateway
        .approvals()
        .ticket(id)
        .await
        .expect("store")
        .expect("ticket")
}
