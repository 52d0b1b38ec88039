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
    /// Phases added after the built-in ones (see `session::stack`).
    phase_factories: std::sync::RwLock<Vec<PhaseFactory>>,
    /// Statement rules and their verdict cache; swapped whole on reload, so
    /// a session judges each message under one consistent rule set.
    pub policy: Arc<ArcSwap<Policy>>,
    /// Mask rules in force (swapped on reload).
    pub masking: Arc<ArcSwap<crate::mask::rules::MaskConfig>>,
    /// Mask maps, by upstream name.
    pub masks: BTreeMap<String, Arc<crate::mask::store::UpstreamMap>>,
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
    /// The SCRAM engine refused the certificate.
    #[error("server.tls_cert: cannot use the certificate for SCRAM channel binding: {0}")]
    ChannelBinding(String),
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
        let scram = ScramEngines::new(cert_pem.as_deref())
            .map_err(|e| GatewayError::ChannelBinding(e.to_string()))?;
        let mut upstreams = BTreeMap::new();
        for (name, u) in &config.upstreams {
            let tls = tls::client_config(u).map_err(|source| GatewayError::Tls {
                field: format!("upstreams.{name}.ca_file"),
                source,
            })?;
            upstreams.insert(
                name.clone(),
                Upstream {
                    config: Arc::clone(u),
                    tls,
                    salted: Default::default(),
                },
            );
        }
        let policy = Arc::new(ArcSwap::from_pointee(Policy::new(Arc::clone(
            &config.policy,
        ))));
        let masking = Arc::new(ArcSwap::new(Arc::clone(&config.masking)));
        let masks = upstreams
            .iter()
            .map(|(name, u)| {
                let map = crate::mask::store::UpstreamMap::new(u.clone(), Arc::clone(&masking));
                (name.clone(), Arc::new(map))
            })
            .collect();
        Ok(Self {
            config,
            upstreams,
            tls,
            scram,
            registry: Arc::new(Registry::default()),
            phase_factories: std::sync::RwLock::new(Vec::new()),
            policy,
            masking,
            masks,
        })
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

    /// Re-reads `[policy]` and `[masking]` from `path` and puts them in
    /// force for every session's next message. On error the rules in force
    /// stay.
    pub fn reload_policy(&self, path: &std::path::Path) -> Result<usize, ConfigError> {
        let (rules, masking) = crate::config::load_policy(path)?;
        let count = rules.rules.len();
        self.policy.store(Arc::new(Policy::new(Arc::new(rules))));
        self.masking.store(Arc::new(masking));
        // The maps resolve rules to columns: read them again.
        for map in self.masks.values() {
            map.invalidate();
        }
        Ok(count)
    }
}
