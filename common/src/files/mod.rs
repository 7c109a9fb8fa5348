//! Tenants' files in object storage, through the `object_store` crate: the
//! local filesystem by default (under the data folder, so a dev machine
//! needs no server), any S3-compatible store, Azure or GCS by URL.
//!
//! Every key sits under its tenant's prefix and is built from parts that
//! are escaped one by one, so no id a caller sends can name another
//! tenant's object. A file's bytes are stored once per tenant under their
//! SHA-256 (`tenants/<tenant>/objects/<sha256>`), and a file is its
//! metadata (`tenants/<tenant>/files/<id>.json`), written last and only
//! if absent: an upload cut short leaves no file, two uploads of one id
//! leave one, and a retry finds the first. With S3, clients may also move
//! the bytes themselves with presigned URLs (`direct`).

mod direct;
mod s3;
pub mod sniff;
mod store;

pub use direct::{Granted, PartUrl, UploadGrant};
pub use store::{FileId, FileMeta, FileStore, StorageArgs, UploadError, UploadLimits};
