//! Delivering queued notifications: Slack, Discord, signed webhooks (Standard Webhooks) and
//! Alertmanager, from the catalog's outbox, in order per alert and channel, retried with
//! exponential backoff and jitter, each exactly once (marked delivered only after a 2xx).
//!
//! SSRF guard: a destination is refused when its host is, or resolves to, a loopback, private,
//! link-local (cloud metadata included), unique-local, unspecified, multicast or shared
//! address, unless an `allow_destinations` CIDR covers it. The check runs on the addresses
//! the connection will use (a resolver of our own), literal IPs in any spelling are parsed by
//! the URL parser first (`0x7f000001` and `2130706433` are 127.0.0.1), and redirects are
//! not followed. URLs and secrets never reach logs or pages.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;
use tracelight_model::slo::{Notification, SloStore};
use tracelight_model::telemetry::{Counter, Gauge, Registry};

use crate::kinds::ChannelKind;

/// A channel with its destination; Debug never shows the URL or the secret.
#[derive(Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub url: String,
    pub secret: Option<String>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("name", &self.name).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// An IP network, e.g. `127.0.0.1/32` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s.split_once('/').unwrap_or((s, ""));
        let net: IpAddr = ip.trim().parse().map_err(|_| format!("{s:?} is not a CIDR like 10.1.0.0/16"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() { max } else { prefix.parse().map_err(|_| format!("{s:?}: bad prefix"))? };
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> u128 {
            match ip {
                IpAddr::V4(v) => u32::from(v) as u128,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        let width = if self.net.is_ipv4() { 32 } else { 128 };
        if self.net.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let shift = width - self.prefix as u32;
        bits(self.net) >> shift == bits(ip) >> shift
    }
}

/// Whether connecting to `ip` could reach something inside: loopback, private, link-local
/// (169.254.169.254 among them), CGNAT, unspecified, broadcast, multicast, documentation,
/// unique-local and IPv4-mapped forms of those.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return internal(IpAddr::V4(v4));
            }
            let s = v.segments();
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0xdb8)
                || (s[0] == 0x64 && s[1] == 0xff9b)
        }
    }
}

/// Refuses `ip` unless it is public or an allowed CIDR covers it.
pub fn check_ip(ip: IpAddr, allow: &[Cidr]) -> Result<(), String> {
    if internal(ip) && !allow.iter().any(|c| c.contains(ip)) {
        return Err(format!("refused: {ip} is an internal address (add it to alerts.allow_destinations to allow it)"));
    }
    Ok(())
}

/// Checks a URL before any connection: scheme, and a literal IP host in any spelling.
pub fn check_url(url: &str, allow: &[Cidr]) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("only http and https destinations".into());
    }
    match u.host() {
        Some(url::Host::Ipv4(v)) => check_ip(IpAddr::V4(v), allow)?,
        Some(url::Host::Ipv6(v)) => check_ip(IpAddr::V6(v), allow)?,
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
            check_ip(IpAddr::from([127, 0, 0, 1]), allow)?
        }
        Some(url::Host::Domain(_)) => {}
        None => return Err("the URL has no host".into()),
    }
    Ok(u)
}

/// Resolves names and keeps only the addresses the guard allows: the check is on the
/// addresses the connection uses, so DNS rebinding cannot slip past it.
struct GuardedResolver {
    allow: Arc<Vec<Cidr>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = allowed_addrs(&host, addrs, &allow)
                .map_err(|msg| std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg))?;
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// The addresses of `host` a connection may use: a name that resolves to internal and public
/// addresses alike connects only to the public ones (or the allowed ones).
fn allowed_addrs(host: &str, addrs: Vec<SocketAddr>, allow: &[Cidr]) -> Result<Vec<SocketAddr>, String> {
    let ok: Vec<SocketAddr> = addrs.into_iter().filter(|a| check_ip(a.ip(), allow).is_ok()).collect();
    if ok.is_empty() {
        return Err(format!("refused: {host} resolves only to internal addresses"));
    }
    Ok(ok)
}

/// The HTTP client of every delivery: guarded resolver, no redirects, a timeout.
pub fn client(allow: Vec<Cidr>) -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow: Arc::new(allow) }))
        .redirect(reqwest::redirect::Policy::none())
        // No proxy, whatever HTTPS_PROXY says: through a proxy the guard above would check
        // the proxy's address instead of the destination's.
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("tracelight/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Standard Webhooks: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")); the key is
/// the base64 after `whsec_`, or the secret's bytes when it has no such prefix.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Seconds before retry `attempts` (1, 2, 4, … capped at 10 minutes), times a jitter in
/// [0.5, 1.5) drawn from the notification's identity, so retries of many alerts spread out.
pub fn backoff_ns(id: &str, attempts: u32) -> i64 {
    let base = 1i64 << attempts.min(10).saturating_sub(1);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain(attempts.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let jitter = 0.5 + (h % 1000) as f64 / 1000.0;
    ((base.min(600) as f64) * jitter * 1e9) as i64
}

pub struct Notifier {
    channels: Vec<Channel>,
    allow: Vec<Cidr>,
    client: reqwest::Client,
    store: Arc<dyn SloStore>,
    pause_after_delivery: Option<Duration>,
    delivered: Arc<Counter>,
    failed: Arc<Counter>,
    pending: Arc<Gauge>,
}

impl Notifier {
    pub fn new(channels: Vec<Channel>, allow: Vec<Cidr>, store: Arc<dyn SloStore>, registry: &Registry) -> Notifier {
        Notifier {
            client: client(allow.clone()),
            channels,
            allow,
            store,
            pause_after_delivery: None,
            delivered: registry
                .counter("tracelight_notifications_delivered_total", "Alert messages a receiver answered with 2xx."),
            failed: registry.counter(
                "tracelight_notifications_failed_total",
                "Attempts to deliver an alert message that failed and will be retried.",
            ),
            pending: registry.gauge(
                "tracelight_notifications_pending",
                "Alert messages in the outbox not yet delivered, after the last send round (counted up to 500).",
            ),
        }
    }

    /// A fault hook for the crash tests: waits this long between a receiver's 2xx and the
    /// delivered mark, so a SIGKILL can land there.
    pub fn with_pause_after_delivery(mut self, pause: Option<Duration>) -> Notifier {
        self.pause_after_delivery = pause;
        self
    }

    /// Sends what is due at `now_ns`; returns how many were delivered. The first undelivered
    /// message of an alert on a channel holds back the later ones (firing before resolved).
    pub async fn deliver_due(&self, now_ns: i64) -> usize {
        let pending = match self.store.pending_notifications(500).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notification outbox");
                return 0;
            }
        };
        let queued = pending.len();
        let mut held = std::collections::HashSet::new();
        let mut delivered = 0;
        for n in pending {
            let lane = (n.alert_key.clone(), n.channel.clone());
            if held.contains(&lane) {
                continue;
            }
            held.insert(lane);
            if n.next_attempt_ns > now_ns {
                continue;
            }
            let result = match self.channels.iter().find(|c| c.name == n.channel) {
                Some(ch) => self.send(ch, &n, now_ns).await,
                None => Err(format!("channel {:?} is no longer configured", n.channel)),
            };
            let outcome = match result {
                Ok(()) => {
                    delivered += 1;
                    self.delivered.inc();
                    if let Some(pause) = self.pause_after_delivery {
                        tokio::time::sleep(pause).await;
                    }
                    self.store.mark_delivered(&n.id, now_ns).await
                }
                Err(e) => {
                    self.failed.inc();
                    let attempts = n.attempts + 1;
                    let next = now_ns + backoff_ns(&n.id, attempts);
                    tracing::warn!(channel = %n.channel, alert = %n.alert_key, attempts, error = %e, "notification not delivered; will retry");
                    self.store.mark_failed(&n.id, attempts, next, &e).await
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "cannot record a delivery");
            }
        }
        self.pending.set(i64::try_from(queued - delivered).unwrap_or(i64::MAX));
        delivered
    }

    async fn send(&self, ch: &Channel, n: &Notification, now_ns: i64) -> Result<(), String> {
        let mut url = check_url(&ch.url, &self.allow)?;
        if ch.kind == ChannelKind::Alertmanager {
            let base = url.path().trim_end_matches('/').to_string();
            url.set_path(&format!("{base}/api/v2/alerts"));
        }
        let mut req = self.client.post(url).header("content-type", "application/json");
        if ch.kind == ChannelKind::Webhook {
            let ts = now_ns / 1_000_000_000;
            let secret = ch.secret.as_deref().unwrap_or_default();
            req = req
                .header("webhook-id", &n.id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(secret, &n.id, ts, &n.payload));
        }
        // Errors name the channel, never its URL (which often holds a token).
        let res = req.body(n.payload.clone()).send().await.map_err(|e| describe(&e))?;
        let status = res.status();
        if status.is_success() { Ok(()) } else { Err(format!("the receiver answered {status}")) }
    }
}

/// A delivery error without the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if let Some(i) = text.find("refused:") {
            msg = text[i..].to_string();
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_destinations_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1/x",
            "http://localhost:8080/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
        ] {
            let err = check_url(url, &[]).unwrap_err();
            assert!(err.starts_with("refused:"), "{url}: {err}");
        }
        for ok in ["https://hooks.slack.com/services/x", "http://93.184.215.14/hook", "https://[2606:4700::1111]/"] {
            assert!(check_url(ok, &[]).is_ok(), "{ok}");
        }
        assert!(check_url("ftp://example.com/", &[]).is_err());
        // An allow-list entry lets exactly its network through.
        let allow = [Cidr::parse("127.0.0.1/32").unwrap(), Cidr::parse("fd00::/8").unwrap()];
        assert!(check_url("http://127.0.0.1:9093/", &allow).is_ok());
        assert!(check_url("http://127.0.0.2:9093/", &allow).is_err());
        assert!(check_url("http://[fd12::1]/", &allow).is_ok());
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("nonsense").is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused_at_connect_time() {
        let c = client(Vec::new());
        let err = c.post("http://localhost:1/").send().await.unwrap_err();
        assert!(describe(&err).starts_with("refused:"), "{} / {err:?}", describe(&err));
    }

    #[test]
    fn a_name_resolving_to_internal_and_public_addresses_connects_only_to_the_public_ones() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mixed = vec![addr("127.0.0.1:0"), addr("93.184.215.14:0"), addr("[fd00::1]:0"), addr("169.254.169.254:0")];
        assert_eq!(allowed_addrs("rebind.example", mixed.clone(), &[]).unwrap(), vec![addr("93.184.215.14:0")]);
        let allow = [Cidr::parse("127.0.0.1/32").unwrap()];
        assert_eq!(
            allowed_addrs("rebind.example", mixed, &allow).unwrap(),
            vec![addr("127.0.0.1:0"), addr("93.184.215.14:0")]
        );
        let internal = vec![addr("10.0.0.1:0"), addr("[::1]:0")];
        assert!(allowed_addrs("internal.example", internal, &[]).unwrap_err().starts_with("refused:"));
    }

    /// A local server answering every request with `response`; returns its port and how many
    /// requests it got.
    async fn answering(response: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(response.as_bytes()).await;
            }
        });
        (port, hits)
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        // The allowed receiver redirects to the metadata address: the 302 is the answer (a
        // failed delivery), and nothing else is asked.
        let (port, hits) = answering(
            "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let c = client(vec![Cidr::parse("127.0.0.1/32").unwrap()]);
        let res = c.post(format!("http://127.0.0.1:{port}/hook")).body("{}").send().await.unwrap();
        assert_eq!(res.status(), 302);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks reference test vector.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let s = |a| backoff_ns("n1", a) as f64 / 1e9;
        assert!((0.5..1.5).contains(&s(1)) && (1.0..3.0).contains(&s(2)) && (4.0..12.0).contains(&s(4)));
        assert!(s(30) < 900.0);
        assert_ne!(backoff_ns("n1", 3), backoff_ns("n2", 3), "jitter differs between alerts");
    }

    #[test]
    fn channels_do_not_print_their_url() {
        let c = Channel {
            name: "oncall".into(),
            kind: ChannelKind::Slack,
            url: "https://x/T0/secret".into(),
            secret: None,
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
