//! Starts the real `tracelight` binary on 127.0.0.1:0 with a temporary data directory, and
//! talks to it over real OTLP and the JSON API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    /// How long the last start took until the listening line (includes WAL recovery).
    pub start_time: Duration,
    client: reqwest::Client,
}

impl Server {
    /// Starts a server on `dir` with extra `TRACELIGHT_*` environment.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s = Server {
            child: None,
            grpc: "127.0.0.1:1".parse().unwrap(),
            otlp_http: "127.0.0.1:1".parse().unwrap(),
            http: "127.0.0.1:1".parse().unwrap(),
            dir: dir.to_path_buf(),
            env,
            start_time: Duration::ZERO,
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracelight"));
        cmd.args(["serve", "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, _) in std::env::vars() {
            if k.starts_with("TRACELIGHT_") {
                cmd.env_remove(k);
            }
        }
        // The suite's data sits at a fixed instant (otlp::T0) that falls behind the default
        // accepted window as time passes; tests of the window set their own.
        cmd.env("TRACELIGHT_INGEST_ACCEPT_PAST", "100years");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tracelight");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("tracelight listening:") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", self.log());
            }
        };
        // A node without the ingest role has no OTLP listeners ("off"): a closed port.
        let field = |name: &str| -> SocketAddr {
            let v = line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap();
            if v == "off" { "127.0.0.1:1".parse().unwrap() } else { v.parse().unwrap() }
        };
        self.grpc = field("otlp_grpc");
        self.otlp_http = field("otlp_http");
        self.http = field("http");
        self.child = Some(child);
        self.start_time = started.elapsed();
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Peak resident memory of the server so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// Whether `/healthz` answers.
    pub async fn alive(&self) -> bool {
        self.client.get(self.api("/healthz")).send().await.is_ok_and(|r| r.status() == 200)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM without waiting for the exit ([`Server::stop`] waits).
    pub fn terminate(&self) {
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(status) = c.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("server did not exit within 20 s of SIGTERM; log:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(status.success(), "server exited with {status}; log:\n{}", self.log());
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn otlp(&self, path: &str) -> String {
        format!("http://{}{}", self.otlp_http, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Runs SQL through `POST /api/v1/query`; panics on an error answer.
    pub async fn sql(&self, sql: &str) -> Vec<Vec<Value>> {
        let v = self.query_json(serde_json::json!({ "sql": sql })).await;
        assert!(v.get("error").is_none(), "{sql}: {v}");
        serde_json::from_value(v["rows"].clone()).unwrap()
    }

    pub async fn query_json(&self, body: Value) -> Value {
        let res = self.client.post(self.api("/api/v1/query")).json(&body).send().await.unwrap();
        res.json().await.unwrap()
    }

    /// The value of one series on `/metrics`, named with its labels as exposed
    /// (`tracelight_head_bytes`, `name{reason="overloaded"}`); `None` when absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.client.get(self.api("/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The single integer a `SELECT count(*) ...` returns.
    pub async fn count(&self, sql: &str) -> i64 {
        let rows = self.sql(sql).await;
        rows[0][0].as_i64().unwrap_or_else(|| panic!("{sql}: {rows:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // For the report of each test (`--nocapture`): the server's peak memory.
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", c.id())) {
                let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_string();
                let test = std::thread::current().name().unwrap_or("?").to_string();
                eprintln!("SERVER PEAK RSS {test}: {peak}");
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
