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

mod file {
    use super::*;

    async fn open() -> Stores {
        let dir = tempfile::tempdir().expect("dir").keep();
        let path = dir.join("approvals.jsonl");
        let open = move || {
            let path = path.clone();
            Box::pin(async move {
                Arc::new(FileStore::open(&path).await.expect("open")) as Arc<dyn ApprovalStore>
            }) as futures::future::BoxFuture<'static, Arc<dyn ApprovalStore>>
        };
        Stores {
            a: open().await,
            b: open().await,
            reopen: Box::new(open),
        }
    }

    approval_store_suite!(open);
}

mod postgres {
    use super::*;

    async fn open() -> Stores {
        let upstream = upstream(Backend::shared());
        let schema = format!("suite_{:016x}", rand::random::<u64>());
        let open = move || {
            let (upstream, schema) = (upstream.clone(), schema.clone());
            Box::pin(async move {
                let store = PgStore::open(upstream, &schema, Timeouts::default())
                    .await
                    .expect("open");
                Arc::new(store) as Arc<dyn ApprovalStore>
            }) as futures::future::BoxFuture<'static, Arc<dyn ApprovalStore>>
        };
        Stores {
            a: open().await,
            b: open().await,
            reopen: Box::new(open),
        }
    }

    approval_store_suite!(open);
}
