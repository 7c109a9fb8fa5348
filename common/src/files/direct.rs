//! Files a client moves itself, straight to and from an S3 store, with
//! URLs Pulse presigns: the bytes never pass through Pulse's gateway.
//!
//! An upload is granted first: Pulse starts a multipart upload at a
//! staging key and presigns one `PUT` a part. The client sends the parts,
//! then asks Pulse to complete the upload with their ETags. Only then are
//! the bytes checked like those of `POST /v1/files` (size, quota, content
//! type by magic bytes, SHA-256), by reading them back from the store, and
//! only bytes that pass become a file. What fails is removed whole.
//!
//! A grant is recorded at `tenants/<tenant>/uploads/<upload_id>.json`, so
//! a completion is found under its own tenant only and survives a restart.
//! It stays once completed, so a retried completion answers the file; a
//! refused or aborted upload's grant goes with it.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{Attribute, Attributes, ObjectStoreExt, PutMultipartOptions};
use serde::{Deserialize, Serialize};

use super::sniff::Kind;
use super::store::{
    object_key, staging_key, tenant_path, Checker, FileId, FileMeta, FileStore, UploadError,
    UploadLimits, PART_BYTES,
};

/// S3 allows at most this many parts an upload.
const MAX_PARTS: u64 = 10_000;

/// What a client is given to upload a file itself.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadGrant {
    /// Names the upload when completing or aborting it.
    pub upload_id: String,
    /// The file the upload becomes once completed.
    pub file_id: String,
    /// The size declared, in bytes: the parts must add up to it.
    pub size: u64,
    /// Every part but the last is this many bytes; the last holds the rest.
    pub part_bytes: u64,
    /// When the part URLs stop working, in ms since the epoch.
    pub expires_ms: i64,
    /// One presigned `PUT` a part, in part order.
    pub parts: Vec<PartUrl>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartUrl {
    /// From 1.
    pub part_number: u64,
    pub url: String,
}

/// How an upload request was answered.
#[derive(Debug)]
pub enum Granted {
    /// The file was stored already, by an upload with the same key.
    Stored(FileMeta),
    /// Upload the parts, then complete.
    Upload(UploadGrant),
}

/// A grant as recorded, to complete it.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    file_id: String,
    content_type: String,
    size: u64,
    parts: u64,
    multipart_id: String,
    staging: String,
}

impl FileStore {
    /// Whether clients can move files themselves, with presigned URLs.
    pub fn presigns(&self) -> bool {
        self.direct.is_some()
    }

    /// Grants `tenant` an upload of `size` bytes of `claimed` type as file
    /// `id`, valid for `ttl`, if the size fits `limits` now.
    pub async fn grant_upload(
        &self,
        tenant: &str,
        id: &FileId,
        claimed: &str,
        size: u64,
        limits: UploadLimits,
        ttl: Duration,
    ) -> Result<Granted, UploadError> {
        let direct = self.direct.as_ref().ok_or(UploadError::NotPresigned)?;
        let kind = Kind::of_content_type(claimed)
            .ok_or_else(|| UploadError::UnsupportedType(claimed.to_string()))?;
        if let Some(meta) = self.meta(tenant, id).await? {
            return Ok(Granted::Stored(meta));
        }
        if size == 0 {
            return Err(UploadError::Empty);
        }
        Checker::new(kind, self.usage(tenant).await?, limits).within(size)?;
        let part_bytes =
            (PART_BYTES as u64).max(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
        let parts = size.div_ceil(part_bytes);
        let staging = staging_key(tenant, id);
        let options = PutMultipartOptions {
            attributes: Attributes::from_iter([(
                Attribute::ContentType,
                kind.content_type().to_string(),
            )]),
            ..PutMultipartOptions::default()
        };
        let full = direct.full(&staging);
        let multipart_id = direct.s3.create_multipart_opts(&full, options).await?;
        let mut urls = Vec::with_capacity(parts as usize);
        for part_number in 1..=parts {
            let query = SignedUrlOptions::default().with_query([
                ("partNumber", part_number.to_string()),
                ("uploadId", multipart_id.clone()),
            ]);
            let url = direct
                .s3
                .signed_url_opts(Method::PUT, &full, ttl, &query)
                .await?;
            urls.push(PartUrl {
                part_number,
                url: url.to_string(),
            });
        }
        let upload_id = FileId::random();
        let pending = Pending {
            file_id: id.as_str().to_string(),
            content_type: kind.content_type().to_string(),
            size,
            parts,
            multipart_id,
            staging: staging.to_string(),
        };
        let json = Bytes::from(serde_json::to_vec(&pending).unwrap_or_default());
        self.store
            .put(&pending_key(tenant, &upload_id), json.into())
            .await?;
        Ok(Granted::Upload(UploadGrant {
            upload_id: upload_id.as_str().to_string(),
            file_id: pending.file_id,
            size,
            part_bytes,
            expires_ms: crate::clock::now_ms()
                .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            parts: urls,
        }))
    }

    /// Completes `tenant`'s upload `upload_id` from its parts' `etags`, in
    /// part order, and makes it a file if its bytes pass the checks of an
    /// upload through the gateway. Answers the file, and whether this
    /// completion made it. An upload that fails the checks is removed.
    pub async fn complete_upload(
        &self,
        tenant: &str,
        upload_id: &str,
        etags: Vec<String>,
        limits: UploadLimits,
    ) -> Result<(FileMeta, bool), UploadError> {
        let direct = self.direct.as_ref().ok_or(UploadError::NotPresigned)?;
        let (key, pending) = self.pending(tenant, upload_id).await?;
        let id = FileId::parse(&pending.file_id).ok_or(UploadError::UnknownUpload)?;
        let staging = Path::parse(&pending.staging).map_err(|_| UploadError::UnknownUpload)?;
        let full = direct.full(&staging);
        if let Some(meta) = self.meta(tenant, &id).await? {
            // Completed before (a retry), or another upload of the same key
            // made the file first: its parts are not needed.
            let _ = direct
                .s3
                .abort_multipart(&full, &pending.multipart_id)
                .await;
            return Ok((meta, false));
        }
        if etags.len() as u64 != pending.parts {
            return Err(UploadError::Parts(format!(
                "expected {} ETags, one a part in part order; got {}",
                pending.parts,
                etags.len()
            )));
        }
        let parts = etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        match direct
            .s3
            .complete_multipart(&full, &pending.multipart_id, parts)
            .await
        {
            Ok(_) => {}
            // Completed before, by a completion cut short after it.
            Err(object_store::Error::NotFound { .. })
                if self.store.head(&staging).await.is_ok() => {}
            Err(object_store::Error::NotFound { .. }) => return Err(UploadError::UnknownUpload),
            // The store still answers, so it refused what the client sent
            // (a wrong ETag, a part too small): the client's to mend, and
            // the grant stands for another try.
            Err(e) if self.store.head(&key).await.is_ok() => {
                return Err(UploadError::Parts(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
        let kind =
            Kind::of_content_type(&pending.content_type).ok_or(UploadError::UnknownUpload)?;
        let checked = self
            .read_back(tenant, &staging, kind, pending.size, limits)
            .await;
        let (size, sha256) = match checked {
            Ok(done) => done,
            Err(e) => {
                // Refused whole: neither the bytes nor the grant stay.
                if let Err(gone) = self.store.delete(&staging).await {
                    tracing::warn!(error = %gone, "cannot remove a refused upload");
                }
                self.store.delete(&key).await?;
                return Err(e);
            }
        };
        // The grant stays, so that a retried completion finds the file.
        self.commit(tenant, &id, kind, &staging, size, sha256).await
    }

    /// Gives up `tenant`'s upload `upload_id`: its parts and its grant go.
    pub async fn abort_upload(&self, tenant: &str, upload_id: &str) -> Result<(), UploadError> {
        let direct = self.direct.as_ref().ok_or(UploadError::NotPresigned)?;
        let (key, pending) = self.pending(tenant, upload_id).await?;
        let staging = Path::parse(&pending.staging).map_err(|_| UploadError::UnknownUpload)?;
        match direct
            .s3
            .abort_multipart(&direct.full(&staging), &pending.multipart_id)
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let _ = self.store.delete(&staging).await;
        self.store.delete(&key).await?;
        Ok(())
    }

    /// A URL that fetches `meta`'s bytes for `ttl` without credentials;
    /// None if the store signs none.
    pub async fn presigned_get(
        &self,
        meta: &FileMeta,
        ttl: Duration,
    ) -> Option<object_store::Result<url::Url>> {
        let direct = self.direct.as_ref()?;
        let key = direct.full(&object_key(&meta.tenant, &meta.sha256));
        let query = SignedUrlOptions::default()
            .with_query([("response-content-type", meta.content_type.as_str())]);
        Some(
            direct
                .s3
                .signed_url_opts(Method::GET, &key, ttl, &query)
                .await,
        )
    }

    async fn pending(&self, tenant: &str, upload_id: &str) -> Result<(Path, Pending), UploadError> {
        let upload_id = FileId::parse(upload_id).ok_or(UploadError::UnknownUpload)?;
        let key = pending_key(tenant, &upload_id);
        let bytes = match self.store.get(&key).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Err(UploadError::UnknownUpload),
            Err(e) => return Err(e.into()),
        };
        let pending = serde_json::from_slice(&bytes).map_err(|_| UploadError::UnknownUpload)?;
        Ok((key, pending))
    }

    /// The bytes at `staging`, streamed through the checks of an upload.
    async fn read_back(
        &self,
        tenant: &str,
        staging: &Path,
        kind: Kind,
        declared: u64,
        limits: UploadLimits,
    ) -> Result<(u64, String), UploadError> {
        let stored = self.store.head(staging).await?.size;
        if stored != declared {
            return Err(UploadError::SizeMismatch { declared, stored });
        }
        // The staged bytes are not the tenant's objects yet: the room they
        // need is what the tenant's stored files leave.
        let mut checker = Checker::new(kind, self.usage(tenant).await?, limits);
        let mut bytes = self.store.get(staging).await?.into_stream();
        while let Some(chunk) = bytes.next().await {
            checker.feed(&chunk?)?;
        }
        checker.finish()
    }
}

fn pending_key(tenant: &str, upload_id: &FileId) -> Path {
    tenant_path(tenant, "uploads").join(format!("{}.json", upload_id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_store_that_signs_nothing_grants_no_upload() {
        let store = FileStore::new(Arc::new(InMemory::new()));
        assert!(!store.presigns());
        let granted = store
            .grant_upload(
                "acme",
                &FileId::random(),
                "text/csv",
                10,
                UploadLimits {
                    max_bytes: 100,
                    tenant_quota_bytes: 100,
                },
                Duration::from_secs(60),
            )
            .await;
        assert!(
            matches!(granted, Err(UploadError::NotPresigned)),
            "{granted:?}"
        );
        let meta = FileMeta {
            file_id: FileId::random().as_str().to_string(),
            tenant: "acme".into(),
            size: 1,
            sha256: "00".into(),
            content_type: "text/csv".into(),
            created_ms: 0,
        };
        assert!(store
            .presigned_get(&meta, Duration::from_secs(60))
            .await
            .is_none());
    }

    #[test]
    fn a_grant_is_kept_under_its_tenant() {
        let id = FileId::random();
        assert_eq!(
            pending_key("acme", &id).to_string(),
            format!("tenants/acme/uploads/{}.json", id.as_str())
        );
    }
}
