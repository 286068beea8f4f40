//! Leader jobs: work that must run on one node at a time (compaction planning, retention, the
//! janitor, SLO evaluation, alert delivery). On PostgreSQL a node leads a job while it holds a
//! session-level advisory lock (`pg_try_advisory_lock`) on a connection of its own; the lock
//! goes with the connection, so a node that dies (even by kill -9: the kernel closes its
//! socket) lets another take over at its next try, within [`RETRY_EVERY`]. On SQLite the one
//! process is always the leader.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::watch;

use super::{Catalog, Pool};

/// How often a follower tries to take the lock, and a leader checks that its connection (and
/// so its lock) is still there.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// [`RETRY_EVERY`], for tests that wait for a takeover.
pub fn leader_retry() -> Duration {
    RETRY_EVERY
}

/// Whether this node leads a job now.
#[derive(Clone)]
pub struct Leadership {
    job: &'static str,
    rx: watch::Receiver<bool>,
}

impl Leadership {
    /// A leadership that is always held (one process, or a test).
    pub fn always(job: &'static str) -> Leadership {
        Leadership::fixed(job, true)
    }

    /// A leadership never held: a node without the job's role does not campaign (it would
    /// hold the lock and keep the nodes that do the job from running it).
    pub fn never(job: &'static str) -> Leadership {
        Leadership::fixed(job, false)
    }

    fn fixed(job: &'static str, leading: bool) -> Leadership {
        let (tx, rx) = watch::channel(leading);
        // The sender lives as long as the process: the value never changes.
        std::mem::forget(tx);
        Leadership { job, rx }
    }

    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    pub fn job(&self) -> &'static str {
        self.job
    }
}

/// The advisory lock key of a job: a stable hash of its name, in a namespace of ours.
pub fn lock_key(job: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "tracelight-leader:".bytes().chain(job.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

impl Catalog {
    /// Campaigns for `job` until `shutdown` turns true; the answer says whether this node
    /// leads it now. Leadership changes are logged.
    pub fn campaign(&self, job: &'static str, shutdown: watch::Receiver<bool>) -> Leadership {
        let opts = match &self.pool {
            Pool::Sqlite(_) => return Leadership::always(job),
            Pool::Postgres(pool) => pool.connect_options().as_ref().clone(),
        };
        let (tx, rx) = watch::channel(false);
        tokio::spawn(hold(job, opts, tx, shutdown));
        Leadership { job, rx }
    }
}

async fn hold(
    job: &'static str,
    opts: sqlx::postgres::PgConnectOptions,
    tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = lock_key(job);
    let mut conn: Option<PgConnection> = None;
    let set = |leading: bool| {
        if *tx.borrow() != leading {
            tracing::info!(job, leading, "leadership changed");
            let _ = tx.send(leading);
        }
    };
    loop {
        if conn.is_none() {
            let connect = tokio::time::timeout(RETRY_EVERY, PgConnection::connect_with(&opts));
            let connected = tokio::select! {
                r = connect => r,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            match connected {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => tracing::debug!(job, error = %e, "cannot reach the catalog for the leader lock"),
                Err(_) => tracing::debug!(job, "the catalog did not answer within 5 s (leader lock)"),
            }
        }
        if let Some(c) = conn.as_mut() {
            let leading = *tx.borrow();
            // A leader checks that its session, and so its lock, is alive; a follower tries
            // to take the lock.
            let step = async {
                if leading {
                    sqlx::query("SELECT 1").execute(&mut *c).await.map(|_| true)
                } else {
                    sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *c).await
                }
            };
            let result = tokio::select! {
                r = tokio::time::timeout(RETRY_EVERY, step) => r,
                _ = shutdown.wait_for(|s| *s) => break,
            };
            match result {
                Ok(Ok(now)) => set(now),
                Ok(Err(e)) => {
                    if leading {
                        tracing::warn!(job, error = %e, "lost the catalog session that holds the leader lock; stepping down");
                    }
                    conn = None;
                    set(false);
                }
                Err(_) => {
                    if leading {
                        tracing::warn!(job, "the leader lock's session did not answer within 5 s; stepping down");
                    }
                    conn = None;
                    set(false);
                }
            }
        } else {
            set(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    let _ = tx.send(false);
    if let Some(c) = conn {
        // Closing the session releases the lock at once for the next leader.
        let _ = c.close().await;
    }
}
