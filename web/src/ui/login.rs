//! Signing in to the UI when the server has API tokens: a browser cannot send a bearer
//! header, so `/login` takes the token once and keeps it in an `HttpOnly`, `SameSite=Strict`
//! cookie. Only the UI's GET pages accept the cookie; the JSON API still wants the header, so
//! a cross-site form can never spend it.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tracelight_model::auth::Scope;
use tracelight_model::{TENANT_HEADER, Tenant};

use super::{Clock, render};
use crate::{AppError, AppState};

pub const COOKIE: &str = "tracelight_token";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    failed: bool,
    render_ms: String,
}

#[derive(serde::Deserialize)]
pub struct LoginArgs {
    #[serde(default)]
    next: String,
    #[serde(default)]
    token: String,
}

/// Only a path on this server: no scheme, no `//host`, no backslash tricks.
/// Where to go after sign-in: only a path on this server. It must start with exactly one `/`
/// and hold no backslash and no control character (browsers strip tabs and newlines, so
/// `/\t/evil.example` would become the scheme-relative `//evil.example`).
pub(crate) fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next[1..].starts_with('/')
        && !next.chars().any(|c| c == '\\' || c.is_control())
        && !next.contains("://");
    if ok { next.to_string() } else { "/".into() }
}

/// The token a page request carries: the bearer header, or the sign-in cookie.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_string())
    })
}

/// Like the API's check, but a UI page (a GET) may also carry the token in the cookie.
pub fn authorize_page(state: &AppState, headers: &HeaderMap) -> Result<Tenant, AppError> {
    let presented = presented(headers);
    let tenant = Tenant::from_header(headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok()))
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    state.auth.check(presented.as_deref(), &tenant, Scope::Read)?;
    Ok(tenant)
}

/// Like [`authorize_page`], for pages about the deployment rather than a tenant's data: the
/// `admin` scope.
pub fn authorize_admin_page(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    Ok(state.auth.check_scope(presented(headers).as_deref(), Scope::Admin)?)
}

/// The token a page request presents: the `Authorization` header, else the sign-in cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from);
    header.or_else(|| cookie_token(headers).map(|t| format!("Bearer {t}")))
}

pub async fn form(Query(args): Query<LoginArgs>) -> Response {
    let clock = Clock::start();
    render(&LoginPage { next: safe_next(&args.next), failed: false, render_ms: clock.ms() })
}

pub async fn submit(State(state): State<AppState>, Form(args): Form<LoginArgs>) -> Response {
    let clock = Clock::start();
    let next = safe_next(&args.next);
    let token = args.token.trim();
    let valid = !token.is_empty() && !token.contains([';', ',', ' ']) && token.is_ascii();
    if !valid || state.auth.check_scope(Some(&format!("Bearer {token}")), Scope::Read).is_err() {
        let page = LoginPage { next, failed: true, render_ms: clock.ms() };
        return (StatusCode::UNAUTHORIZED, render(&page)).into_response();
    }
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000");
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

pub async fn logout() -> Response {
    let mut res = Redirect::to("/login").into_response();
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&gone) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}
