//! Tokens, tenants, sign-in and the Host check.

use super::*;

#[tokio::test]
async fn api_tokens_are_enforced() {
    let (app, _) = app(vec!["t0k3n".into()], true);
    let (status, _) = call(&app, post(r#"{"sql":"SELECT 1"}"#)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut req = post(r#"{"sql":"SELECT 1"}"#);
    req.headers_mut().insert("authorization", "Bearer t0k3n".parse().unwrap());
    let (status, _) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_are_bound_to_tenants_and_scopes() {
    let t = |n: &str| Tenant::new(n).unwrap();
    let auth = Auth::new(vec![
        Grant { token: "reader-of-a".into(), tenants: Tenants::Only(vec![t("a")]), scopes: vec![Scope::Read] },
        Grant { token: "ingest-only".into(), tenants: Tenants::All, scopes: vec![Scope::Ingest] },
        Grant { token: "operator-1".into(), tenants: Tenants::All, scopes: vec![Scope::Admin] },
    ]);
    let slo = |name: &str, tenant: &str| tracelight_model::slo::SloSpec {
        name: name.into(),
        tenant: t(tenant),
        service: "checkout".into(),
        objective: 99.0,
        window_ns: 30 * 86_400_000_000_000,
        sli: tracelight_model::slo::Sli::ErrorRatio { filter: None },
        rules: Vec::new(),
        min_events: 10,
        notify: Vec::new(),
    };
    let (app, _) = app_with(auth, vec![slo("of-a", "a"), slo("of-default", "default")], true);
    let req = |uri: &str, token: Option<&str>, tenant: Option<&str>| {
        let mut b = Request::get(uri);
        if let Some(tok) = token {
            b = b.header("authorization", format!("Bearer {tok}"));
        }
        if let Some(ten) = tenant {
            b = b.header("x-tracelight-tenant", ten);
        }
        b.body(Body::empty()).unwrap()
    };
    let status = |r: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(r).await.unwrap().status() }
    };
    // A reader of tenant a reads a, and nothing else.
    assert_eq!(status(req("/api/v1/services", Some("reader-of-a"), Some("a"))).await, StatusCode::OK);
    for (tenant, want) in [(Some("b"), StatusCode::FORBIDDEN), (None, StatusCode::FORBIDDEN)] {
        assert_eq!(status(req("/api/v1/services", Some("reader-of-a"), tenant)).await, want, "{tenant:?}");
        assert_eq!(status(req("/api/v1/logs?q=x", Some("reader-of-a"), tenant)).await, want, "{tenant:?}");
        assert_eq!(status(req("/?since=1h", Some("reader-of-a"), tenant)).await, want, "{tenant:?}");
    }
    // Other scopes do not read; no token is a 401.
    assert_eq!(status(req("/api/v1/services", Some("ingest-only"), Some("a"))).await, StatusCode::FORBIDDEN);
    assert_eq!(status(req("/api/v1/services", None, Some("a"))).await, StatusCode::UNAUTHORIZED);
    // SLOs are shown only to tokens that cover their tenant.
    let (code, body) = call(&app, req("/api/v1/slos", Some("reader-of-a"), Some("a"))).await;
    assert_eq!(code, StatusCode::OK);
    let names: Vec<&str> = body["slos"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["of-a"]);
    assert_eq!(status(req("/api/v1/slos/of-default", Some("reader-of-a"), Some("a"))).await, StatusCode::NOT_FOUND);
    assert_eq!(status(req("/slos/of-default", Some("reader-of-a"), Some("a"))).await, StatusCode::NOT_FOUND);
    assert_eq!(status(req("/api/v1/slos/of-a", Some("reader-of-a"), Some("a"))).await, StatusCode::OK);
    // /metrics wants an admin token once tokens exist.
    assert_eq!(status(req("/metrics", None, None)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(req("/metrics", Some("reader-of-a"), None)).await, StatusCode::FORBIDDEN);
    assert_eq!(status(req("/metrics", Some("operator-1"), None)).await, StatusCode::OK);
}

#[tokio::test]
async fn without_tokens_only_known_host_names_are_answered() {
    let (open, _) = app(vec![], true);
    let app = open;
    let with_host = |h: &str| Request::get("/api/v1/services").header("host", h).body(Body::empty()).unwrap();
    for ok in ["127.0.0.1:4319", "localhost:4319", "LOCALHOST", "[::1]:4319", "10.1.2.3", "tracelight.internal:80"] {
        assert_eq!(app.clone().oneshot(with_host(ok)).await.unwrap().status(), StatusCode::OK, "{ok}");
    }
    // A DNS-rebinding page sends its own name.
    for bad in ["evil.example", "evil.example:4319", "127.0.0.1.evil.example", "localhost.evil.example", "", "a:b:c"] {
        let (status, body) = call(&app, with_host(bad)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad}: {body}");
    }
    // With tokens the token is the guard.
    let (with_tokens, _) = self::app(vec!["t0k3n-123".into()], true);
    let req = Request::get("/api/v1/services")
        .header("host", "tracelight.example.com")
        .header("authorization", "Bearer t0k3n-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(with_tokens.oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn with_tokens_the_ui_signs_in_with_a_cookie_that_the_api_does_not_take() {
    let (app, _) = app(vec!["s3cret".into()], true);
    let (status, _, html) = page(&app, "/").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("<a href=\"/login\">Sign in</a>"), "{html}");
    let login = |token: &str, next: &str| {
        Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}&next={next}")))
            .unwrap()
    };
    let res = app.clone().oneshot(login("wrong", "/logs")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(!res.headers().contains_key("set-cookie"));
    let res = app.clone().oneshot(login("s3cret", "%2Flogs%3Fq%3Dx")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/logs?q=x");
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("tracelight_token=s3cret;")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
    );
    // Never a redirect off this server.
    // `/\t/evil.example` once passed: browsers strip the tab and go to //evil.example.
    for evil in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "%2F%09%2Fevil.example",
        "%2F%0A%2Fevil.example",
        "%2F%0D%2Fevil.example",
        "%2F%00%2Fevil.example",
        "%09%2F%2Fevil.example",
        "evil.example",
    ] {
        let res = app.clone().oneshot(login("s3cret", evil)).await.unwrap();
        assert_eq!(res.headers()["location"], "/", "{evil}");
    }
    let with_cookie =
        |uri: &str| Request::get(uri).header("cookie", "a=b; tracelight_token=s3cret").body(Body::empty()).unwrap();
    let res = app.clone().oneshot(with_cookie("/?since=1h")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.clone().oneshot(with_cookie("/api/v1/services")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the API wants the header, not the cookie");
    let res = app.clone().oneshot(get("/logout")).await.unwrap();
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}
