//! An S3 store's own API, for what the `ObjectStore` view of it lacks:
//! presigned URLs and multipart uploads that clients drive (`direct`).

use std::sync::Arc;

use object_store::aws::AmazonS3;
use object_store::path::Path;

/// An S3 store's own API, beside the `ObjectStore` view of it.
#[derive(Clone)]
pub(super) struct Direct {
    pub(super) s3: Arc<AmazonS3>,
    /// The prefix of the store's URL, which the `ObjectStore` view adds
    /// itself and signed requests must name.
    prefix: Path,
}

impl Direct {
    pub(super) fn new(s3: Arc<AmazonS3>, prefix: Path) -> Self {
        Direct { s3, prefix }
    }

    pub(super) fn full(&self, key: &Path) -> Path {
        Path::from_iter(self.prefix.parts().chain(key.parts()))
    }
}
