//! Delivery through a real Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! `.ci/run`): a burning SLO is posted to its `/api/v2/alerts`, and its routing (on our labels)
//! forwards the alert to a local webhook receiver with the labels intact.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Server;
use crate::otlp;
use crate::slo::chat_receiver;
use crate::transport;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_burning_slo_reaches_alertmanager_and_its_routing() {
    if !std::path::Path::new(ALERTMANAGER).exists() {
        assert!(std::env::var_os("CI").is_none(), "{ALERTMANAGER} missing under CI; .ci/run installs it");
        eprintln!("SKIPPED a_burning_slo_reaches_alertmanager_and_its_routing: prometheus-alertmanager not installed");
        return;
    }
    let (hook, received) = chat_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let am_config = dir.path().join("alertmanager.yml");
    // Routing on tracelight's labels: pages to the hook, everything else nowhere.
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: blackhole\n  group_by: [alertname, slo, severity]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n  routes:\n    - receiver: hook\n      matchers: ['alertname=\"SLOErrorBudgetBurn\"', 'severity=\"page\"']\nreceivers:\n  - name: blackhole\n  - name: hook\n    webhook_configs:\n      - url: '{hook}'\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let am = Killed(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!("--storage.path={}", dir.path().join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("http://127.0.0.1:{port}/-/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let config = dir.path().join("tracelight.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\neval_interval = \"1s\"\nallow_destinations = [\"127.0.0.1/32\"]\npublic_url = \"http://ui.test\"\n\n\
             [[slo]]\nname = \"checkout-avail\"\nservice = \"checkout\"\nobjective = 99.0\n\
             sli = {{ kind = \"error_ratio\" }}\nnotify = [\"am\"]\n\n\
             [[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(dir.path(), &[("TRACELIGHT_CONFIG", config.to_str().unwrap())]);
    let ch = transport::channel(&server).await;
    let minute = 60_000_000_000u64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let t0 = (now / minute - 30) * minute;
    let spans = (0..300u64)
        .map(|n| {
            let mut sp = otlp::span(5000 + n, n, None, "POST /checkout", 0, n % 5 == 0);
            sp.start_time_unix_nano = t0 + (n / 10) * minute + (n % 10) * 1_000_000_000;
            sp.end_time_unix_nano = sp.start_time_unix_nano + 1_000_000;
            sp
        })
        .collect();
    transport::grpc_traces(&ch, otlp::traces("checkout", spans), false).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let alert = loop {
        let found = received.lock().iter().find_map(|r| {
            let v: Value = serde_json::from_str(&r.body).ok()?;
            v["alerts"].as_array()?.iter().find(|a| a["labels"]["severity"] == "page").cloned()
        });
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no page reached the hook; got {:?}; log:\n{}",
            received.lock(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "SLOErrorBudgetBurn", "{alert}");
    assert_eq!(labels["slo"], "checkout-avail");
    assert_eq!(labels["service"], "checkout");
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["generatorURL"], "http://ui.test/slos/checkout-avail");
    assert!(alert["annotations"]["summary"].as_str().unwrap().starts_with("[PAGE] SLO checkout-avail"), "{alert}");
    assert!(alert["annotations"]["id"].as_str().is_some_and(|id| id.contains(":firing:")), "{alert}");
    // Tickets were routed to the black hole: only pages reach the hook.
    for r in received.lock().iter() {
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert!(v["alerts"].as_array().unwrap().iter().all(|a| a["labels"]["severity"] == "page"), "{v}");
    }
    drop(am);
}
