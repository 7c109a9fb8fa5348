use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::{Path, PathPart};
use object_store::{
    GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::s3::Direct;
use super::sniff::{Kind, SNIFF_BYTES};

/// Upload parts of this size, at most this many in flight: an upload holds
/// about their product in memory, whatever the file's size.
pub(super) const PART_BYTES: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 2;

#[derive(clap::Args, Debug, Clone)]
pub struct StorageArgs {
    /// Where tenants' files are kept: a directory (created if missing), or
    /// a store's URL: `s3://bucket/prefix` (endpoint and credentials from
    /// the `AWS_*` variables), `az://container/prefix`, `gs://bucket/prefix`.
    #[arg(
        long = "object-store-url",
        env = "PULSE_OBJECT_STORE_URL",
        default_value = ".pulse/objects"
    )]
    pub object_store_url: String,
}

#[derive(Clone)]
pub struct FileStore {
    pub(super) store: Arc<dyn ObjectStore>,
    /// The directory of a local store: an upload cut short by a crash
    /// leaves its part file there, which only the filesystem lists.
    local_root: Option<std::path::PathBuf>,
    /// An S3 store's own API, for what clients send and fetch themselves
    /// with presigned URLs.
    pub(super) direct: Option<Direct>,
}

/// A file's id: 32 hex digits. Made from the client's idempotency key when
/// it sends one, so that a retried upload names the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileId(String);

impl FileId {
    pub fn random() -> Self {
        FileId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id of `tenant`'s upload under idempotency key `key`.
    pub fn for_key(tenant: &str, key: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(tenant.as_bytes())
            .chain_update([0])
            .chain_update(key.as_bytes())
            .finalize();
        FileId(hex::encode(&digest[..16]))
    }

    /// An id as a caller sends it; None if it is not one this store made.
    pub fn parse(id: &str) -> Option<Self> {
        let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        hex.then(|| FileId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What Pulse knows of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileMeta {
    pub file_id: String,
    pub tenant: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, in hex; also the file's ETag.
    pub sha256: String,
    pub content_type: String,
    pub created_ms: i64,
}

/// What one upload may take.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Largest file.
    pub max_bytes: u64,
    /// Most bytes a tenant's files may take together.
    pub tenant_quota_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the tenant's files would be over its quota of {quota} bytes")]
    OverQuota { quota: u64 },
    #[error("content type '{0}' is not one Pulse stores: send image/jpeg, image/png, image/webp, application/pdf, application/vnd.apache.parquet, application/zip, application/json or text/csv")]
    UnsupportedType(String),
    #[error("the file's bytes are not {claimed}{}", found.map(|f| format!(" (they are {f})")).unwrap_or_default())]
    Mismatch {
        claimed: &'static str,
        found: Option<&'static str>,
    },
    #[error("the body could not be read: {0}")]
    Body(String),
    #[error("this store takes no presigned uploads (it is not S3): upload through POST /v1/files")]
    NotPresigned,
    #[error("no such upload: it was completed, aborted or refused, or never granted")]
    UnknownUpload,
    #[error("the parts were refused: {0}")]
    Parts(String),
    #[error("the parts hold {stored} bytes, not the {declared} declared")]
    SizeMismatch { declared: u64, stored: u64 },
    #[error("object storage: {0}")]
    Storage(#[from] object_store::Error),
}

impl FileStore {
    /// The store `args` name. A directory is created if missing.
    pub fn open(args: &StorageArgs) -> anyhow::Result<Self> {
        let url = match url::Url::parse(&args.object_store_url) {
            Ok(url) if url.scheme() != "file" && url.scheme().len() > 1 => url,
            parsed => {
                let dir = match parsed {
                    Ok(url) => url.to_file_path().map_err(|()| {
                        anyhow::anyhow!("{}: not a local path", args.object_store_url)
                    })?,
                    Err(_) => std::path::PathBuf::from(&args.object_store_url),
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                return Ok(FileStore {
                    store: Arc::new(store),
                    local_root: Some(dir),
                    direct: None,
                });
            }
        };
        let prefix = Path::from_url_path(url.path())?;
        let (store, direct): (Arc<dyn ObjectStore>, _) = if url.scheme() == "s3" {
            let s3 = Arc::new(AmazonS3Builder::from_env().with_url(url.as_str()).build()?);
            let direct = Direct::new(s3.clone(), prefix.clone());
            (s3, Some(direct))
        } else {
            let (store, _) = object_store::parse_url_opts(
                &url,
                std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)),
            )?;
            (Arc::from(store), None)
        };
        let store = if prefix.as_ref().is_empty() {
            store
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        Ok(FileStore {
            store,
            local_root: None,
            direct,
        })
    }

    /// A store over `store` itself, e.g. one in memory.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        FileStore {
            store,
            local_root: None,
            direct: None,
        }
    }

    /// Removes what uploads of `tenant`'s file `id` left staged: an upload
    /// cut short by a crash or a cancel. Incomplete multipart uploads to S3
    /// are not listed; a bucket lifecycle rule aborts them
    /// (docs/operations.md).
    pub async fn discard_staged(&self, tenant: &str, id: &FileId) -> object_store::Result<()> {
        let staging = tenant_path(tenant, "staging");
        let mine = |name: &str| name.starts_with(&format!("{}.", id.as_str()));
        let mut listing = self.store.list(Some(&staging));
        let mut staged = Vec::new();
        while let Some(object) = listing.next().await {
            let object = object?;
            if object.location.filename().is_some_and(mine) {
                staged.push(object.location);
            }
        }
        for location in staged {
            self.store.delete(&location).await?;
        }
        if let Some(root) = &self.local_root {
            let dir = root.join(staging.as_ref());
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_name().to_str().is_some_and(mine) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(())
    }

    /// The metadata of `tenant`'s file `id`, if it has one.
    pub async fn meta(&self, tenant: &str, id: &FileId) -> object_store::Result<Option<FileMeta>> {
        let bytes = match self.store.get(&meta_key(tenant, id)).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| object_store::Error::Generic {
                store: "pulse",
                source: Box::new(e),
            })
    }

    /// `meta`'s bytes, all of them or `range`.
    pub async fn get(
        &self,
        meta: &FileMeta,
        range: Option<Range<u64>>,
    ) -> object_store::Result<GetResult> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        self.store
            .get_opts(&object_key(&meta.tenant, &meta.sha256), options)
            .await
    }

    /// Bytes `tenant`'s stored objects take.
    pub async fn usage(&self, tenant: &str) -> object_store::Result<u64> {
        let prefix = tenant_path(tenant, "objects");
        let mut listing = self.store.list(Some(&prefix));
        let mut bytes = 0;
        while let Some(object) = listing.next().await {
            bytes += object?.size;
        }
        Ok(bytes)
    }

    /// Stores `body` as `tenant`'s file `id`, checking it is `claimed` by
    /// its bytes and within `limits` as it streams through. Answers the
    /// file, and whether this upload made it (false: an earlier upload of
    /// the same id did, and its file stands).
    pub async fn upload<S, E>(
        &self,
        tenant: &str,
        id: &FileId,
        claimed: &str,
        body: S,
        limits: UploadLimits,
    ) -> Result<(FileMeta, bool), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let kind = Kind::of_content_type(claimed)
            .ok_or_else(|| UploadError::UnsupportedType(claimed.to_string()))?;
        if let Some(meta) = self.meta(tenant, id).await? {
            return Ok((meta, false));
        }
        let mut checker = Checker::new(kind, self.usage(tenant).await?, limits);
        let staging = staging_key(tenant, id);
        let mut writer = BufWriter::with_capacity(self.store.clone(), staging.clone(), PART_BYTES)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let streamed = stream_into(&mut writer, body, &mut checker).await;
        let (size, sha256) = match streamed.and_then(|()| checker.finish()) {
            Ok(done) => done,
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "cannot abort an upload cut short");
                }
                return Err(e);
            }
        };
        writer
            .shutdown()
            .await
            .map_err(|e| UploadError::Body(e.to_string()))?;
        self.commit(tenant, id, kind, &staging, size, sha256).await
    }

    /// Makes the checked bytes at `staging` `tenant`'s file `id`: moved to
    /// their content's key, then the metadata written only if absent.
    pub(super) async fn commit(
        &self,
        tenant: &str,
        id: &FileId,
        kind: Kind,
        staging: &Path,
        size: u64,
        sha256: String,
    ) -> Result<(FileMeta, bool), UploadError> {
        // Content-addressed: whatever is at the object's key already holds
        // these same bytes, so moving over it changes nothing.
        self.store
            .rename(staging, &object_key(tenant, &sha256))
            .await?;
        let meta = FileMeta {
            file_id: id.as_str().to_string(),
            tenant: tenant.to_string(),
            size,
            sha256,
            content_type: kind.content_type().to_string(),
            created_ms: crate::clock::now_ms(),
        };
        let json = Bytes::from(serde_json::to_vec(&meta).unwrap_or_default());
        let create = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&meta_key(tenant, id), json.clone().into(), create)
            .await
        {
            Ok(_) => Ok((meta, true)),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let first = self.meta(tenant, id).await?;
                Ok((first.unwrap_or(meta), false))
            }
            // A store without conditional writes: the last upload of an id wins.
            Err(object_store::Error::NotImplemented { .. }) => {
                self.store.put(&meta_key(tenant, id), json.into()).await?;
                Ok((meta, true))
            }
            Err(e) => Err(e.into()),
        }
    }
}

async fn stream_into<S, E>(
    writer: &mut BufWriter,
    mut body: S,
    checker: &mut Checker,
) -> Result<(), UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        checker.feed(&chunk)?;
        writer.put(chunk).await?;
    }
    Ok(())
}

/// What a file's bytes must pass as they stream by, wherever they go: the
/// size limit, the tenant's room, and the claimed type by the first bytes.
/// Also hashes them.
pub(super) struct Checker {
    kind: Kind,
    limits: UploadLimits,
    room: u64,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    checked: bool,
}

impl Checker {
    /// For a file of `kind`, when the tenant's stored files take `used`.
    pub(super) fn new(kind: Kind, used: u64, limits: UploadLimits) -> Self {
        Checker {
            kind,
            limits,
            room: limits.tenant_quota_bytes.saturating_sub(used),
            hasher: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(SNIFF_BYTES),
            checked: false,
        }
    }

    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.size += chunk.len() as u64;
        self.within(self.size)?;
        if !self.checked {
            let wanted = SNIFF_BYTES - self.head.len();
            self.head
                .extend_from_slice(&chunk[..chunk.len().min(wanted)]);
            if self.head.len() == SNIFF_BYTES {
                check(self.kind, &self.head)?;
                self.checked = true;
            }
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Whether a file of `size` bytes fits the limit and the tenant's room.
    pub(super) fn within(&self, size: u64) -> Result<(), UploadError> {
        if size > self.limits.max_bytes {
            return Err(UploadError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        if size > self.room {
            return Err(UploadError::OverQuota {
                quota: self.limits.tenant_quota_bytes,
            });
        }
        Ok(())
    }

    /// The file's size and SHA-256, once every byte has passed.
    pub(super) fn finish(self) -> Result<(u64, String), UploadError> {
        if self.size == 0 {
            return Err(UploadError::Empty);
        }
        if !self.checked {
            check(self.kind, &self.head)?;
        }
        Ok((self.size, hex::encode(self.hasher.finalize())))
    }
}

fn check(claimed: Kind, head: &[u8]) -> Result<(), UploadError> {
    let found = Kind::of_bytes(head);
    if found == Some(claimed) {
        return Ok(());
    }
    Err(UploadError::Mismatch {
        claimed: claimed.content_type(),
        found: found.map(Kind::content_type),
    })
}

/// `tenants/<tenant>/<area>`, the tenant escaped as one part.
pub(super) fn tenant_path(tenant: &str, area: &str) -> Path {
    Path::from_iter([
        PathPart::from("tenants"),
        PathPart::from(tenant),
        PathPart::from(area),
    ])
}

/// Where an upload of `tenant`'s file `id` is written before it is a
/// file, named for the file so that what a crash leaves is found again.
pub(super) fn staging_key(tenant: &str, id: &FileId) -> Path {
    let staged = format!("{}.{}", id.as_str(), uuid::Uuid::new_v4().simple());
    tenant_path(tenant, "staging").join(staged)
}

pub(super) fn object_key(tenant: &str, sha256: &str) -> Path {
    tenant_path(tenant, "objects").join(sha256)
}

pub(super) fn meta_key(tenant: &str, id: &FileId) -> Path {
    tenant_path(tenant, "files").join(format!("{}.json", id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    const LIMITS: UploadLimits = UploadLimits {
        max_bytes: 1 << 20,
        tenant_quota_bytes: 4 << 20,
    };

    fn body(chunks: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    }

    async fn listed(store: &FileStore) -> Vec<String> {
        let mut keys: Vec<String> = store
            .store
            .list(None)
            .map(|o| o.map(|o| o.location.to_string()).unwrap_or_default())
            .collect()
            .await;
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn a_file_is_stored_once_and_found_by_its_id() {
        let store = FileStore::new(Arc::new(InMemory::new()));
        let id = FileId::for_key("acme", "upload-1");
        let csv: &[&[u8]] = &[b"time,temperature_c\n", b"1,21.5\n"];
        let (meta, created) = store
            .upload("acme", &id, "text/csv", body(csv), LIMITS)
            .await
            .expect("stored");
        assert!(created);
        assert_eq!(meta.size, 26);
        assert_eq!(
            meta.sha256,
            hex::encode(Sha256::digest(b"time,temperature_c\n1,21.5\n"))
        );
        assert_eq!(
            store.meta("acme", &id).await.expect("read"),
            Some(meta.clone())
        );
        // The same id again: the first file stands, nothing more is stored.
        let (again, created) = store
            .upload("acme", &id, "text/csv", body(&[b"other,bytes\n"]), LIMITS)
            .await
            .expect("answered");
        assert_eq!((again, created), (meta.clone(), false));
        let object = format!("tenants/acme/objects/{}", meta.sha256);
        let file = format!("tenants/acme/files/{}.json", id.as_str());
        assert_eq!(listed(&store).await, [file, object]);
        // Another tenant's id space is its own.
        assert_eq!(store.meta("globex", &id).await.expect("read"), None);
        let range = store
            .get(&meta, Some(5..9))
            .await
            .expect("range")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&range[..], b"temp");
    }

    #[tokio::test]
    async fn bad_uploads_store_nothing() {
        let store = FileStore::new(Arc::new(InMemory::new()));
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let big = vec![b'a'; (LIMITS.max_bytes + 1) as usize];
        let cases: [(&str, Vec<&[u8]>, &str); 5] = [
            ("text/csv", vec![], "the file is empty"),
            (
                "image/jpeg",
                vec![png],
                "are not image/jpeg (they are image/png)",
            ),
            ("text/csv", vec![b"a,b\n", b"\0\0\0"], "are not text/csv"),
            (
                "application/x-msdownload",
                vec![b"MZ"],
                "not one Pulse stores",
            ),
            (
                "text/csv",
                vec![&big[..1 << 19], &big[1 << 19..]],
                "over the limit of 1048576 bytes",
            ),
        ];
        for (claimed, chunks, reason) in cases {
            let id = FileId::random();
            match store
                .upload("acme", &id, claimed, body(&chunks), LIMITS)
                .await
            {
                Err(e) => assert!(e.to_string().contains(reason), "{claimed}: {e}"),
                Ok(meta) => panic!("{claimed}: stored {meta:?}"),
            }
            assert_eq!(listed(&store).await, Vec::<String>::new(), "{claimed}");
        }
    }

    #[tokio::test]
    async fn a_tenant_over_its_quota_is_refused() {
        let store = FileStore::new(Arc::new(InMemory::new()));
        let limits = UploadLimits {
            max_bytes: 1 << 20,
            tenant_quota_bytes: 10,
        };
        let first = store
            .upload(
                "acme",
                &FileId::random(),
                "text/csv",
                body(&[b"a,b\n1,2\n"]),
                limits,
            )
            .await;
        assert!(first.is_ok(), "{first:?}");
        let second = store
            .upload(
                "acme",
                &FileId::random(),
                "text/csv",
                body(&[b"c,d\n3,4\n"]),
                limits,
            )
            .await;
        assert!(
            matches!(second, Err(UploadError::OverQuota { quota: 10 })),
            "{second:?}"
        );
        let other = store
            .upload(
                "globex",
                &FileId::random(),
                "text/csv",
                body(&[b"c,d\n3,4\n"]),
                limits,
            )
            .await;
        assert!(other.is_ok(), "another tenant has its own quota: {other:?}");
    }

    #[test]
    fn ids_are_hex_and_keys_escape_what_callers_send() {
        assert!(FileId::parse(FileId::random().as_str()).is_some());
        assert_eq!(FileId::for_key("acme", "k"), FileId::for_key("acme", "k"));
        assert_ne!(FileId::for_key("acme", "k"), FileId::for_key("globex", "k"));
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde/",
        ] {
            assert!(FileId::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            tenant_path("../globex", "objects").to_string(),
            "tenants/..%2Fglobex/objects"
        );
    }
}
