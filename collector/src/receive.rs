//! What request bodies may hold while they are received, decompressed and logged, across all
//! connections of both receivers; and how long one body may take to arrive.
//!
//! Without this, memory grew with the number of clients: each connection may send a body of up
//! to the size limit, and a body that arrives slowly (one byte a second) holds its buffer for as
//! long as the client likes. Every request takes a [`Ticket`] on the shared [`ReceiveBudget`];
//! its wire bytes are charged as they arrive ([`Metered`]) and its decompressed bytes when they
//! exist, and the ticket is held until the request is answered. A request the budget cannot
//! take is refused as retryable (`overloaded`, like a full head); a body not received within
//! the receive timeout (`ingest.receive_timeout`, 30 s) is refused (`receive_timeout`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::IngestError;

/// The budget counts whole KiB (a semaphore counts permits, not bytes).
const UNIT: usize = 1024;

/// Bytes that all requests being received, decompressed and logged may hold at once.
#[derive(Clone)]
pub struct ReceiveBudget {
    permits: Arc<Semaphore>,
    /// The budget in whole units, as the semaphore started.
    units: usize,
    bytes: usize,
    timeout: Duration,
}

impl ReceiveBudget {
    /// `bytes` for all requests at once; each body must arrive within `timeout`.
    pub fn new(bytes: usize, timeout: Duration) -> ReceiveBudget {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        ReceiveBudget { permits: Arc::new(Semaphore::new(units)), units, bytes, timeout }
    }

    /// An empty ticket for one request.
    pub fn ticket(&self) -> Ticket {
        Ticket(Arc::new(parking_lot::Mutex::new(Held { budget: self.clone(), permit: None, bytes: 0, failure: None })))
    }

    /// Bytes held by requests right now.
    pub fn in_use(&self) -> usize {
        self.units.saturating_sub(self.permits.available_permits()) * UNIT
    }
}

/// What one request holds of the budget; given back when the last clone is dropped.
#[derive(Clone)]
pub struct Ticket(Arc<parking_lot::Mutex<Held>>);

struct Held {
    budget: ReceiveBudget,
    permit: Option<OwnedSemaphorePermit>,
    /// Charged so far, in bytes.
    bytes: usize,
    /// Why receiving stopped, when it did.
    failure: Option<Failure>,
}

/// Why a [`Metered`] body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Budget,
    Timeout,
}

impl Failure {
    fn error(self, budget: &ReceiveBudget) -> IngestError {
        match self {
            Failure::Budget => IngestError::Overloaded {
                reason: format!("request bodies being received hold the whole receive budget ({} bytes)", budget.bytes),
                retry_after_secs: 1,
            },
            Failure::Timeout => IngestError::ReceiveTimeout(budget.timeout),
        }
    }
}

impl Ticket {
    /// Charges `bytes` more to this request, or refuses (retryably) when the budget has no room.
    pub fn charge(&self, bytes: usize) -> Result<(), IngestError> {
        let mut held = self.0.lock();
        let total = held.bytes.saturating_add(bytes);
        let more = total.div_ceil(UNIT) - held.bytes.div_ceil(UNIT);
        if more > 0 {
            let got = u32::try_from(more).ok().and_then(|n| held.budget.permits.clone().try_acquire_many_owned(n).ok());
            let Some(got) = got else {
                held.failure = Some(Failure::Budget);
                return Err(Failure::Budget.error(&held.budget));
            };
            match &mut held.permit {
                Some(p) => p.merge(got),
                None => held.permit = Some(got),
            }
        }
        held.bytes = total;
        Ok(())
    }

    /// Bytes charged so far.
    pub fn bytes(&self) -> usize {
        self.0.lock().bytes
    }

    /// Why receiving stopped (the budget was full or the deadline passed), as the error to
    /// answer with.
    pub fn failure(&self) -> Option<IngestError> {
        let held = self.0.lock();
        held.failure.map(|f| f.error(&held.budget))
    }

    fn fail(&self, f: Failure) -> IngestError {
        let mut held = self.0.lock();
        held.failure = Some(f);
        f.error(&held.budget)
    }

    fn timeout(&self) -> Duration {
        self.0.lock().budget.timeout
    }
}

/// A request body whose bytes are charged to a [`Ticket`] as they arrive, and which fails once
/// the budget's timeout has passed since it was created.
pub struct Metered<B> {
    inner: Pin<Box<B>>,
    ticket: Ticket,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Metered<B> {
    pub fn new(inner: B, ticket: Ticket) -> Metered<B> {
        let deadline = Box::pin(tokio::time::sleep(ticket.timeout()));
        Metered { inner: Box::pin(inner), ticket, deadline }
    }
}

impl<B> Body for Metered<B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(e) = this.ticket.charge(data.remaining())
                {
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(this.ticket.fail(Failure::Timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_share_the_budget_and_give_it_back_when_dropped() {
        let budget = ReceiveBudget::new(10 * UNIT, Duration::from_secs(1));
        let a = budget.ticket();
        a.charge(6 * UNIT).unwrap();
        let b = budget.ticket();
        assert!(matches!(b.charge(5 * UNIT), Err(IngestError::Overloaded { .. })));
        assert!(matches!(b.failure(), Some(IngestError::Overloaded { .. })));
        b.charge(4 * UNIT).unwrap();
        assert_eq!(budget.in_use(), 10 * UNIT);
        // Charges in small pieces add up in whole units, not one unit per piece.
        let c = budget.ticket();
        drop(a);
        for _ in 0..(6 * UNIT / 100) {
            c.charge(100).unwrap();
        }
        assert_eq!(c.bytes(), 6 * UNIT / 100 * 100);
        assert!(budget.in_use() <= 10 * UNIT);
        drop((b, c));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails_at_the_deadline() {
        use futures::StreamExt;
        use http_body_util::BodyExt;
        let budget = ReceiveBudget::new(1 << 20, Duration::from_millis(50));
        let ticket = budget.ticket();
        // A body that sends one chunk and then nothing, like a slow-loris client.
        let first = Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(b"0123456789")));
        let body = http_body_util::StreamBody::new(futures::stream::iter([first]).chain(futures::stream::pending()));
        let metered = Metered::new(body, ticket.clone());
        let err = metered.collect().await.expect_err("the deadline ends it");
        assert!(err.to_string().contains("not received within"), "{err}");
        assert!(matches!(ticket.failure(), Some(IngestError::ReceiveTimeout(_))));
        assert_eq!(ticket.bytes(), 10);
        drop(ticket);
        assert_eq!(budget.in_use(), 0);
    }
}
