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
    /// A publish found a segment no longer staged: the janitor claimed it (its files may be
    /// deleted now or already), so the writer must not keep what it wrote.
    #[error("segment {0} is no longer staged (claimed by the janitor); written again under a new name")]
    Unstaged(String),
}

impl StorageError {
    pub fn catalog(what: impl Into<String>, source: sqlx::Error) -> StorageError {
        StorageError::Catalog { what: what.into(), source }
    }
}
