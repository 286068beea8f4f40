//! How a query node reads the heads of the other ingesters (see
//! [`tracelight_model::peers`]): the live `ingest` nodes of the catalog's registry, asked at
//! once over HTTP, each within `cluster.peer_timeout` and `cluster.max_answer_bytes`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracelight_model::cluster::is_up;
use tracelight_model::peers::{self, HeadAnswer, HeadRequest, PeerAnswers, Peers};
use tracelight_model::telemetry::{Counter, Registry};
use tracelight_model::time::now_ns;
use tracelight_storage::Catalog;

/// How long the list of ingesters is reused before the registry is read again.
const LIST_FOR: Duration = Duration::from_secs(2);
/// Most ingesters asked by one query.
const MAX_PEERS: usize = 256;

pub struct HttpPeers {
    catalog: Catalog,
    /// This node: never asked (its head is read in process).
    node: String,
    client: reqwest::Client,
    token: Option<String>,
    timeout: Duration,
    max_bytes: usize,
    listed: Mutex<Option<(Instant, Arc<Registered>)>>,
    failures: Arc<Counter>,
}

/// The other ingesters of the registry: those that beat in the last 30 s, and those that
/// did not (killed, or cut off) with how long ago they last did.
#[derive(Debug, Default)]
struct Registered {
    live: Vec<Peer>,
    silent: Vec<(Peer, i64)>,
}

impl Registered {
    /// One sentence per silent ingester: whatever it had not flushed is not in the answer.
    fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.silent.iter().map(|(p, ns)| {
            format!(
                "ingester {} ({}) has sent no heartbeat for {} s: rows it acknowledged but had not flushed to \
                 storage are not in this answer until it is restarted on its disk",
                p.node,
                p.advertise,
                ns / 1_000_000_000
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Peer {
    node: String,
    advertise: String,
    /// `advertise` resolved when the registry was read (reused with the list, not resolved
    /// per query); why not, when it could not be.
    addr: Result<SocketAddr, String>,
}

impl HttpPeers {
    pub fn new(
        catalog: Catalog,
        node: String,
        token: Option<String>,
        timeout: Duration,
        max_bytes: usize,
        registry: &Registry,
    ) -> anyhow::Result<HttpPeers> {
        let client = reqwest::Client::builder()
            // The whole exchange (connect, answer, body) is bounded by the caller's timeout.
            .connect_timeout(timeout)
            // Redirects would take the cluster token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(HttpPeers {
            catalog,
            node,
            client,
            token,
            timeout,
            max_bytes,
            listed: Mutex::new(None),
            failures: registry.counter(
                "tracelight_peer_head_failures_total",
                "Head reads of another ingester that failed or timed out (the query answered without its unflushed rows).",
            ),
        })
    }

    /// The ingesters other than this node, from the registry (reused for [`LIST_FOR`]).
    async fn peers(&self, fresh: bool) -> Result<Arc<Registered>, String> {
        if let Some((at, list)) = &*self.listed.lock()
            && at.elapsed() < LIST_FOR
            && !fresh
        {
            return Ok(list.clone());
        }
        let now = now_ns();
        let nodes = self.catalog.nodes().await.map_err(|e| e.to_string())?;
        let mut list = Registered::default();
        for n in nodes.into_iter().filter(|n| n.node != self.node) {
            if !n.roles.split(',').any(|r| r == "ingest" || r == "all") {
                continue;
            }
            if !is_up(now, n.heartbeat_ns) {
                let peer = Peer { node: n.node, advertise: n.advertise, addr: Err("silent".into()) };
                list.silent.push((peer, now.saturating_sub(n.heartbeat_ns)));
            } else if list.live.len() < MAX_PEERS {
                let addr = resolve(&n.advertise).await;
                list.live.push(Peer { node: n.node, advertise: n.advertise, addr });
            }
        }
        let list = Arc::new(list);
        *self.listed.lock() = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    async fn ask(
        &self,
        peer: &Peer,
        body: &[u8],
        request: &HeadRequest,
        budget: &AtomicUsize,
    ) -> Result<HeadAnswer, String> {
        // By address, so the request names the address it reached, as the other node's host
        // check expects of a caller without a browser.
        let addr = peer.addr.clone()?;
        let mut req = self
            .client
            .post(format!("http://{addr}{}", peers::HEAD_PATH))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut res = req.send().await.map_err(|e| chain(&e))?;
        let status = res.status();
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (node, overlap) = (header(peers::NODE_HEADER), header(peers::OVERLAP_HEADER));
        if !status.is_success() {
            // The first chunk says why; the rest is not read.
            let first = res.chunk().await.ok().flatten().unwrap_or_default();
            let why: String = String::from_utf8_lossy(&first[..first.len().min(300)]).into_owned();
            return Err(format!("answered {status}: {why}"));
        }
        if node.as_deref() != Some(peer.node.as_str()) {
            // Another node now listens there (a restart under a new name): its overlap would
            // be applied to the wrong segments.
            return Err(format!("the node at {addr} is {node:?}, not {}", peer.node));
        }
        let overlap_from_lsn: u64 = overlap.and_then(|v| v.parse().ok()).ok_or("an answer without its overlap LSN")?;
        // The answers of one query share `cluster.max_answer_bytes`.
        let too_much = || format!("the answers add up to more than cluster.max_answer_bytes ({})", self.max_bytes);
        let take =
            |n: usize| budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(n)).is_ok();
        if res.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(too_much());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            if !take(chunk.len()) {
                return Err(too_much());
            }
            bytes.extend_from_slice(&chunk);
        }
        let schema = request.answer_schema()?;
        let batches = peers::decode(&bytes, &schema)?;
        request.check_answer(&batches)?;
        Ok(HeadAnswer { node: peer.node.clone(), overlap_from_lsn, batches })
    }
}

/// The first address `advertise` (`host:port`) resolves to.
async fn resolve(advertise: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(advertise)
        .await
        .map_err(|e| format!("cannot resolve {advertise}: {e}"))?
        .next()
        .ok_or_else(|| format!("{advertise} resolves to no address"))
}

/// An error with its causes (reqwest's own message leaves out why a connection failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[async_trait::async_trait]
impl Peers for HttpPeers {
    async fn heads(&self, request: &HeadRequest) -> PeerAnswers {
        let list = match self.peers(false).await {
            Ok(list) => list,
            Err(e) => {
                self.failures.inc();
                return PeerAnswers {
                    answers: Vec::new(),
                    missing: vec![format!(
                        "cannot list the ingesters ({e}): rows not yet flushed to storage are not in this answer"
                    )],
                };
            }
        };
        if list.live.is_empty() {
            return PeerAnswers { answers: Vec::new(), missing: list.warnings().collect() };
        }
        let body = match serde_json::to_vec(request) {
            Ok(b) => b,
            Err(e) => {
                return PeerAnswers { answers: Vec::new(), missing: vec![format!("cannot ask the ingesters: {e}")] };
            }
        };
        let budget = AtomicUsize::new(self.max_bytes);
        let (mut answers, mut failed) = self.ask_all(&list.live, &body, request, &budget).await;
        let mut list = list;
        if !failed.is_empty() {
            // The list may be up to 2 s old. A node that left the registry stopped cleanly
            // after its final flush: nothing of it is missing. One that restarted elsewhere
            // (a new address) or joined since is asked now.
            // One gone silent since is reported as such, below.
            if let Ok(fresh) = self.peers(true).await {
                failed.retain(|(p, _)| fresh.live.contains(p));
                let again: Vec<Peer> = fresh.live.iter().filter(|p| !list.live.contains(p)).cloned().collect();
                let (more, more_failed) = self.ask_all(&again, &body, request, &budget).await;
                answers.extend(more);
                failed.extend(more_failed);
                list = fresh;
            }
        }
        let mut out = PeerAnswers { answers, missing: list.warnings().collect() };
        for (p, e) in failed {
            self.failures.inc();
            tracing::warn!(node = %p.node, advertise = %p.advertise, error = %e, "cannot read another ingester's head");
            out.missing.push(format!(
                "ingester {} ({}) did not answer ({e}): its rows not yet flushed to storage are not in this answer",
                p.node, p.advertise
            ));
        }
        out
    }
}

impl HttpPeers {
    /// Asks every node of `list` at once, each within the timeout.
    async fn ask_all(
        &self,
        list: &[Peer],
        body: &[u8],
        request: &HeadRequest,
        budget: &AtomicUsize,
    ) -> (Vec<HeadAnswer>, Vec<(Peer, String)>) {
        let timeout = self.timeout;
        let asks = list.iter().map(|p| async move {
            let answer = tokio::time::timeout(timeout, self.ask(p, body, request, budget))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?} (cluster.peer_timeout)")));
            (p, answer)
        });
        let (mut answers, mut failed) = (Vec::new(), Vec::new());
        for (p, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(a) => answers.push(a),
                Err(e) => failed.push((p.clone(), e)),
            }
        }
        (answers, failed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, Ordering};

    use arrow::array::UInt64Array;
    use arrow::record_batch::RecordBatch;
    use axum::http::HeaderMap;
    use tracelight_model::peers::{HeadKind, counts_schema, hours_schema};
    use tracelight_model::{Signal, Tenant};
    use tracelight_storage::NodeInfo;

    use super::*;

    /// What the fake node does with a request.
    #[derive(Clone, Copy, PartialEq)]
    #[repr(u8)]
    enum Does {
        Answers,
        NamesAnotherNode,
        SendsTooMuch,
        SendsGarbage,
        AnswersAnotherSchema,
        AnswersMoreThanAsked,
        Fails,
        Stalls,
    }

    async fn fake_node(does: Arc<AtomicU8>) -> SocketAddr {
        let handler = move |headers: HeaderMap| {
            let does = does.load(Ordering::SeqCst);
            async move {
                assert_eq!(headers.get("authorization").unwrap(), "Bearer cluster-secret-123");
                let counts = |schema, n: u64| {
                    let values = UInt64Array::from((1..=n).collect::<Vec<_>>());
                    let b = RecordBatch::try_new(counts_schema(), vec![Arc::new(values)]).unwrap();
                    peers::encode(&schema, &[b]).unwrap_or_else(|_| vec![1, 2, 3])
                };
                let (node, body, status) = match does {
                    d if d == Does::Answers as u8 => ("evil", counts(counts_schema(), 2), 200),
                    d if d == Does::NamesAnotherNode as u8 => ("other", counts(counts_schema(), 2), 200),
                    d if d == Does::SendsTooMuch as u8 => ("evil", vec![0u8; 2 << 20], 200),
                    d if d == Does::SendsGarbage as u8 => ("evil", b"\xff\xff\xff\xff\x08\0\0\0garbage!".to_vec(), 200),
                    d if d == Does::AnswersAnotherSchema as u8 => ("evil", counts(hours_schema(), 2), 200),
                    d if d == Does::AnswersMoreThanAsked as u8 => ("evil", counts(counts_schema(), 3), 200),
                    d if d == Does::Fails as u8 => ("evil", b"broken".to_vec(), 500),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        ("evil", Vec::new(), 200)
                    }
                };
                axum::response::Response::builder()
                    .status(status)
                    .header(peers::NODE_HEADER, node)
                    .header(peers::OVERLAP_HEADER, "7")
                    .body(axum::body::Body::from(body))
                    .unwrap()
            }
        };
        let app = axum::Router::new().route(peers::HEAD_PATH, axum::routing::post(handler));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broken_or_hostile_nodes_are_reported_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::connect(&format!("sqlite://{}/c.db", dir.path().display())).await.unwrap();
        catalog.migrate().await.unwrap();
        let does = Arc::new(AtomicU8::new(0));
        let addr = fake_node(does.clone()).await;
        let now = now_ns();
        // A silent ingester (its last heartbeat a minute ago) is reported, not asked.
        let nodes = [
            ("evil", "ingest", now),
            ("q1", "query", now),
            ("querier", "query,compact", now),
            ("ghost", "all", now - 60_000_000_000),
        ];
        for (node, roles, beat) in nodes {
            let info = NodeInfo {
                node: node.into(),
                roles: roles.into(),
                advertise: addr.to_string(),
                version: "test".into(),
                started_at_ns: now,
                heartbeat_ns: beat,
            };
            catalog.heartbeat(&info).await.unwrap();
        }
        // A histogram request: its answer is one column of counts.
        let kind = HeadKind::Histogram { search: Default::default(), step_ns: 1, buckets: 2 };
        let request = HeadRequest::new(&Tenant::default_tenant(), Signal::Logs, 0, 2, kind);
        let registry = Registry::new();
        for (case, expect) in [
            (Does::Answers, ""),
            (Does::NamesAnotherNode, "is Some(\"other\"), not evil"),
            (Does::SendsTooMuch, "more than cluster.max_answer_bytes"),
            (Does::SendsGarbage, "Arrow IPC"),
            (Does::AnswersAnotherSchema, "schema"),
            (Does::AnswersMoreThanAsked, "3 counts in 1 batches, 2 buckets asked for"),
            (Does::Fails, "answered 500"),
            (Does::Stalls, "no answer within"),
        ] {
            does.store(case as u8, Ordering::SeqCst);
            // A new client per case: the list of nodes is reused for 2 s.
            let peers = HttpPeers::new(
                catalog.clone(),
                "q1".into(),
                Some("cluster-secret-123".into()),
                Duration::from_millis(500),
                1 << 20,
                &registry,
            )
            .unwrap();
            let started = Instant::now();
            let mut got = peers.heads(&request).await;
            let ghost =
                got.missing.iter().position(|m| m.contains("ingester ghost") && m.contains("no heartbeat for 60 s"));
            got.missing.remove(ghost.unwrap_or_else(|| panic!("the silent node is reported: {:?}", got.missing)));
            assert!(started.elapsed() < Duration::from_secs(2), "bounded by the timeout");
            if expect.is_empty() {
                assert!(got.missing.is_empty(), "{:?}", got.missing);
                assert_eq!(got.answers.len(), 1, "only the ingest node is asked");
                assert_eq!((got.answers[0].node.as_str(), got.answers[0].overlap_from_lsn), ("evil", 7));
                assert_eq!(got.rows(), 2);
            } else {
                assert!(got.answers.is_empty());
                assert_eq!(got.missing.len(), 1);
                assert!(
                    got.missing[0].contains(expect) && got.missing[0].contains("ingester evil"),
                    "{:?}",
                    got.missing
                );
            }
        }
    }
}
