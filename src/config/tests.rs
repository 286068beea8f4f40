//! Config parsing, validation and the example file.
use super::*;

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/tracelight.example.toml")
}

#[test]
fn the_example_config_parses_and_documents_every_key() {
    let config = Config::load(Some(&example_path()), &[], &Overrides::default()).unwrap();
    assert_eq!(config, Config::default(), "the example shows the defaults");
    let text = std::fs::read_to_string(example_path()).unwrap();
    let table: toml::Table = text.parse().unwrap();
    for path in Config::key_paths() {
        let mut v = &toml::Value::Table(table.clone());
        for p in &path {
            v = v.get(p.as_str()).unwrap_or_else(|| panic!("example config lacks {}", path.join(".")));
        }
    }
}

#[test]
fn unknown_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.toml");
    std::fs::write(&p, "[listen]\nhttp = \"127.0.0.1:1\"\nhtp = \"x\"\n").unwrap();
    let err = Config::load(Some(&p), &[], &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("htp"), "{err}");
}

#[test]
fn environment_then_flags_override_the_file() {
    let env = vec![
        ("TRACELIGHT_CATALOG_URL".to_string(), "postgres://u@h/db".to_string()),
        ("TRACELIGHT_LISTEN_HTTP".to_string(), "127.0.0.1:9000".to_string()),
        ("TRACELIGHT_INGEST_TOKENS".to_string(), "abcdefgh, ijklmnop".to_string()),
        ("TRACELIGHT_WAL_FSYNC".to_string(), "false".to_string()),
        ("TRACELIGHT_HEAD_FLUSH_ROWS".to_string(), "5".to_string()),
    ];
    let flags = Overrides { http: Some("127.0.0.1:9001".into()), ..Default::default() };
    let c = Config::load(None, &env, &flags).unwrap();
    assert_eq!(c.catalog_url(), "postgres://u@h/db");
    assert_eq!(c.listen.http, "127.0.0.1:9001");
    assert_eq!(c.ingest.tokens, vec!["abcdefgh", "ijklmnop"]);
    assert!(!c.wal.fsync);
    assert_eq!(c.head.flush_rows, 5);
    let bad = vec![("TRACELIGHT_HEAD_FLUSH_ROWS".to_string(), "many".to_string())];
    assert!(Config::load(None, &bad, &Overrides::default()).is_err());
}

#[test]
fn validation_catches_nonsense() {
    let mut c = Config::default();
    c.listen.http = "localhost".into();
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.head.flush_interval = "soon".into();
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.api.tokens = vec!["short".into()];
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.wal.max_bytes = c.wal.segment_bytes;
    assert!(c.validate().is_err());
    assert_eq!(Config::default().catalog_url(), "sqlite://./tracelight-data/catalog.db");
}

fn load_text(text: &str) -> anyhow::Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.toml");
    std::fs::write(&p, text).unwrap();
    let c = Config::load(Some(&p), &[], &Overrides::default())?;
    c.validate()?;
    Ok(c)
}

const SLOS: &str = r#"
[[slo]]
name = "checkout-availability"
service = "checkout"
objective = 99.9
window = "28d"
sli = { kind = "error_ratio", filter = "name = 'POST /checkout'" }
notify = ["oncall", "relay"]

[[slo]]
name = "checkout-latency"
service = "checkout"
objective = 99
sli = { kind = "latency", threshold = "300ms" }
rules = [{ severity = "page", long_window = "1h", short_window = "5m", factor = 10 }]

[[notify]]
name = "oncall"
kind = "slack"
url = "https://hooks.slack.com/services/T0/B0/secretpart"

[[notify]]
name = "relay"
kind = "webhook"
url = "https://relay.example/hook"
secret = "whsec_c2VjcmV0"
"#;

#[test]
fn tokens_bind_tenants_and_scopes_and_flat_lists_still_work() {
    use tracelight_model::auth::{Denied, Scope};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tok");
    std::fs::write(&file, "  from-a-file-1\n").unwrap();
    let text = format!(
        r#"
[ingest]
tokens = ["legacy-ingest"]
[api]
tokens = ["legacy-reader"]
[[auth.tokens]]
token = "team-a-writer"
tenants = ["a"]
scopes = ["ingest"]
[[auth.tokens]]
token_file = "{}"
tenants = ["*"]
scopes = ["read", "admin"]
"#,
        file.display()
    );
    let c = load_text(&text).unwrap();
    let auth = c.auth().unwrap();
    let a = tracelight_model::Tenant::new("a").unwrap();
    let b = tracelight_model::Tenant::new("b").unwrap();
    assert_eq!(auth.check(Some("Bearer team-a-writer"), &a, Scope::Ingest), Ok(()));
    assert!(matches!(auth.check(Some("Bearer team-a-writer"), &b, Scope::Ingest), Err(Denied::Forbidden(_))));
    assert_eq!(auth.check(Some("Bearer legacy-ingest"), &b, Scope::Ingest), Ok(()), "flat lists: every tenant");
    assert_eq!(auth.check_scope(Some("Bearer from-a-file-1"), Scope::Admin), Ok(()));
    for secret in ["team-a-writer", "legacy-ingest", "legacy-reader"] {
        assert!(!format!("{c:?}").contains(secret), "tokens stay out of Debug output");
    }
    for (change, msg) in [
        (text.replace("tenants = [\"a\"]", "tenants = []"), "tenants is empty"),
        (text.replace("tenants = [\"a\"]", "tenants = [\"../etc\"]"), "invalid tenant"),
        (text.replace("tenants = [\"a\"]", "tenants = [\"*\", \"a\"]"), "covers all"),
        (text.replace("scopes = [\"ingest\"]", "scopes = []"), "scopes is empty"),
        (text.replace("scopes = [\"ingest\"]", "scopes = [\"write\"]"), "unknown variant"),
        (text.replace("token = \"team-a-writer\"", "token = \"short\""), "at least 8"),
        (text.replace("token = \"team-a-writer\"", ""), "exactly one of token and token_file"),
    ] {
        let err = load_text(&change).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(msg), "{msg}: {err}");
    }
}

#[test]
fn slos_and_channels_parse_and_are_checked() {
    let c = load_text(SLOS).unwrap();
    let specs = c.slo_specs().unwrap();
    assert_eq!(specs.len(), 2);
    let factors: Vec<f64> = specs[0].rules.iter().map(|r| (r.factor * 1e4).round() / 1e4).collect();
    assert_eq!(factors, vec![13.44, 5.6, 2.8, 0.9333]);
    assert_eq!(specs[1].window_ns, 30 * 86_400_000_000_000);
    assert_eq!(specs[1].rules.len(), 1);
    assert_eq!(specs[1].sli, tracelight_model::slo::Sli::Latency { threshold_ns: 300_000_000, filter: None });
    // Secrets never show in Debug output (logs).
    let debug = format!("{:?}", c.notify);
    assert!(!debug.contains("secretpart") && !debug.contains("whsec_"), "{debug}");
    for (change, msg) in [
        (SLOS.replace("notify = [\"oncall\", \"relay\"]", "notify = [\"pager\"]"), "no [[notify]] defines"),
        (SLOS.replace("objective = 99.9", "objective = 100"), "objective"),
        (SLOS.replace("window = \"28d\"", "window = \"90s\""), "whole minutes"),
        (SLOS.replace("kind = \"latency\", threshold = \"300ms\"", "kind = \"latency\""), "threshold"),
        (SLOS.replace("kind = \"error_ratio\"", "kind = \"errors\""), "sli.kind"),
        (SLOS.replace("secret = \"whsec_c2VjcmV0\"", ""), "signing secret"),
        (SLOS.replace("kind = \"slack\"", "kind = \"pagerduty\""), "kind must be"),
        (SLOS.replace("url = \"https://hooks", "url = \"ftp://hooks"), "http://"),
        (SLOS.replace("checkout-latency", "checkout-availability"), "unique"),
        (SLOS.replace("factor = 10", "factor = 0"), "factor positive"),
        (SLOS.replace("long_window = \"1h\"", "long_window = \"1m\""), "shorter"),
    ] {
        let err = load_text(&change).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(msg), "{msg}: {err}");
    }
}

#[test]
fn object_storage_comes_from_the_file_the_environment_or_the_flag() {
    let text = r#"
storage_url = "s3://telemetry/prod"
[storage]
endpoint = "http://127.0.0.1:9000"
secret_access_key = "hush-hush"
allow_http = true
"#;
    let c = load_text(text).unwrap();
    let o = c.storage.s3_options().unwrap();
    assert_eq!((o.endpoint.as_str(), o.allow_http), ("http://127.0.0.1:9000", true));
    assert_eq!(o.request_timeout, std::time::Duration::from_secs(30));
    assert_eq!(
        c.storage_location().unwrap(),
        tracelight_storage::objstore::Location::S3 { bucket: "telemetry".into(), prefix: "prod".into() }
    );
    assert!(!format!("{c:?}").contains("hush-hush"), "the secret stays out of Debug output");

    let env = vec![
        ("TRACELIGHT_STORAGE_REGION".to_string(), "eu-west-1".to_string()),
        ("TRACELIGHT_STORAGE_URL".to_string(), "s3://from-env".to_string()),
        ("TRACELIGHT_CACHE_MAX_BYTES".to_string(), "1073741824".to_string()),
    ];
    let flags = Overrides { storage_url: Some("s3://from-flag/x".into()), ..Default::default() };
    let c = Config::load(None, &env, &flags).unwrap();
    assert_eq!(c.storage.region, "eu-west-1");
    assert_eq!(c.storage_url, "s3://from-flag/x", "the flag wins over TRACELIGHT_STORAGE_URL");
    assert_eq!(c.cache.max_bytes, 1 << 30);
    assert_eq!(c.cache_dir(), std::path::PathBuf::from("./tracelight-data/cache"));
    let c = Config::load(None, &env, &Overrides::default()).unwrap();
    assert_eq!(c.storage_url, "s3://from-env");

    for (bad, why) in [
        ("storage_url = \"s3://UPPER/x\"", "bucket name"),
        ("storage_url = \"gs://b/x\"", "not supported"),
        ("[storage]\nrequest_timeout = \"0s\"", "positive"),
        ("[cache]\nmax_bytes = 1000", "64 MiB"),
    ] {
        let e = format!("{:#}", load_text(bad).unwrap_err());
        assert!(e.contains(why), "{bad}: {e}");
    }
}
