//! The approvals service: one per gateway ([`crate::gateway::Gateway::approvals`]).
//!
//! It owns the store, the `[approvals]` settings (swapped on reload), the
//! statements held in this instance's sessions (ticket id -> the sender that
//! releases the hold) and a view of the active grants. A task follows the
//! store's changes, from this instance or any other sharing the store, and
//! releases a held statement once its ticket is decided. The sessions'
//! phases call in without waiting on I/O: every store write runs in a task
//! of its own and answers through the hold.
//!
//! The approver-facing methods (`tickets`, `vote`, `grants`, ...) are what
//! the admin API, the CLI and the web page call.

use super::model::{
    new_id, now_ms, ApprovalMode, Grant, GrantScope, GrantSubject, Revocation, Ticket, TicketState,
    VoteError,
};
use super::note::{self, Note};
use super::store::{ApprovalStore, ApprovalStoreError, Change};
use crate::config::approvals::{ApprovalStoreConfig, ApprovalsConfig};
use crate::policy::rules::Identity;
use crate::session::phases::{HoldEnd, OnHoldEnd, Refusal, Release};
use crate::sqlstate::Sqlstate;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

/// Why an approver's request was not done.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The store failed, or refused the change.
    #[error(transparent)]
    Store(#[from] ApprovalStoreError),
    /// The vote was not counted.
    #[error(transparent)]
    Vote(#[from] VoteError),
    /// The grant asked for is not allowed (too long, unknown role or rule,
    /// not this approver's to make).
    #[error("{0}")]
    Grant(String),
    /// The store this configuration names is not available in this build.
    #[error("{0}")]
    Unsupported(String),
}

/// Statements being held in this instance, by ticket id.
struct Waiter {
    release: oneshot::Sender<Release>,
    since: Instant,
    /// The statement's audit note, filled in before the release.
    note: Option<Note>,
}

/// A ticket-mode ticket made here and not yet decided, by binding.
#[derive(Debug, Clone)]
struct PendingTicket {
    id: String,
    user: String,
    expires_at: u64,
}

/// Pending ticket-mode tickets one identity may have made in this instance
/// at once: each refused statement makes one, so a client could otherwise
/// fill the store with them.
pub const MAX_PENDING_PER_IDENTITY: usize = 20;

/// Approvals for one gateway.
pub struct Approvals {
    store: Arc<dyn ApprovalStore>,
    config: ArcSwap<ApprovalsConfig>,
    instance: String,
    waiters: Mutex<HashMap<String, Waiter>>,
    /// Grants active when last read (expiry is checked at use).
    grants: ArcSwap<Vec<Grant>>,
    /// Client database -> the roles a grant may elevate to there.
    roles: BTreeMap<String, BTreeSet<String>>,
    /// Ticket mode: the pending ticket of a binding (id, requester, expiry),
    /// so a retry before the decision names the same ticket instead of
    /// making another.
    pending: Mutex<HashMap<String, PendingTicket>>,
    /// Starts the store's own tasks (the file store's follower), once.
    start_store: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The gateway's rules in force (a rule grant names one of them).
    rules: Arc<ArcSwap<crate::gateway::RuleSnapshot>>,
    metrics: Arc<crate::admin::Metrics>,
    /// Sessions elevated by role grants (`elevation.rs`).
    elevations: Arc<super::elevation::Elevations>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("store", &self.store)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// What starts a store's own tasks, once there is a runtime.
type StartStore = Box<dyn FnOnce() + Send>;

/// The PostgreSQL store on `upstream`'s own connection. It connects
/// lazily; once started, a task migrates the schema and connects the
/// listener at once, so a store that cannot be reached is logged at startup
/// (and every operation on it fails closed: statements held for approval
/// are refused).
fn postgres_store(
    upstreams: &BTreeMap<String, crate::auth::backend::Upstream>,
    upstream: &str,
    schema: &str,
) -> Result<(Arc<dyn ApprovalStore>, StartStore), ApprovalError> {
    use super::store::postgres::{PgStore, Timeouts};
    let upstream = upstreams.get(upstream).cloned().ok_or_else(|| {
        ApprovalError::Unsupported(format!(
            "approvals.postgres_upstream: no upstream {upstream:?}"
        ))
    })?;
    let store = Arc::new(PgStore::new(upstream, schema, Timeouts::default()));
    let check = Arc::clone(&store);
    let start = Box::new(move || {
        tokio::spawn(async move {
            if let Err(e) = check.check().await {
                tracing::error!(error = %e, "approvals: the PostgreSQL store is not available");
            }
        });
    });
    Ok((store, start))
}

/// A ticket's page, when `public_url` is known.
fn ticket_url(config: &ApprovalsConfig, id: &str) -> Option<String> {
    config.public_url.as_ref().map(|u| format!("{u}/{id}"))
}

impl Approvals {
    /// The service for `config`, with its store opened (the file store is
    /// replayed here, blocking). Tasks start with [`Approvals::start`].
    /// `upstreams` are the gateway's, for the PostgreSQL store.
    pub fn new(
        config: &crate::config::Config,
        upstreams: &BTreeMap<String, crate::auth::backend::Upstream>,
        rules: Arc<ArcSwap<crate::gateway::RuleSnapshot>>,
        metrics: Arc<crate::admin::Metrics>,
    ) -> Result<Self, ApprovalError> {
        let settings = Arc::clone(&config.approvals);
        let (store, start_store): (Arc<dyn ApprovalStore>, Box<dyn FnOnce() + Send>) =
            match &settings.store {
                ApprovalStoreConfig::File(path) => {
                    let store = super::store::file::FileStore::open_blocking(path)?;
                    let follower = store.clone();
                    (
                        Arc::new(store),
                        Box::new(move || follower.start_following()),
                    )
                }
                ApprovalStoreConfig::Postgres { upstream, schema } => {
                    postgres_store(upstreams, upstream, schema)?
                }
            };
        Ok(Self::with_store(config, store, start_store, rules, metrics))
    }

    /// The service over a given store (`start_store` runs at
    /// [`Approvals::start`]).
    pub fn with_store(
        config: &crate::config::Config,
        store: Arc<dyn ApprovalStore>,
        start_store: Box<dyn FnOnce() + Send>,
        rules: Arc<ArcSwap<crate::gateway::RuleSnapshot>>,
        metrics: Arc<crate::admin::Metrics>,
    ) -> Self {
        let roles = config
            .databases
            .iter()
            .filter_map(|(db, upstream)| {
                let u = config.upstreams.get(upstream)?;
                let mut names: BTreeSet<String> = u.roles.credentials.keys().cloned().collect();
                names.insert(u.user.clone());
                Some((db.clone(), names))
            })
            .collect();
        Self {
            store,
            config: ArcSwap::new(Arc::clone(&config.approvals)),
            instance: new_id(),
            waiters: Mutex::new(HashMap::new()),
            grants: ArcSwap::from_pointee(Vec::new()),
            roles,
            pending: Mutex::new(HashMap::new()),
            start_store: Mutex::new(Some(start_store)),
            rules,
            metrics,
            elevations: Arc::default(),
        }
    }

    /// Starts following the store (waking held statements, refreshing the
    /// grants). Needs a tokio runtime; later calls do nothing.
    pub fn start(self: &Arc<Self>) {
        let Some(start_store) = lock(&self.start_store).take() else {
            return;
        };
        start_store();
        let changes = self.store.subscribe();
        tokio::spawn(follow(Arc::downgrade(self), changes));
        let config = self.config.load();
        if let Err(e) = super::webhook::start(
            &config.webhooks,
            config.public_url.clone(),
            &self.store,
            self.instance.clone(),
        ) {
            tracing::error!(error = e, "approvals: webhooks not started");
        }
    }

    /// This instance's id (tickets name the instance holding them).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The `[approvals]` settings in force.
    pub fn config(&self) -> Arc<ApprovalsConfig> {
        self.config.load_full()
    }

    /// Puts reloaded settings in force (the store stays: changing it needs
    /// a restart).
    pub(crate) fn reload(&self, config: Arc<ApprovalsConfig>) {
        self.config.store(config);
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ApprovalStore> {
        &self.store
    }

    /// The page of ticket `id`, when the public URL is known.
    pub fn ticket_url(&self, id: &str) -> Option<String> {
        ticket_url(&self.config.load(), id)
    }

    /// Tickets, newest first: pending ones only, or all (at most `limit`).
    pub async fn tickets(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Ticket>, ApprovalError> {
        Ok(self.store.tickets(pending_only, limit).await?)
    }

    /// One ticket.
    pub async fn ticket(&self, id: &str) -> Result<Option<Ticket>, ApprovalError> {
        Ok(self.store.ticket(id).await?)
    }

    /// Counts `approver`'s vote on ticket `id` ([`Ticket::apply_vote`]:
    /// never the requester's own, only an approver group's member, once
    /// each). A held statement in this instance is released at once; one
    /// held elsewhere when that instance sees the change.
    pub async fn vote(
        &self,
        id: &str,
        approver: &Identity,
        approve: bool,
        reason: Option<String>,
    ) -> Result<Ticket, ApprovalError> {
        let validity = millis(self.config.load().ticket_validity);
        let refused: Mutex<Option<VoteError>> = Mutex::new(None);
        let vote = super::model::Vote {
            approver: approver.user.clone(),
            approve,
            reason: reason.map(|r| crate::approvals::display::bounded(&r)),
            at: now_ms(),
        };
        let groups = approver.groups.clone();
        let updated = self
            .store
            .update_ticket(id, &|t| {
                t.apply_vote(vote.clone(), &groups, validity).map_err(|e| {
                    let text = e.to_string();
                    *lock(&refused) = Some(e);
                    text
                })
            })
            .await;
        match updated {
            Ok(ticket) => {
                self.settle(&ticket);
                Ok(ticket)
            }
            Err(ApprovalStoreError::Refused(text)) => Err(match lock(&refused).take() {
                Some(e) => ApprovalError::Vote(e),
                None => ApprovalError::Store(ApprovalStoreError::Refused(text)),
            }),
            Err(ApprovalStoreError::NotFound { id, .. }) => {
                Err(ApprovalError::Vote(VoteError::NotFound(id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Grants, newest first: only active ones, or all (at most `limit`).
    pub async fn grants(
        &self,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<Grant>, ApprovalError> {
        let at = active_only.then(now_ms);
        Ok(self.store.grants(at, limit).await?)
    }

    /// Makes a grant for `duration` (at most `approvals.max_grant`). A rule
    /// grant names a `require_approval` rule in force and is made by one of
    /// its approvers; a role grant names a
    /// role of that database's upstream and is made by a member of
    /// `[approvals] approvers`. Nobody grants to themselves.
    pub async fn create_grant(
        &self,
        subject: GrantSubject,
        scope: GrantScope,
        duration: Duration,
        by: &Identity,
        reason: Option<String>,
    ) -> Result<Grant, ApprovalError> {
        let config = self.config.load();
        let snapshot = self.rules.load();
        let rules = &snapshot.policy.rules;
        if duration.is_zero() || duration > config.max_grant {
            return Err(ApprovalError::Grant(format!(
                "a grant lasts more than 0s and at most approvals.max_grant ({}s)",
                config.max_grant.as_secs()
            )));
        }
        let self_grant = match &subject {
            GrantSubject::User(u) => *u == by.user,
            GrantSubject::Group(g) => by.groups.contains(g),
        };
        if self_grant {
            return Err(ApprovalError::Grant(format!(
                "{} cannot grant to themselves",
                by.user
            )));
        }
        let approvers = self.grant_approvers(&scope, rules)?;
        if !by.groups.iter().any(|g| approvers.contains(g)) {
            return Err(ApprovalError::Grant(format!(
                "{} is in none of the approver groups for this grant",
                by.user
            )));
        }
        let now = now_ms();
        let grant = Grant {
            id: new_id(),
            subject,
            scope,
            created_by: by.user.clone(),
            created_at: now,
            expires_at: now.saturating_add(millis(duration)),
            reason: reason.map(|r| crate::approvals::display::bounded(&r)),
            revoked: None,
        };
        self.store.create_grant(&grant).await?;
        self.refresh_grants().await;
        Ok(grant)
    }

    /// The groups whose members may make (and revoke) a grant of `scope`:
    /// a rule's approvers for its statements, `[approvals] approvers` for a
    /// role of the database's upstream. Unknown rules and roles are refused.
    pub fn grant_approvers(
        &self,
        scope: &GrantScope,
        rules: &crate::policy::rules::RuleSet,
    ) -> Result<Vec<String>, ApprovalError> {
        match scope {
            GrantScope::Rule(name) => rules
                .rules
                .iter()
                .find(|r| &*r.name == name)
                .and_then(|r| r.approval.as_ref())
                .map(|a| a.approvers.clone())
                .ok_or_else(|| {
                    ApprovalError::Grant(format!("no require_approval rule is named {name:?}"))
                }),
            GrantScope::Role { database, role } => {
                let known = self
                    .roles
                    .get(database)
                    .ok_or_else(|| ApprovalError::Grant(format!("no database {database:?}")))?;
                if !known.contains(role) {
                    return Err(ApprovalError::Grant(format!(
                        "role {role:?} is not one of database {database:?}'s upstream roles"
                    )));
                }
                Ok(self.config.load().approvers.clone())
            }
        }
    }

    /// Revokes grant `id` (an ended one cannot be revoked).
    pub async fn revoke_grant(
        &self,
        id: &str,
        by: &Identity,
        reason: Option<String>,
    ) -> Result<Grant, ApprovalError> {
        let revocation = Revocation {
            by: by.user.clone(),
            at: now_ms(),
            reason: reason.map(|r| crate::approvals::display::bounded(&r)),
        };
        let grant = self
            .store
            .update_grant(id, &|g| {
                if !g.active(revocation.at) {
                    return Err(format!("grant {} has ended", g.id));
                }
                g.revoked = Some(revocation.clone());
                Ok(())
            })
            .await?;
        self.refresh_grants().await;
        Ok(grant)
    }

    /// Changes to tickets and grants, from every instance sharing the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.store.subscribe()
    }

    /// The active grant that lets `who` run rule `rule`'s statements at
    /// once, if any (from memory: no I/O).
    pub fn rule_grant(&self, who: &Identity, rule: &str) -> Option<Grant> {
        let now = now_ms();
        self.grants
            .load()
            .iter()
            .find(|g| {
                g.active(now)
                    && g.covers(&who.user, &who.groups)
                    && matches!(&g.scope, GrantScope::Rule(r) if r == rule)
            })
            .cloned()
    }

    /// The active role grant for `who` on client database `database`
    /// (newest first), with the role it elevates to, if any (from memory:
    /// no I/O).
    pub fn role_grant(&self, who: &Identity, database: &str) -> Option<(Grant, String)> {
        let now = now_ms();
        self.grants.load().iter().find_map(|g| {
            let role = super::elevation::granted_role(g, database)?;
            (g.active(now) && g.covers(&who.user, &who.groups))
                .then(|| (g.clone(), role.to_owned()))
        })
    }

    /// Session `session` logged in as `role` by `grant`: it ends at the
    /// grant's expiry (through the shared `deadlines`) or when the grant is
    /// revoked, while the guard lives.
    pub(crate) fn elevated(
        &self,
        grant: &Grant,
        role: &str,
        session: u64,
        registry: &Arc<crate::session::registry::Registry>,
        deadlines: &Arc<crate::auth::token::deadlines::Deadlines>,
    ) -> super::elevation::ElevationGuard {
        let guard = self
            .elevations
            .add(grant, role, session, registry, deadlines);
        // Revoked between the login's look-up and now: the change that
        // said so has been handled already.
        if !self
            .grants
            .load()
            .iter()
            .any(|g| g.id == grant.id && g.active(now_ms()))
        {
            self.elevations.end(
                session,
                format!(
                    "the grant {} that elevated this session to role {role} has ended",
                    grant.id
                ),
            );
        }
        guard
    }

    /// Ends the sessions elevated by `ids` (or by any grant) that have
    /// ended: re-reads the grants they came from.
    async fn settle_elevations(&self, ids: Option<&str>) {
        let live = self.elevations.grants();
        let wanted: Vec<&String> = live
            .iter()
            .filter(|g| ids.is_none_or(|id| id == *g))
            .collect();
        if wanted.is_empty() {
            return;
        }
        match self.store.grants(None, 10_000).await {
            Ok(all) => {
                for id in wanted {
                    match all.iter().find(|g| g.id == **id) {
                        Some(g) => self.elevations.settle(g),
                        None => self.elevations.forget(id),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "approvals: reading the grants failed"),
        }
    }

    /// Reads the active grants again.
    async fn refresh_grants(&self) {
        match self.store.grants(Some(now_ms()), 10_000).await {
            Ok(grants) => self.grants.store(Arc::new(grants)),
            Err(e) => tracing::warn!(error = %e, "approvals: reading the grants failed"),
        }
    }

    /// Releases the statement held for `ticket`, if it is held here and
    /// the ticket is decided or ended.
    fn settle(&self, ticket: &Ticket) {
        let release = match ticket.state {
            TicketState::Pending => return,
            TicketState::Approved if ticket.mode == ApprovalMode::Hold => Release::Run,
            TicketState::Approved | TicketState::Used => return,
            TicketState::Denied => Release::Refuse(Refusal::new(
                Sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "statement {}",
                    ticket.end_reason.as_deref().unwrap_or("denied")
                ),
            )),
            TicketState::Expired | TicketState::Withdrawn => Release::Refuse(Refusal::new(
                Sqlstate::QUERY_CANCELED,
                format!(
                    "statement held for approval: ticket {} ended: {}",
                    ticket.id,
                    ticket.end_reason.as_deref().unwrap_or("expired")
                ),
            )),
        };
        let Some(waiter) = lock(&self.waiters).remove(&ticket.id) else {
            return;
        };
        self.metrics
            .approvals
            .ended(ticket.state, waiter.since.elapsed());
        if let Some(n) = &waiter.note {
            let (outcome, approving) = match ticket.state {
                TicketState::Approved => ("approved", Some(true)),
                TicketState::Denied => ("denied", Some(false)),
                TicketState::Expired => ("expired", None),
                _ => ("withdrawn", None),
            };
            let voters = approving.map(|yes| {
                ticket
                    .votes
                    .iter()
                    .filter(|v| v.approve == yes)
                    .map(|v| v.approver.clone())
                    .collect()
            });
            note::settle(n, outcome, voters);
        }
        let _ = waiter.release.send(release);
    }

    /// Holds a statement: its ticket (made by the caller, id included) is
    /// written by a task, and the hold is released when it is decided
    /// (`note`, the statement's audit note, filled in first). Returns the
    /// decision to wait on and what the session calls when the hold ends
    /// otherwise.
    pub(crate) fn hold(
        self: &Arc<Self>,
        ticket: Ticket,
        note: Option<Note>,
    ) -> (oneshot::Receiver<Release>, OnHoldEnd) {
        let (release, decision) = oneshot::channel();
        let (tell, end) = oneshot::channel::<HoldEnd>();
        let id = ticket.id.clone();
        let ended_note = note.clone();
        let ended = OnHoldEnd::new(move |why| {
            if let Some(n) = &ended_note {
                let outcome = match why {
                    HoldEnd::Deadline => "expired",
                    _ => "withdrawn",
                };
                note::settle(n, outcome, None);
            }
            let _ = tell.send(why);
        });
        lock(&self.waiters).insert(
            id.clone(),
            Waiter {
                release,
                since: Instant::now(),
                note,
            },
        );
        self.metrics.approvals.ticket_made();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this.store.create_ticket(&ticket).await {
                tracing::error!(ticket = %id, error = %e, "approvals: the ticket could not be stored");
                if let Some(w) = lock(&this.waiters).remove(&id) {
                    if let Some(n) = &w.note {
                        note::settle(n, "store_failed", None);
                    }
                    let _ = w.release.send(Release::Refuse(store_refusal(&e)));
                }
                return;
            }
            let why = end.await.ok();
            // Still held here: the session ended the hold itself.
            let Some(waiter) = lock(&this.waiters).remove(&id) else {
                return;
            };
            let (state, reason) = match why {
                Some(HoldEnd::Cancelled) => (TicketState::Withdrawn, "cancelled by the client"),
                Some(HoldEnd::Disconnected) => (TicketState::Withdrawn, "the client disconnected"),
                Some(HoldEnd::Shutdown) => (TicketState::Withdrawn, "pgward shut down"),
                Some(HoldEnd::Deadline) => (
                    TicketState::Expired,
                    "no decision within the hold's deadline",
                ),
                None => (TicketState::Withdrawn, "the session ended"),
            };
            this.metrics.approvals.ended(state, waiter.since.elapsed());
            let ended = this
                .store
                .update_ticket(&id, &|t| {
                    if t.end(state, reason) {
                        Ok(())
                    } else {
                        Err("decided already".into())
                    }
                })
                .await;
            if let Err(e) = ended {
                tracing::debug!(ticket = %id, error = %e, "approvals: the ticket was not ended");
            }
        });
        (decision, ended)
    }

    /// Ticket mode: uses an approval of this exact statement if there is
    /// one (the statement then runs), else makes `ticket` (or names the
    /// pending one for the same binding) and refuses. Answers through the
    /// receiver once the store has.
    pub(crate) fn ticket_mode(
        self: &Arc<Self>,
        ticket: Ticket,
        note: Option<Note>,
    ) -> oneshot::Receiver<Release> {
        let this = Arc::clone(self);
        answer_later(async move { this.use_or_ask(ticket, note.as_ref()).await })
    }

    async fn use_or_ask(&self, ticket: Ticket, note: Option<&Note>) -> Release {
        let noted = |outcome, ticket_id: &str, approvers| {
            if let Some(n) = note {
                note::settle(n, outcome, approvers);
                let mut n = n.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                ticket_id.clone_into(&mut n.ticket);
            }
        };
        match self.store.consume(&ticket.binding, now_ms()).await {
            Ok(Some(used)) => {
                lock(&self.pending).remove(&ticket.binding);
                self.metrics
                    .approvals
                    .ended(TicketState::Used, Duration::ZERO);
                tracing::info!(ticket = %used.id, "approvals: a ticket-mode approval was used");
                let approvers = used
                    .votes
                    .iter()
                    .filter(|v| v.approve)
                    .map(|v| v.approver.clone())
                    .collect();
                noted("ticket_used", &used.id, Some(approvers));
                return Release::Run;
            }
            Ok(None) => {}
            Err(e) => {
                noted("store_failed", &ticket.id, None);
                return Release::Refuse(store_refusal(&e));
            }
        }
        let now = now_ms();
        let (known, open) = {
            let mut pending = lock(&self.pending);
            pending.retain(|_, p| p.expires_at > now);
            let open = pending
                .values()
                .filter(|p| p.user == ticket.requester.user)
                .count();
            (pending.get(&ticket.binding).map(|p| p.id.clone()), open)
        };
        if let Some(id) = known {
            if let Ok(Some(t)) = self.store.ticket(&id).await {
                if t.state == TicketState::Pending {
                    noted("ticket_refused", &t.id, None);
                    return Release::Refuse(self.ticket_refusal(&t, true));
                }
            }
        }
        if open >= MAX_PENDING_PER_IDENTITY {
            noted("too_many_pending", &ticket.id, None);
            return Release::Refuse(
                Refusal::new(
                    Sqlstate::INSUFFICIENT_RESOURCES,
                    format!(
                        "statement requires approval by pgward rule \"{}\", but {} has {MAX_PENDING_PER_IDENTITY} tickets pending already",
                        ticket.rule, ticket.requester.user
                    ),
                )
                .with_hint("Wait for the pending tickets to be decided or to expire."),
            );
        }
        if let Err(e) = self.store.create_ticket(&ticket).await {
            noted("store_failed", &ticket.id, None);
            return Release::Refuse(store_refusal(&e));
        }
        noted("ticket_refused", &ticket.id, None);
        self.metrics.approvals.ticket_made();
        let mut pending = lock(&self.pending);
        // Bounded by the per-identity limit, and by expiry; a last resort
        // against many identities (a forgotten binding's retry only makes
        // a second ticket).
        if pending.len() >= 100_000 {
            pending.clear();
        }
        pending.insert(
            ticket.binding.clone(),
            PendingTicket {
                id: ticket.id.clone(),
                user: ticket.requester.user.clone(),
                expires_at: ticket.expires_at,
            },
        );
        drop(pending);
        Release::Refuse(self.ticket_refusal(&ticket, false))
    }

    fn ticket_refusal(&self, ticket: &Ticket, again: bool) -> Refusal {
        let id = &ticket.id;
        let url = self
            .ticket_url(id)
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        let still = if again { " is still pending" } else { "" };
        Refusal::new(
            Sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "statement requires approval by pgward rule \"{}\": ticket {id}{url}{still}",
                ticket.rule
            ),
        )
        .with_hint(
            "Run the identical statement again (same text and parameters) once the ticket is approved.",
        )
    }

    /// A statement that runs without a person's decision (break-glass, or
    /// a grant): it runs once its ticket is stored, so no such run goes
    /// unrecorded; if the store fails, it is refused.
    pub(crate) fn record_then_run(
        self: &Arc<Self>,
        ticket: Ticket,
        note: Option<Note>,
    ) -> oneshot::Receiver<Release> {
        let this = Arc::clone(self);
        answer_later(async move {
            match this.store.create_ticket(&ticket).await {
                Ok(()) => {
                    this.metrics.approvals.ended(ticket.state, Duration::ZERO);
                    Release::Run
                }
                Err(e) => {
                    tracing::error!(ticket = %ticket.id, error = %e, "approvals: a statement that needs no decision could not be recorded");
                    if let Some(n) = &note {
                        note::settle(n, "store_failed", None);
                    }
                    Release::Refuse(store_refusal(&e))
                }
            }
        })
    }
}

/// The answer to a hold, worked out in a task of its own (phases never
/// wait on I/O); a dropped receiver (the client went away) is no error.
fn answer_later(
    release: impl std::future::Future<Output = Release> + Send + 'static,
) -> oneshot::Receiver<Release> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(release.await);
    });
    rx
}

/// The refusal when the store fails.
fn store_refusal(e: &ApprovalStoreError) -> Refusal {
    Refusal::new(
        Sqlstate::INSUFFICIENT_RESOURCES,
        format!("statement needs approval, but the approval store failed: {e}"),
    )
    .with_hint("The statement did not run. Try again, or ask an administrator.")
}

/// Follows the store's changes until the service is dropped.
async fn follow(service: std::sync::Weak<Approvals>, mut changes: broadcast::Receiver<Change>) {
    if let Some(s) = service.upgrade() {
        s.refresh_grants().await;
    }
    loop {
        let change = changes.recv().await;
        let Some(s) = service.upgrade() else {
            return;
        };
        match change {
            Ok(Change::Ticket(id)) => {
                if lock(&s.waiters).contains_key(&id) {
                    if let Ok(Some(t)) = s.store.ticket(&id).await {
                        s.settle(&t);
                    }
                }
            }
            Ok(Change::Grant(id)) => {
                s.refresh_grants().await;
                s.settle_elevations(Some(&id)).await;
            }
            // Applied by the token side (`auth::token::revocation`).
            Ok(Change::Revocation(_)) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Changes were missed: read what matters again.
                let ids: Vec<String> = lock(&s.waiters).keys().cloned().collect();
                for id in ids {
                    if let Ok(Some(t)) = s.store.ticket(&id).await {
                        s.settle(&t);
                    }
                }
                s.refresh_grants().await;
                s.settle_elevations(None).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A poisoned lock only means a panic elsewhere; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_store_postgres_builds_a_pg_store_on_the_named_upstream() {
        let text = format!(
            "[upstreams.main]\nuser = \"app\"\n[users.alice]\nscram_verifier = \"{}\"\n\
             [approvals]\nstore = \"postgres\"\npostgres_upstream = \"main\"\n",
            crate::auth::verifier::ScramVerifier::generate("pw")
        );
        let config = crate::config::Config::parse(&text, std::path::Path::new("/etc/pgward.toml"))
            .expect("valid");
        let kdf = crate::auth::scram_client::kdf_pool();
        let upstreams: BTreeMap<String, crate::auth::backend::Upstream> = config
            .upstreams
            .iter()
            .map(|(n, u)| {
                let upstream = crate::auth::backend::Upstream::new(Arc::clone(u), None, &kdf);
                (n.clone(), upstream)
            })
            .collect();
        let rules = || Arc::new(ArcSwap::from_pointee(crate::gateway::RuleSnapshot::inert()));
        // Nothing connects until the service starts.
        let built = Approvals::new(&config, &upstreams, rules(), Arc::default()).expect("built");
        assert!(format!("{:?}", built.store()).starts_with("PgStore"));
        let e = Approvals::new(&config, &BTreeMap::new(), rules(), Arc::default())
            .expect_err("no such upstream");
        assert!(e.to_string().contains("no upstream \"main\""), "{e}");
    }
}
