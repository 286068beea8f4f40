//! The deployment files in `deploy/` parse and describe the cluster README's "Running more
//! than one node" promises: the compose file's services and roles, and Kubernetes manifests
//! whose ingesters keep their WAL on a volume of their own.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_norway::Value;

const ROLES: [&str; 5] = ["all", "ingest", "query", "compact", "alert"];

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The roles a container's `serve` arguments give it (each checked to be a real role).
fn roles_of(args: &[Value]) -> BTreeSet<String> {
    let args: Vec<&str> = args.iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args.first(), Some(&"serve"), "{args:?}");
    let i = args.iter().position(|a| *a == "--role").unwrap_or_else(|| panic!("no --role in {args:?}"));
    let roles: BTreeSet<String> = args[i + 1].split(',').map(str::to_string).collect();
    assert!(roles.iter().all(|r| ROLES.contains(&r.as_str())), "{roles:?}");
    roles
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

#[test]
fn the_compose_file_runs_two_ingesters_a_querier_and_a_compactor_alerter() {
    let mut doc: Value = serde_norway::from_str(&read("deploy/compose.yaml")).unwrap();
    doc.apply_merge().unwrap();
    let services = doc["services"].as_mapping().unwrap();
    let mut by_role: Vec<(BTreeSet<String>, String)> = Vec::new();
    let mut node_ids = BTreeSet::new();
    for (name, svc) in services {
        let mut svc = svc.clone();
        svc.apply_merge().unwrap();
        let Some(command) = svc["command"].as_sequence() else { continue };
        if command.first().and_then(Value::as_str) != Some("serve") {
            continue;
        }
        let env = &svc["environment"];
        assert!(s(&env["TRACELIGHT_CATALOG_URL"]).starts_with("postgres://"), "{name:?}: the catalog is shared");
        assert!(s(&env["TRACELIGHT_STORAGE_URL"]).starts_with("s3://"), "{name:?}: segments go to the bucket");
        assert_eq!(s(&env["AWS_ENDPOINT_URL"]), "http://minio:9000");
        assert!(node_ids.insert(s(&env["TRACELIGHT_NODE_ID"]).to_string()), "node ids are unique");
        by_role.push((roles_of(command), s(name).to_string()));
    }
    let count = |role: &str| by_role.iter().filter(|(r, _)| r.contains(role)).count();
    assert_eq!((count("ingest"), count("query"), count("compact"), count("alert")), (2, 1, 1, 1), "{by_role:?}");
    for dep in ["postgres", "minio", "bucket"] {
        assert!(services.contains_key(dep), "{dep}");
    }
    // Ingesters keep their data directory (the WAL) on volumes of their own.
    for (roles, name) in &by_role {
        let volumes = services[name.as_str()]["volumes"].as_sequence().cloned().unwrap_or_default();
        if roles.contains("ingest") {
            assert_eq!(volumes.len(), 1, "{name}");
            assert!(s(&volumes[0]).ends_with(":/var/lib/tracelight"), "{name}");
        }
    }
}

#[test]
fn the_kubernetes_manifests_are_whole_and_consistent() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for d in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            for key in ["apiVersion", "kind"] {
                assert!(v[key].is_string(), "{}: no {key}", f.display());
            }
            assert!(v["metadata"]["name"].is_string(), "{}: no metadata.name", f.display());
            docs.push(v);
        }
    }
    let named = |kind: &str| -> BTreeSet<String> {
        docs.iter().filter(|d| d["kind"] == kind).map(|d| s(&d["metadata"]["name"]).to_string()).collect()
    };
    let (config_maps, secrets) = (named("ConfigMap"), named("Secret"));
    let mut roles_seen = BTreeSet::new();
    for d in docs.iter().filter(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment") {
        let name = s(&d["metadata"]["name"]);
        let spec = &d["spec"];
        // The selector selects the pods the template makes.
        for (k, v) in spec["selector"]["matchLabels"].as_mapping().unwrap() {
            assert_eq!(&spec["template"]["metadata"]["labels"][k], v, "{name}: selector {k:?}");
        }
        let c = &spec["template"]["spec"]["containers"][0];
        let roles = roles_of(c["args"].as_sequence().unwrap());
        // Each pod is its own node in the catalog.
        let env = c["env"].as_sequence().unwrap();
        let node_id = env.iter().find(|e| e["name"] == "TRACELIGHT_NODE_ID").unwrap();
        assert_eq!(s(&node_id["valueFrom"]["fieldRef"]["fieldPath"]), "metadata.name", "{name}");
        for from in c["envFrom"].as_sequence().unwrap() {
            if let Some(r) = from.get("configMapRef") {
                assert!(config_maps.contains(s(&r["name"])), "{name}: no such ConfigMap");
            }
            if let Some(r) = from.get("secretRef") {
                assert!(secrets.contains(s(&r["name"])), "{name}: no such Secret");
            }
        }
        // Probes use a named port the container declares.
        let ports: BTreeSet<&str> = c["ports"].as_sequence().unwrap().iter().map(|p| s(&p["name"])).collect();
        for probe in ["readinessProbe", "livenessProbe"] {
            assert!(ports.contains(s(&c[probe]["httpGet"]["port"])), "{name}: {probe}");
        }
        let mount = c["volumeMounts"][0]["mountPath"].as_str();
        assert_eq!(mount, Some("/var/lib/tracelight"), "{name}: the data directory of the image");
        if roles.contains("ingest") {
            // The WAL needs a volume that survives the pod: a StatefulSet's claim template.
            assert_eq!(d["kind"], "StatefulSet", "{name}");
            let claim = s(&spec["volumeClaimTemplates"][0]["metadata"]["name"]);
            assert_eq!(s(&c["volumeMounts"][0]["name"]), claim, "{name}");
            assert!(ports.contains("otlp-grpc") && ports.contains("otlp-http"), "{name}");
        } else {
            assert_eq!(d["kind"], "Deployment", "{name}: only ingesters hold state");
        }
        roles_seen.extend(roles);
    }
    assert_eq!(roles_seen, ["alert", "compact", "ingest", "query"].map(String::from).into_iter().collect());
    // Services select pods that exist.
    let pod_labels: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment")
        .map(|d| &d["spec"]["template"]["metadata"]["labels"])
        .collect();
    for svc in docs.iter().filter(|d| d["kind"] == "Service") {
        let sel = svc["spec"]["selector"].as_mapping().unwrap();
        assert!(
            pod_labels.iter().any(|l| sel.iter().all(|(k, v)| &l[k] == v)),
            "service {} selects no pods",
            s(&svc["metadata"]["name"])
        );
    }
}
