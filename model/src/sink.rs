//! The trait the collector writes through (the OpenTelemetry Collector's `ConsumeLogs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::SignalBatch;

/// Why a sink cannot take more data.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A configured memory or disk bound is reached; retry after the given delay.
    #[error("overloaded: {reason}")]
    Overloaded { reason: String, retry_after_secs: u32 },
    /// The request alone touches more partitions than one flush may write: never retryable
    /// as it is (split it, or send fewer distinct hours).
    #[error("the request spans more than {max} hour partitions; split it into smaller requests")]
    TooSpread { max: usize },
}

/// Memory promised to one admitted request until its rows are in the sink (or the request
/// failed): dropping it gives the bytes back. Admission *reserves*, so concurrent requests
/// cannot all pass a check against the same free space.
#[derive(Debug)]
pub struct Reservation {
    pool: Option<Arc<AtomicUsize>>,
    bytes: usize,
}

impl Reservation {
    /// Adds `bytes` to what `pool` has reserved, atomically, if the total stays at or under
    /// `limit`; `None` (nothing reserved) otherwise.
    pub fn try_take(pool: &Arc<AtomicUsize>, bytes: usize, limit: usize) -> Option<Reservation> {
        let mut current = pool.load(Ordering::Acquire);
        loop {
            let next = current.checked_add(bytes).filter(|n| *n <= limit)?;
            match pool.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Reservation { pool: Some(pool.clone()), bytes }),
                Err(seen) => current = seen,
            }
        }
    }

    /// A reservation that holds nothing (sinks without a memory bound).
    pub fn none() -> Reservation {
        Reservation { pool: None, bytes: 0 }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

/// Where acknowledged data goes after it is durable in the WAL.
///
/// The contract with the collector: `admit` is asked *before* a request is written to the WAL
/// (so refused data is never half-accepted) and reserves room for it; the reservation is held
/// until `consume` has taken the rows. `consume` is called only with data that is already
/// durable and must not fail.
pub trait BatchSink: Send + Sync {
    /// Whether `batch` may be accepted now; room for `bytes` of it is reserved until the
    /// returned reservation is dropped.
    fn admit(&self, batch: &SignalBatch, bytes: usize) -> Result<Reservation, SinkError>;

    /// Takes durable rows. `lsn` is the WAL sequence number of the record that holds them;
    /// the sink reports flushed LSNs back through its checkpoint so the WAL can be truncated.
    fn consume(&self, lsn: u64, batches: Vec<SignalBatch>);

    /// Asks for a flush soon, e.g. because the WAL is over its disk bound: only a flush lets
    /// the WAL be truncated.
    fn request_flush(&self) {}
}

/// Memory a batch adds to the head: the logical size of each column's slice. Arrays that share
/// one buffer (zero-copy IPC reads, slices) would be counted once per column by
/// `get_array_memory_size`, making the head look full when it is not.
pub fn batch_bytes(batch: &arrow::record_batch::RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            arrow::array::Array::to_data(c.as_ref())
                .get_slice_memory_size()
                .unwrap_or_else(|_| arrow::array::Array::get_array_memory_size(c.as_ref()))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_to_the_limit_and_give_back_on_drop() {
        let pool = Arc::new(AtomicUsize::new(0));
        let a = Reservation::try_take(&pool, 600, 1000).unwrap();
        assert!(Reservation::try_take(&pool, 600, 1000).is_none(), "the second must not pass the same check");
        let b = Reservation::try_take(&pool, 400, 1000).unwrap();
        assert_eq!(pool.load(Ordering::Acquire), 1000);
        assert!(Reservation::try_take(&pool, usize::MAX, usize::MAX).is_none(), "no overflow");
        drop(a);
        assert_eq!(pool.load(Ordering::Acquire), 400);
        drop(b);
        assert_eq!(pool.load(Ordering::Acquire), 0);
        assert_eq!(Reservation::none().bytes(), 0);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let pool = Arc::new(AtomicUsize::new(0));
        let held: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..100).filter_map(|_| Reservation::try_take(&pool, 7, 1000)).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 1000 / 7);
        assert!(pool.load(Ordering::Acquire) <= 1000);
    }
}
