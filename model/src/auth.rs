//! Bearer tokens bound to tenants and scopes, shared by the receivers, the API and the UI.
//!
//! A token grants some scopes (`ingest`, `read`, `admin`) on some tenants (a list, or `*`).
//! With no token configured at all, everything is open (the embedded single-user default);
//! once any token exists, every surface needs one with the right scope *and* tenant. Tokens
//! are compared in constant time, each against every configured token, so the time taken does
//! not reveal which one (or how much of one) matched.

use crate::Tenant;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send telemetry (OTLP on 4317/4318).
    Ingest,
    /// Query: the API, the UI, SLO state.
    Read,
    /// Operate: `/metrics`.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// Which tenants a token covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    All,
    Only(Vec<Tenant>),
}

impl Tenants {
    pub fn covers(&self, tenant: &Tenant) -> bool {
        match self {
            Tenants::All => true,
            Tenants::Only(list) => list.contains(tenant),
        }
    }
}

/// One configured token.
#[derive(Clone)]
pub struct Grant {
    pub token: String,
    pub tenants: Tenants,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("token", &"***")
            .field("tenants", &self.tenants)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token, or not a configured one (401; gRPC UNAUTHENTICATED). Not retryable.
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// A valid token that does not cover this tenant or scope (403; gRPC PERMISSION_DENIED).
    /// Not retryable.
    #[error("{0}")]
    Forbidden(String),
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Auth {
    grants: Vec<Grant>,
    /// The secret nodes present to each other's internal endpoints (`[cluster] token`).
    cluster: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("grants", &self.grants)
            .field("cluster", &self.cluster.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Auth {
    pub fn new(grants: Vec<Grant>) -> Auth {
        Auth { grants, cluster: None }
    }

    /// Sets the cluster token (empty: none).
    pub fn with_cluster_token(mut self, token: &str) -> Auth {
        self.cluster = (!token.is_empty()).then(|| token.to_string());
        self
    }

    /// The cluster token, for this node's own requests to other nodes.
    pub fn cluster_token(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// Whether a request may use a node-to-node endpoint: it carries the cluster token; or no
    /// cluster token and no other token is configured (then the endpoint is as open as the API).
    pub fn check_cluster(&self, header: Option<&str>) -> Result<(), Denied> {
        let Some(token) = &self.cluster else {
            if self.is_open() {
                return Ok(());
            }
            return Err(Denied::Forbidden(
                "this node has no cluster.token: set the same cluster.token on every node so that query nodes can \
                 read the ingesters' unflushed rows"
                    .into(),
            ));
        };
        let presented = bearer(header).ok_or(Denied::Unauthenticated)?;
        if constant_time_eq(presented.as_bytes(), token.as_bytes()) { Ok(()) } else { Err(Denied::Unauthenticated) }
    }

    /// No token is configured: every request is allowed, for every tenant.
    pub fn is_open(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grant whose token the `Authorization` header carries (`Bearer <token>`).
    fn grant(&self, header: Option<&str>) -> Option<&Grant> {
        let presented = bearer(header)?;
        // Every token is compared, so the time does not depend on which one matched.
        let mut found = None;
        for g in &self.grants {
            if constant_time_eq(presented.as_bytes(), g.token.as_bytes()) && found.is_none() {
                found = Some(g);
            }
        }
        found
    }

    /// Whether the request may act with `scope` on `tenant`.
    pub fn check(&self, header: Option<&str>, tenant: &Tenant, scope: Scope) -> Result<(), Denied> {
        if self.is_open() {
            return Ok(());
        }
        let g = self.grant(header).ok_or(Denied::Unauthenticated)?;
        if !g.scopes.contains(&scope) {
            return Err(Denied::Forbidden(format!("this token does not have the {} scope", scope.as_str())));
        }
        if !g.tenants.covers(tenant) {
            return Err(Denied::Forbidden(format!("this token does not cover tenant {tenant:?}")));
        }
        Ok(())
    }

    /// Whether the request may act with `scope` regardless of tenant (`/metrics`, sign-in).
    pub fn check_scope(&self, header: Option<&str>, scope: Scope) -> Result<(), Denied> {
        if self.is_open() {
            return Ok(());
        }
        let g = self.grant(header).ok_or(Denied::Unauthenticated)?;
        if !g.scopes.contains(&scope) {
            return Err(Denied::Forbidden(format!("this token does not have the {} scope", scope.as_str())));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, rest) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Tenant {
        Tenant::new(name).unwrap()
    }

    fn auth() -> Auth {
        Auth::new(vec![
            Grant { token: "ingest-a-1".into(), tenants: Tenants::Only(vec![t("a")]), scopes: vec![Scope::Ingest] },
            Grant {
                token: "reader-ab-1".into(),
                tenants: Tenants::Only(vec![t("a"), t("b")]),
                scopes: vec![Scope::Read],
            },
            Grant { token: "ops-all-111".into(), tenants: Tenants::All, scopes: vec![Scope::Read, Scope::Admin] },
        ])
    }

    #[test]
    fn no_tokens_means_open() {
        let a = Auth::default();
        assert!(a.is_open());
        assert_eq!(a.check(None, &t("x"), Scope::Admin), Ok(()));
        assert_eq!(a.check_scope(None, Scope::Admin), Ok(()));
    }

    #[test]
    fn tokens_are_bound_to_tenants_and_scopes() {
        let a = auth();
        assert_eq!(a.check(Some("Bearer ingest-a-1"), &t("a"), Scope::Ingest), Ok(()));
        assert_eq!(a.check(Some("bearer  ingest-a-1 "), &t("a"), Scope::Ingest), Ok(()));
        assert!(matches!(a.check(Some("Bearer ingest-a-1"), &t("b"), Scope::Ingest), Err(Denied::Forbidden(_))));
        assert!(matches!(a.check(Some("Bearer ingest-a-1"), &t("a"), Scope::Read), Err(Denied::Forbidden(_))));
        assert_eq!(a.check(Some("Bearer reader-ab-1"), &t("b"), Scope::Read), Ok(()));
        assert!(matches!(a.check(Some("Bearer reader-ab-1"), &t("default"), Scope::Read), Err(Denied::Forbidden(_))));
        assert_eq!(a.check(Some("Bearer ops-all-111"), &t("anyone"), Scope::Read), Ok(()));
        assert_eq!(a.check_scope(Some("Bearer ops-all-111"), Scope::Admin), Ok(()));
        assert!(matches!(a.check_scope(Some("Bearer reader-ab-1"), Scope::Admin), Err(Denied::Forbidden(_))));
        for bad in [None, Some("Bearer ingest-a-"), Some("Basic ingest-a-1"), Some("ingest-a-1"), Some("Bearer ")] {
            assert_eq!(a.check(bad, &t("a"), Scope::Ingest), Err(Denied::Unauthenticated), "{bad:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        assert!(!format!("{:?}", auth()).contains("ingest-a-1"));
        assert!(!format!("{:?}", auth().with_cluster_token("cluster-secret-123")).contains("cluster-secret"));
    }

    #[test]
    fn the_cluster_token_guards_node_endpoints() {
        // Open: open, like the API.
        assert_eq!(Auth::default().check_cluster(None), Ok(()));
        // Tokens but no cluster token: closed, and the reason says what to set.
        assert!(
            matches!(auth().check_cluster(Some("Bearer ops-all-111")), Err(Denied::Forbidden(m)) if m.contains("cluster.token"))
        );
        // With one: that token only, with or without other tokens.
        for a in [Auth::default(), auth()] {
            let a = a.with_cluster_token("cluster-secret-123");
            assert_eq!(a.check_cluster(Some("Bearer cluster-secret-123")), Ok(()));
            for bad in [None, Some("Bearer ops-all-111"), Some("Bearer cluster-secret-12"), Some("cluster-secret-123")]
            {
                assert_eq!(a.check_cluster(bad), Err(Denied::Unauthenticated), "{bad:?}");
            }
        }
    }
}
