//! One client connection: startup, authentication, backend login, then the
//! relay.

mod armed;
pub(crate) mod core;
pub(crate) mod event_loop;
#[doc(hidden)]
pub mod fuzzing;
pub mod masking;
pub mod phases;
pub mod read_sizer;
mod refusal;
pub mod registry;
mod relay;
mod relay_io;
pub mod rules;
mod side_wake;
mod spare;
mod stack;
pub mod startup;
pub(crate) mod startup_params;
pub mod tracker;

use crate::error::SessionError;
use crate::gateway::Gateway;
use crate::io::{FramedStream, Stream};
use crate::wire::backend::TransactionStatus;
use crate::wire::encode;
use bytes::BytesMut;
use registry::{CancelRoute, CancelTarget, NewSession};
use relay_io::{RelayRead, RelayWrite};
use startup::Opening;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where the server is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ShutdownPhase {
    /// Serving.
    Running = 0,
    /// No new connections; sessions close at their next idle moment.
    Draining = 1,
    /// The drain timeout passed: sessions close now, between messages.
    Forced = 2,
}

/// Serves one accepted connection to its end, logging how it ended.
/// Sessions learn of the server's shutdown through the registry
/// ([`registry::Registry::set_shutdown`]).
pub async fn serve(tcp: TcpStream, gw: Arc<Gateway>) {
    let peer = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    match run(tcp, peer, &gw).await {
        Ok(()) => tracing::debug!(?peer, "session ended"),
        Err(e) => {
            if matches!(e, SessionError::BackendUnavailable { .. }) {
                gw.metrics
                    .backend_connect_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            tracing::info!(?peer, origin = ?e.origin(), error = %e, "session ended with error")
        }
    }
}

async fn run(tcp: TcpStream, peer: Option<SocketAddr>, gw: &Gateway) -> Result<(), SessionError> {
    // Startup, login and the phases are built in a boxed future that is gone
    // before the relay starts: inline, their largest state (TLS and SCRAM
    // exchanges, the mask-map read) would size the session's task for its
    // whole life, idle or not.
    // The relay is boxed too: moved out of a returned value, it would be
    // kept in the task twice over.
    // `opened` stays boxed: this task is not sized for what lives beside
    // the relay (on a loop, the relay's own state is the loop's task).
    let Some((relay, mut opened)) = Box::pin(open(tcp, peer, gw)).await? else {
        return Ok(());
    };
    let result = match opened.relay_loop.take() {
        // The relay runs and ends there (its sockets are that loop's).
        Some(relay_loop) => {
            relay_loop
                .spawn(relay.run())
                .await
                .unwrap_or_else(|event_loop::Gone| {
                    Err(SessionError::RelayLoop(
                        "the session's relay stopped before its end".into(),
                    ))
                })
        }
        None => Box::pin(relay.run()).await,
    };
    if let Some(audit) = &mut opened.audit {
        audit.ended(&match &result {
            Ok(()) => "the client or the server closed the session".to_owned(),
            Err(e) => e.to_string(),
        });
    }
    result
}

/// What lives exactly as long as a session's relay (returned beside it).
struct Opened {
    /// The event loop whose epoll holds the relay's sockets, if one does.
    relay_loop: Option<event_loop::LoopRef>,
    audit: Option<crate::record::SessionAudit>,
    /// Ends the session at its credential's expiry; stops when dropped.
    _credential_watch: crate::auth::token::expiry::SessionWatch,
    /// Ends an elevated session with its grant; stops when dropped.
    _elevation_watch: Option<crate::approvals::elevation::ElevationGuard>,
}

/// Everything before the relay: startup, authentication, backend login,
/// the phases and the client's hello. `None`: the connection was a
/// CancelRequest or an admin console, now served.
async fn open(
    tcp: TcpStream,
    peer: Option<SocketAddr>,
    gw: &Gateway,
) -> Result<Option<(Box<relay::Relay>, Box<Opened>)>, SessionError> {
    let deadline = tokio::time::Instant::now() + gw.config.server.startup_timeout;
    let opening = tokio::time::timeout_at(
        deadline,
        startup::open(tcp, gw.tls.as_ref(), gw.config.server.require_client_tls),
    )
    .await
    .map_err(|_| SessionError::StartupTimeout)??;
    let (mut conn, startup) = match opening {
        Opening::Cancel {
            conn,
            process_id,
            secret_key,
        } => {
            return forward_cancel(gw, conn, process_id, secret_key)
                .await
                .map(|()| None)
        }
        Opening::Session { conn, startup } => (conn, startup),
    };
    if crate::admin::console::wanted(gw, &startup) {
        return crate::admin::console::serve(conn, &startup, gw, deadline)
            .await
            .map(|()| None);
    }
    let established = tokio::time::timeout_at(deadline, establish(&mut conn, &startup, gw))
        .await
        .unwrap_or(Err(SessionError::StartupTimeout));
    let Established {
        login,
        target,
        authenticated,
        role,
        elevation,
        database,
        startup_effects,
    } = match established {
        Ok(ok) => ok,
        Err(e) => {
            startup::send_fatal(&mut conn, &e).await;
            return Err(e);
        }
    };
    let upstream_name = target.upstream.config.name.clone();
    let identity = authenticated.identity.clone();
    let registration = gw.registry.register(
        NewSession {
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            client: peer,
            database: database.clone(),
        },
        target,
    );
    // Ends the session at its token's expiry, on revocation, or at the
    // maximum lifetime; stops with the session.
    let credential_watch = crate::auth::token::expiry::watch_session(
        &gw.tokens.load_full(),
        &gw.registry,
        registration.id,
        &authenticated,
    );
    // Ends an elevated session when its grant expires or is revoked.
    let elevation_watch = elevation.as_ref().map(|grant| {
        gw.approvals().elevated(
            grant,
            &role,
            registration.id,
            &gw.registry,
            &gw.tokens.load().deadlines,
        )
    });
    let info = phases::SessionInfo {
        id: registration.id,
        identity,
        database,
        client: peer,
        application_name: startup.param("application_name").map(str::to_owned),
        role,
        elevation: elevation.map(|g| g.id),
        upstream: upstream_name.clone(),
        credential: authenticated.credential.clone(),
    };
    let built = stack::build(
        gw,
        &upstream_name,
        &info,
        &login.startup_messages,
        &startup_effects,
    );
    let mut stack = match built.await {
        Ok(s) => s,
        Err(e) => {
            startup::send_fatal(&mut conn, &e).await;
            return Err(e);
        }
    };
    let mut hello = BytesMut::new();
    encode::authentication_ok(&mut hello);
    hello.extend_from_slice(&login.startup_messages);
    encode::backend_key_data(&mut hello, registration.process_id, registration.secret_key);
    encode::ready_for_query(&mut hello, TransactionStatus::Idle);
    conn.send(&hello).await?;

    let tap = gw.audit.as_ref().and_then(|a| a.recording_tap(&info));
    let mut core = core::Core::new(
        info,
        stack.phases,
        Arc::clone(&gw.rules),
        stack.keep_descriptions,
        gw.config.server.max_message_size,
    );
    if let Some(tap) = tap {
        core.set_tap(tap);
    }
    let (relay_loop, [client_r, backend_r], [client_w, backend_w]) =
        relay_sockets(conn.stream, login.conn.stream)?;
    let relay = Box::new(relay::Relay {
        client_r,
        client_w,
        backend_r,
        backend_w,
        early: relay::EarlyInput::of(conn.buf, login.conn.buf),
        core,
        idle_timeout: gw.config.server.idle_timeout,
        registration,
    });
    Ok(Some((
        relay,
        Box::new(Opened {
            relay_loop,
            audit: stack.audit.take(),
            _credential_watch: credential_watch,
            _elevation_watch: elevation_watch,
        }),
    )))
}

/// The loop the relay's sockets are on (if one), and their read and write
/// halves, client's first.
type RelaySockets = (
    Option<event_loop::LoopRef>,
    [relay_io::RelayRead; 2],
    [relay_io::RelayWrite; 2],
);

/// The relay's halves of the client's and the server's sockets: on this
/// session thread's event loop when both are plain TCP and it has one,
/// else on tokio's runtime.
fn relay_sockets(client: Stream, backend: Stream) -> Result<RelaySockets, SessionError> {
    match (event_loop::current(), client, backend) {
        (Some(relay_loop), Stream::Plain(client), Stream::Plain(backend)) => {
            let attach = |tcp| {
                relay_loop.attach(tcp).map_err(|e| {
                    SessionError::RelayLoop(format!("cannot watch the session's socket: {e}"))
                })
            };
            let (client_r, client_w) = attach(client)?;
            let (backend_r, backend_w) = attach(backend)?;
            Ok((
                Some(relay_loop),
                [RelayRead::Loop(client_r), RelayRead::Loop(backend_r)],
                [RelayWrite::Loop(client_w), RelayWrite::Loop(backend_w)],
            ))
        }
        (_, client, backend) => {
            let (client_r, client_w) = client.into_split();
            let (backend_r, backend_w) = backend.into_split();
            Ok((
                None,
                [RelayRead::Runtime(client_r), RelayRead::Runtime(backend_r)],
                [
                    RelayWrite::Runtime(client_w),
                    RelayWrite::Runtime(backend_w),
                ],
            ))
        }
    }
}

/// What a client's login established.
struct Established {
    login: crate::auth::backend::BackendLogin,
    target: CancelTarget,
    authenticated: crate::auth::identity::Authenticated,
    /// The PostgreSQL role the session logged in as.
    role: String,
    /// The role grant that chose `role`, when one did.
    elevation: Option<crate::approvals::model::Grant>,
    database: String,
    /// Effects of the startup settings on the rules' view of the session.
    startup_effects: Vec<crate::policy::facts::Effect>,
}

/// Authenticates the client, maps it to its role and logs in to its
/// upstream as that role.
async fn establish(
    conn: &mut FramedStream,
    startup: &crate::wire::startup::StartupMessage,
    gw: &Gateway,
) -> Result<Established, SessionError> {
    let user_name = startup
        .param("user")
        .filter(|u| !u.is_empty())
        .ok_or(SessionError::MissingUser)?
        .to_owned();
    let unknown_options = startup::unsupported_protocol_options(startup);
    if startup.minor > 0 || !unknown_options.is_empty() {
        let mut out = BytesMut::new();
        encode::negotiate_protocol_version(&mut out, 0, &unknown_options);
        conn.send(&out).await?;
    }
    let startup_settings =
        startup_params::read_startup(startup, &gw.config.server.startup_parameters)?;
    let authenticated = crate::auth::authenticate(
        conn,
        &gw.scram,
        &gw.config.users,
        &gw.tokens.load_full(),
        &user_name,
    )
    .await?;
    let identity = &authenticated.identity;

    // As in PostgreSQL, the database is checked only after authentication, so
    // strangers learn nothing about which databases exist.
    let database = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user_name)
        .to_owned();
    let route = gw
        .config
        .route(&database)
        .ok_or_else(|| SessionError::UnknownDatabase(database.clone()))?;
    if !authenticated.may_open(&database) {
        return Err(SessionError::DatabaseNotAllowed(database.clone()));
    }
    let upstream = gw
        .upstreams
        .get(route.upstream)
        .ok_or_else(|| SessionError::UnknownDatabase(database.clone()))?;
    // A configured user may name its role per upstream; a token identity
    // maps by name and groups only.
    let explicit = match authenticated.credential {
        crate::auth::identity::Credential::Password => gw
            .config
            .users
            .get(&identity.user)
            .and_then(|u| u.roles.get(route.upstream))
            .map(String::as_str),
        crate::auth::identity::Credential::Token(_) => None,
    };
    // An active role grant for this identity and database elevates the
    // session to its role (which the grant's creation checked is one of the
    // upstream's); otherwise the mapping decides.
    let elevation = gw
        .approvals()
        .role_grant(identity, &database)
        .and_then(|(grant, name)| upstream.role(&name).map(|role| (grant, role)));
    let mapped = || {
        upstream
            .config
            .roles
            .role_for(&identity.user, &identity.groups, explicit)
            .and_then(|name| upstream.role(name))
    };
    let (role, elevation) = match elevation {
        Some((grant, role)) => (role, Some(grant)),
        None => (
            mapped().ok_or_else(|| SessionError::NoRole {
                user: user_name.clone(),
                database: database.clone(),
            })?,
            None,
        ),
    };
    let masked = gw
        .rules
        .load()
        .masking
        .rules
        .iter()
        .any(|r| r.applies_to(identity));
    if masked && route.catch_all && route.dbname != upstream.config.dbname {
        // The upstream's column map describes its own database only.
        return Err(SessionError::MaskedCatchAll(database.clone()));
    }
    let settings =
        startup_params::judge_startup(startup_settings, &gw.rules.load().policy, identity)?;
    least_privilege(gw, upstream, &role.name, masked).await?;
    let login = upstream
        .login(role, route.dbname, &settings.forwarded)
        .await
        .inspect_err(|e| {
            if let SessionError::BackendUnavailable { upstream, detail } = e {
                tracing::warn!(upstream, detail, "upstream login failed");
            }
        })?;
    let target = CancelTarget {
        upstream: upstream.clone(),
        process_id: login.process_id,
        secret_key: login.secret_key,
    };
    tracing::info!(
        user = %user_name,
        database,
        upstream = route.upstream,
        role = %role.name,
        grant = elevation.as_ref().map(|g| g.id.as_str()),
        "session established"
    );
    Ok(Established {
        login,
        target,
        authenticated,
        role: role.name.clone(),
        elevation,
        database,
        startup_effects: settings.effects,
    })
}

/// Checks the mapped role's privileges. A masked identity (or any identity
/// with `least_privilege = "strict"`) waits for the check and is refused
/// if the role fails it; for the others the check runs in the background
/// and its findings are warnings.
async fn least_privilege(
    gw: &Gateway,
    upstream: &crate::auth::backend::Upstream,
    role: &str,
    masked: bool,
) -> Result<(), SessionError> {
    use crate::config::roles::LeastPrivilege;
    let strict = masked || upstream.config.roles.least_privilege == LeastPrivilege::Strict;
    let masking = gw.rules.load().masking.clone();
    let max_age = masking.refresh;
    let unavailable = |e: &dyn std::fmt::Display| SessionError::BackendUnavailable {
        upstream: upstream.config.name.clone(),
        detail: format!("pgward cannot check role \"{role}\": {e}"),
    };
    let map = match gw.masks.get(&upstream.config.name) {
        Some(m) if !masking.rules.is_empty() && strict => {
            Some(m.ensure().await.map_err(|e| unavailable(&e))?)
        }
        Some(m) => m.current(),
        None => None,
    };
    if !strict {
        if upstream.config.roles.least_privilege == LeastPrivilege::MaskedOnly {
            return Ok(());
        }
        gw.role_checks
            .warn_in_background(upstream, role, map, max_age, masking.catalog_timeout);
        return Ok(());
    }
    let checked = tokio::time::timeout(
        masking.catalog_timeout,
        gw.role_checks.report(upstream, role, map.as_ref(), max_age),
    )
    .await
    .map_err(|_| unavailable(&"the catalog did not answer within masking.catalog_timeout"))?
    .map_err(|e| unavailable(&e))?;
    match checked.report.first_failure() {
        None => Ok(()),
        Some(f) => {
            tracing::warn!(
                upstream = %upstream.config.name,
                role,
                finding = %f.what,
                "login refused: the mapped role is not least-privilege"
            );
            Err(SessionError::RoleNotLeastPrivilege(format!(
                "pgward refuses to log in as role \"{role}\"{whom}: the role must be one that {} \
                 (it {}); `pgward doctor` prints the statements that fix it",
                f.condition.requirement(),
                f.what,
                whom = if masked {
                    " for an identity with masked columns"
                } else {
                    ""
                },
            )))
        }
    }
}

/// A CancelRequest: routed through the registry to the session (a held
/// request is withdrawn) and to the server. The client's cancel connection
/// stays open until the server has taken the request, as PostgreSQL keeps
/// it (libpq returns from a cancel when the connection closes), and a TLS
/// connection ends with close_notify.
async fn forward_cancel(
    gw: &Gateway,
    mut conn: FramedStream,
    process_id: i32,
    secret_key: i32,
) -> Result<(), SessionError> {
    // An unknown key is ignored silently, as PostgreSQL does.
    let result = match gw.registry.cancel(process_id, secret_key) {
        CancelRoute::Server(target) => {
            target
                .upstream
                .cancel(target.process_id, target.secret_key)
                .await
        }
        CancelRoute::Session => Ok(()),
        CancelRoute::Unknown => {
            tracing::debug!("cancel request with an unknown key");
            Ok(())
        }
    };
    let _ = conn.stream.shutdown().await;
    result
}
