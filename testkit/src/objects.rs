//! Object storage of a test's own, on either backend: a directory, or a
//! prefix in the bucket of the stack's S3-compatible server (versitygw).
//! Gives the services' settings for it and lists what it holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::stack::unique;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Filesystem,
    S3,
}

pub struct Objects {
    pub backend: Backend,
    /// `PULSE_OBJECT_STORE_URL`.
    pub url: String,
    /// The directory of a filesystem store.
    dir: Option<PathBuf>,
    store: Arc<dyn ObjectStore>,
}

/// The stack's S3 server, from the environment `./dev test` sets.
struct S3Server {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

fn s3_server() -> S3Server {
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run integration tests through `./dev test`")
        })
    };
    S3Server {
        endpoint: env("PULSE_S3_ENDPOINT"),
        bucket: env("PULSE_S3_BUCKET"),
        access_key: env("PULSE_S3_ACCESS_KEY"),
        secret_key: env("PULSE_S3_SECRET_KEY"),
    }
}

impl Objects {
    /// A store of its own on `backend`; a filesystem one lives in `dir`.
    pub fn new(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Filesystem => {
                std::fs::create_dir_all(dir).expect("store directory");
                let store = LocalFileSystem::new_with_prefix(dir).expect("local store");
                Objects {
                    backend,
                    url: dir.display().to_string(),
                    dir: Some(dir.to_path_buf()),
                    store: Arc::new(store),
                }
            }
            Backend::S3 => Self::at_s3_prefix(&unique("files-")),
        }
    }

    /// The store at `prefix` in the bucket of the stack's S3 server.
    pub fn at_s3_prefix(prefix: &str) -> Self {
        let server = s3_server();
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_bucket_name(&server.bucket)
            .with_access_key_id(&server.access_key)
            .with_secret_access_key(&server.secret_key)
            .with_region("us-east-1")
            .with_allow_http(true)
            .build()
            .expect("S3 client");
        Objects {
            backend: Backend::S3,
            url: format!("s3://{}/{prefix}", server.bucket),
            dir: None,
            store: Arc::new(PrefixStore::new(s3, prefix)),
        }
    }

    /// What a service needs in its environment to use this store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PULSE_OBJECT_STORE_URL", self.url.clone())];
        if self.backend == Backend::S3 {
            let server = s3_server();
            env.extend([
                ("AWS_ENDPOINT", server.endpoint),
                ("AWS_ACCESS_KEY_ID", server.access_key),
                ("AWS_SECRET_ACCESS_KEY", server.secret_key),
                ("AWS_REGION", "us-east-1".to_string()),
                ("AWS_ALLOW_HTTP", "true".to_string()),
            ]);
        }
        env
    }

    /// Every key the store holds, sorted. A filesystem store's directory
    /// is walked itself, so that the part files of an upload cut short,
    /// which the store's listing skips, are seen too.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = match &self.dir {
            Some(dir) => files_under(dir),
            None => {
                let mut listing = self.store.list(None);
                let mut keys = Vec::new();
                while let Some(object) = listing.next().await {
                    keys.push(object.expect("listing").location.to_string());
                }
                keys
            }
        };
        keys.sort();
        keys
    }

    /// The size of the object at `key`, if there is one.
    pub async fn size(&self, key: &str) -> Option<u64> {
        self.store
            .head(&object_store::path::Path::from(key))
            .await
            .ok()
            .map(|m| m.size)
    }

    /// The store itself, to put or read objects around the services.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
}

/// `n` bytes of CSV readings, the same every run.
pub fn sample_csv(n: usize) -> Vec<u8> {
    let mut out = b"time_ms,source_id,temperature_c\n".to_vec();
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "{},device-{},{}.{}\n",
                1_700_000_000_000 + i,
                i % 97,
                15 + i % 20,
                i % 10
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

/// Every file under `root`, as sorted paths relative to it.
pub fn files_under(root: &Path) -> Vec<String> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                visit(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    visit(root, root, &mut out);
    out.sort();
    out
}
