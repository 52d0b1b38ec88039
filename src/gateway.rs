//! The state every session shares, built once from a validated config and
//! handed to sessions explicitly (no globals).

use crate::auth::backend::Upstream;
use crate::auth::client::ScramEngines;
use crate::config::{Config, ConfigError};
use crate::policy::Policy;
use crate::session::phases::{Phase, SessionInfo};
use crate::session::registry::Registry;
use crate::tls::{self, TlsError};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Shared, read-only state plus the cancel registry.
pub struct Gateway {
    /// The validated configuration.
    pub config: Config,
    /// Upstreams with their TLS configs, by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Client-facing TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// SCRAM engines (plain and channel-bound).
    pub scram: ScramEngines,
    /// Live sessions, and the cancel keys that lead to them.
    pub registry: Arc<Registry>,
    /// Token verification, revocations and credential deadlines; swapped
    /// on reload (keys rotate without a restart).
    pub tokens: ArcSwap<crate::auth::token::TokenAuth>,
    /// Phases added after the built-in ones (see `session::stack`).
    phase_factories: std::sync::RwLock<Vec<PhaseFactory>>,
    /// Statement rules and their verdict cache; swapped whole on reload, so
    /// a session judges each message under one consistent rule set.
    pub policy: Arc<ArcSwap<Policy>>,
    /// Mask rules in force (swapped on reload).
    pub masking: Arc<ArcSwap<crate::mask::rules::MaskConfig>>,
    /// Mask maps, by upstream name.
    pub masks: BTreeMap<String, Arc<crate::mask::store::UpstreamMap>>,
    /// Code catalogs (what statements run without naming it), by upstream
    /// and database: read on first need.
    pub code: crate::upstream::code::CodeCatalogs,
    /// Rules and masking together, with their version: the one place a
    /// reload swaps (one store), so a reader that loads it once sees a rule
    /// set and a mask set that were accepted together. `policy` and
    /// `masking` above are stored from it right after, for the code that
    /// reads one of them alone (the mask maps); sessions load this once per
    /// request.
    pub rules: Arc<ArcSwap<RuleSnapshot>>,
    /// Least-privilege reports of the mapped roles.
    pub role_checks: Arc<crate::privileges::RoleChecks>,
    /// Serialises reloads, so versions are bumped one at a time.
    reload_lock: std::sync::Mutex<()>,
    /// The audit trail, when `[audit]` is on.
    pub audit: Option<Arc<crate::record::Audit>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::admin::Metrics>,
    /// Approvals: tickets, grants, held statements.
    approvals: Arc<crate::approvals::Approvals>,
    /// The file the configuration came from, once known (the admin
    /// console's RELOAD reads it).
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
}

/// The statement rules and mask rules in force, as one value.
#[derive(Debug)]
pub struct RuleSnapshot {
    /// 1 at startup, bumped by each accepted reload (logged with it).
    pub version: u64,
    /// Statement rules and their verdict caches.
    pub policy: Arc<Policy>,
    /// Mask rules.
    pub masking: Arc<crate::mask::rules::MaskConfig>,
    /// The sections of the file these came from (see
    /// [`crate::config::reload_refusal`]).
    sections: std::collections::BTreeSet<String>,
}

impl RuleSnapshot {
    /// No statement rules and no masking, version 0: for a relay core
    /// driven without a gateway (unit tests, fuzzing).
    pub(crate) fn inert() -> Self {
        let rules = crate::policy::rules::RuleSet {
            rules: Vec::new(),
            default_action: crate::policy::rules::DefaultAction::Allow,
            default_approval: None,
            search_path: Vec::new(),
            cache_size: 1,
            called_code: None,
        };
        Self {
            version: 0,
            policy: Arc::new(Policy::new(Arc::new(rules))),
            masking: Arc::default(),
            sections: std::collections::BTreeSet::new(),
        }
    }
}

/// A reload that did not happen; the rules in force stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not parse or validate, exactly as at startup.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The file is valid but changes what a reload may not change, or lacks
    /// a section the running configuration has.
    #[error("{0}")]
    Refused(String),
}

/// An accepted reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// The new rule-set version.
    pub version: u64,
    /// How many statement rules it has.
    pub rules: usize,
    /// How many mask rules it has.
    pub mask_rules: usize,
}

/// Makes a phase for each new session.
pub type PhaseFactory = Arc<dyn Fn(&SessionInfo) -> Box<dyn Phase> + Send + Sync>;

/// Failure to build the shared state (files named in the config).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// TLS material could not be loaded.
    #[error("{field}: {source}")]
    Tls {
        /// The config field.
        field: String,
        /// The error.
        source: TlsError,
    },
    /// `[tokens]` could not be prepared (a JWKS CA file).
    #[error("{0}")]
    Tokens(String),
    /// The SCRAM engine refused the certificate.
    #[error("server.tls_cert: cannot use the certificate for SCRAM channel binding: {0}")]
    ChannelBinding(String),
    /// The audit trail's key.
    #[error(transparent)]
    Audit(#[from] crate::record::AuditError),
    /// The approvals' store could not be opened.
    #[error("approvals: {0}")]
    Approvals(#[from] crate::approvals::ApprovalError),
}

impl Gateway {
    /// Loads TLS material and prepares the upstreams.
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let (tls, cert_pem) = match &config.server.tls {
            Some(files) => {
                let (server, pem) =
                    tls::server_config(files).map_err(|source| GatewayError::Tls {
                        field: "server.tls_cert".into(),
                        source,
                    })?;
                (Some(TlsAcceptor::from(server)), Some(pem))
            }
            None => (None, None),
        };
        let scram = ScramEngines::new(cert_pem.as_deref(), &config.users)
            .map_err(|e| GatewayError::ChannelBinding(e.to_string()))?;
        let mut upstreams = BTreeMap::new();
        // One key-derivation pool for every upstream's SCRAM logins.
        let kdf = crate::auth::scram_client::kdf_pool();
        for (name, u) in &config.upstreams {
            let tls = tls::client_config(u).map_err(|source| GatewayError::Tls {
                field: format!("upstreams.{name}.ca_file"),
                source,
            })?;
            upstreams.insert(name.clone(), Upstream::new(Arc::clone(u), tls, &kdf));
        }
        let snapshot = RuleSnapshot {
            version: 1,
            policy: Arc::new(Policy::new(Arc::clone(&config.policy))),
            masking: Arc::clone(&config.masking),
            sections: config.sections.clone(),
        };
        let policy = Arc::new(ArcSwap::new(Arc::clone(&snapshot.policy)));
        let masking = Arc::new(ArcSwap::new(Arc::clone(&snapshot.masking)));
        let masks = upstreams
            .iter()
            .map(|(name, u)| {
                let map = crate::mask::store::UpstreamMap::new(u.clone(), Arc::clone(&masking));
                (name.clone(), Arc::new(map))
            })
            .collect();
        let tokens = crate::auth::token::TokenAuth::new(Arc::clone(&config.tokens))
            .map_err(GatewayError::Tokens)?;
        let audit = match &config.audit {
            Some(a) => Some(Arc::new(crate::record::Audit::new(
                a.clone(),
                Arc::clone(&masking),
                Arc::clone(&policy),
            )?)),
            None => None,
        };
        let metrics = Arc::<crate::admin::Metrics>::default();
        let rules = Arc::new(ArcSwap::from_pointee(snapshot));
        let approvals = Arc::new(crate::approvals::Approvals::new(
            &config,
            &upstreams,
            Arc::clone(&rules),
            Arc::clone(&metrics),
        )?);
        tokens.revocations.use_store(Arc::clone(approvals.store()));
        Ok(Self {
            audit,
            metrics,
            approvals,
            config_path: std::sync::OnceLock::new(),
            config,
            upstreams,
            tls,
            scram,
            registry: Arc::new(Registry::default()),
            tokens: ArcSwap::from_pointee(tokens),
            phase_factories: std::sync::RwLock::new(Vec::new()),
            policy,
            masking,
            masks,
            code: crate::upstream::code::CodeCatalogs::default(),
            rules,
            role_checks: Arc::default(),
            reload_lock: std::sync::Mutex::new(()),
        })
    }

    /// The approvals service (tickets, votes, grants).
    pub fn approvals(&self) -> &Arc<crate::approvals::Approvals> {
        &self.approvals
    }

    /// Adds a phase, after the built-in ones, to every session that starts
    /// from now on.
    pub fn add_phase(&self, factory: PhaseFactory) {
        self.phase_factories
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(factory);
    }

    /// The added phases' factories, in order.
    pub(crate) fn phase_factories(&self) -> Vec<PhaseFactory> {
        self.phase_factories
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The rule-set version in force.
    pub fn rules_version(&self) -> u64 {
        self.rules.load().version
    }

    /// Reads `path` with the same parse and validation as startup and, if
    /// it changes nothing but `[policy]`, `[masking]` and `[tokens]` and
    /// keeps every section the running file has, puts the new rules and
    /// masking in force together for every session's next message, and the
    /// new token settings for every new login (live sessions keep their
    /// deadlines). Otherwise everything in force stays.
    pub fn reload(&self, path: &std::path::Path) -> Result<Reloaded, ReloadError> {
        let result = self.reload_from(path);
        let counter = match result {
            Ok(_) => &self.metrics.reloads,
            Err(_) => &self.metrics.reload_failures,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    fn reload_from(&self, path: &std::path::Path) -> Result<Reloaded, ReloadError> {
        let new = Config::load(path)?;
        // A poisoned lock only means an earlier reload panicked; the state
        // it guards (the version sequence) is still consistent.
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = self.rules.load_full();
        if let Some(why) = crate::config::reload_refusal(&self.config, &running.sections, &new) {
            return Err(ReloadError::Refused(why));
        }
        // Prepared before anything is swapped: if it fails, nothing changed.
        let tokens = self.tokens.load_full();
        let new_tokens = (tokens.config != new.tokens)
            .then(|| crate::auth::token::TokenAuth::succeed(Arc::clone(&new.tokens), &tokens))
            .transpose()
            .map_err(ReloadError::Refused)?;
        let snapshot = Arc::new(RuleSnapshot {
            version: running.version + 1,
            policy: Arc::new(Policy::new(Arc::clone(&new.policy))),
            masking: Arc::clone(&new.masking),
            sections: new.sections,
        });
        self.rules.store(Arc::clone(&snapshot));
        self.approvals.reload(Arc::clone(&new.approvals));
        self.policy.store(Arc::clone(&snapshot.policy));
        self.masking.store(Arc::clone(&snapshot.masking));
        if let Some(next) = new_tokens {
            next.revocations
                .use_store(Arc::clone(self.approvals.store()));
            let next = Arc::new(next);
            if tokio::runtime::Handle::try_current().is_ok() {
                next.start(Arc::clone(&self.registry));
            }
            // The previous service's fetchers stop when it is dropped.
            self.tokens.store(next);
        }
        // The maps resolve rules to columns: read them again; and which
        // identities are masked may have changed: check their roles again.
        for map in self.masks.values() {
            map.invalidate();
        }
        self.role_checks.invalidate();
        if let Some(audit) = &self.audit {
            audit.reloaded(snapshot.version);
        }
        Ok(Reloaded {
            version: snapshot.version,
            rules: snapshot.policy.rules.rules.len(),
            mask_rules: snapshot.masking.rules.len(),
        })
    }
}
