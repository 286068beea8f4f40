//! Storage errors: named by what failed, not by the library that failed.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Config(String),
    #[error("catalog: {what} failed: {source}")]
    Catalog { what: String, source: sqlx::Error },
    #[error("segment write failed: {0}")]
    SegmentWrite(String),
    #[error("segment read failed: {0}")]
    SegmentRead(String),
    #[error("no such object: {0}")]
    NotFound(String),
    /// Object storage did not answer a read (unreachable, timed out, refused): the object is
    /// likely fine, the bucket is not there right now.
    #[error("object storage could not be read: {0}")]
    Unreachable(String),
    /// A publish found a segment no longer staged: the janitor claimed it (its files may be
    /// deleted now or already), so the writer must not keep what it wrote.
    #[error("segment {0} is no longer staged (claimed by the janitor); written again under a new name")]
    Unstaged(String),
}

impl StorageError {
    pub fn catalog(what: impl Into<String>, source: sqlx::Error) -> StorageError {
        StorageError::Catalog { what: what.into(), source }
    }

    /// A failed read of segment `rel`: [`StorageError::Unreachable`] when an object store
    /// outage (see [`is_outage`]) caused it, anywhere in `e`'s chain (parquet wraps
    /// them), a plain read failure otherwise.
    pub fn read(rel: &str, e: &(dyn std::error::Error + 'static)) -> StorageError {
        let mut cur = Some(e);
        while let Some(err) = cur {
            let inner = match err.downcast_ref() {
                Some(parquet::errors::ParquetError::External(inner)) => {
                    Some(inner.as_ref() as &(dyn std::error::Error + 'static))
                }
                _ => None,
            };
            for err in std::iter::once(err).chain(inner) {
                if let Some(s) = err.downcast_ref::<object_store::Error>() {
                    if is_outage(s) {
                        return StorageError::Unreachable(format!("{rel}: {s}"));
                    }
                    return StorageError::SegmentRead(format!("{rel}: {e}"));
                }
                // A chunk of the disk cache that could not be fetched.
                if let Some(StorageError::Unreachable(why)) = err.downcast_ref::<StorageError>() {
                    return StorageError::Unreachable(why.clone());
                }
            }
            cur = err.source();
        }
        StorageError::SegmentRead(format!("{rel}: {e}"))
    }
}

/// Whether an object store error means the store did not answer (connection refused or cut,
/// timeouts, server errors once retries ran out: object_store reports all of these as
/// `Generic`), not that it answered no (a missing object, denied access, bad credentials).
pub fn is_outage(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
}
