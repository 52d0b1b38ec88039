//! The approval stores pass one suite (`approval_store_suite`): the file
//! store (two store objects on one file) and the PostgreSQL store (two on
//! one schema of a throwaway cluster, as two pgward instances would be).

mod approval_store_suite;
mod support;

use approval_store_suite::Stores;
use pgward::approvals::store::file::FileStore;
use pgward::approvals::store::postgres::{PgStore, Timeouts};
use pgward::approvals::store::ApprovalStore;
use pgward::auth::backend::Upstream;
use std::sync::Arc;
use support::Backend;

/// The shared cluster's `appdb` upstream, as pgward would log in to it.
pub fn upstream(backend: &Backend) -> Upstream {
    let dir = backend.cluster.dir();
    let config = pgward::config::Config::parse(&backend.config("", ""), &dir.join("pgward.toml"))
        .expect("config");
    let kdf = pgward::auth::scram_client::kdf_pool();
    Upstream::new(Arc::clone(&config.upstreams[support::DB]), None, &kdf)
}

/// [`Stores`] whose objects `open` makes (each call a new one on the
/// same data).
async fn stores<F, Fut>(open: F) -> Stores
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Arc<dyn ApprovalStore>> + Send + 'static,
{
    Stores {
        a: open().await,
        b: open().await,
        reopen: Box::new(move || Box::pin(open())),
    }
}

mod file {
    use super::*;

    async fn open() -> Stores {
        let dir = tempfile::tempdir().expect("dir").keep();
        let path = dir.join("approvals.jsonl");
        stores(move || {
            let path = path.clone();
            async move {
                Arc::new(FileStore::open(&path).await.expect("open")) as Arc<dyn ApprovalStore>
            }
        })
        .await
    }

    approval_store_suite!(open);
}

mod postgres {
    use super::*;

    async fn open() -> Stores {
        let upstream = upstream(Backend::shared());
        let schema = format!("suite_{:016x}", rand::random::<u64>());
        stores(move || {
            let (upstream, schema) = (upstream.clone(), schema.clone());
            async move {
                let store = PgStore::open(upstream, &schema, Timeouts::default())
                    .await
                    .expect("open");
                Arc::new(store) as Arc<dyn ApprovalStore>
            }
        })
        .await
    }

    approval_store_suite!(open);
}
