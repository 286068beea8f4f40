//! Tokens: `[[auth.tokens]]` bound to tenants and scopes, the deprecated flat lists, and
//! `Debug` output that never shows a secret.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{Api, Config, Ingest};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `[[auth.tokens]]`: each token with the tenants and scopes it covers. With no token
    /// configured anywhere, every request is allowed.
    pub tokens: Vec<TokenConfig>,
}

/// One `[[auth.tokens]]`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret itself (at least 8 characters), or...
    #[serde(default)]
    pub token: Option<String>,
    /// ...a file holding it (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Tenants it covers: names, or `["*"]` for all.
    pub tenants: Vec<String>,
    /// Any of `ingest` (send telemetry), `read` (API, UI, SLOs), `admin` (`/metrics`).
    pub scopes: Vec<tracelight_model::auth::Scope>,
}

/// Tokens as `Debug` shows them: how many, never what.
struct Masked(usize);

impl std::fmt::Debug for Masked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} tokens]", self.0)
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_receiving_bytes", &self.max_receiving_bytes)
            .field("receive_timeout", &self.receive_timeout)
            .field("max_attribute_key_bytes", &self.max_attribute_key_bytes)
            .field("max_attribute_value_bytes", &self.max_attribute_value_bytes)
            .field("max_attributes", &self.max_attributes)
            .field("max_log_body_bytes", &self.max_log_body_bytes)
            .field("accept_past", &self.accept_past)
            .field("accept_future", &self.accept_future)
            .field("tokens", &Masked(self.tokens.len()))
            .finish()
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("tokens", &Masked(self.tokens.len()))
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("tenants", &self.tenants)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl Config {
    /// The tokens of `[[auth.tokens]]`, plus the deprecated flat lists (`ingest.tokens`: the
    /// `ingest` scope, `api.tokens`: `read` and `admin`, both on every tenant). Token files
    /// are read here.
    pub fn auth(&self) -> anyhow::Result<tracelight_model::auth::Auth> {
        use tracelight_model::auth::{Grant, Scope, Tenants};
        let mut grants = Vec::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let what = format!("auth.tokens[{i}]");
            let token = match (&t.token, &t.token_file) {
                (Some(tok), None) => tok.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .with_context(|| format!("{what}: cannot read token_file {}", path.display()))?
                    .trim()
                    .to_string(),
                _ => bail!("{what}: set exactly one of token and token_file"),
            };
            if t.scopes.is_empty() {
                bail!("{what}: scopes is empty; give some of \"ingest\", \"read\", \"admin\"");
            }
            let tenants = if t.tenants.iter().any(|n| n == "*") {
                if t.tenants.len() > 1 {
                    bail!("{what}: tenants = [\"*\"] covers all; list no others beside it");
                }
                Tenants::All
            } else if t.tenants.is_empty() {
                bail!("{what}: tenants is empty; list tenant names or [\"*\"]");
            } else {
                Tenants::Only(
                    t.tenants
                        .iter()
                        .map(|n| {
                            tracelight_model::Tenant::new(n).map_err(|e| anyhow::anyhow!("{what}: tenant {n:?}: {e}"))
                        })
                        .collect::<anyhow::Result<_>>()?,
                )
            };
            grants.push(Grant { token, tenants, scopes: t.scopes.clone() });
        }
        for t in &self.ingest.tokens {
            grants.push(Grant { token: t.clone(), tenants: Tenants::All, scopes: vec![Scope::Ingest] });
        }
        for t in &self.api.tokens {
            grants.push(Grant { token: t.clone(), tenants: Tenants::All, scopes: vec![Scope::Read, Scope::Admin] });
        }
        for g in &grants {
            if g.token.len() < 8 || g.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("bearer tokens must be at least 8 characters, without spaces or control characters");
            }
        }
        for (i, a) in grants.iter().enumerate() {
            if grants[..i].iter().any(|b| b.token == a.token && b.scopes != a.scopes) {
                bail!("the same token is configured twice with different scopes; give each token one entry");
            }
        }
        let cluster = &self.cluster.token;
        if !cluster.is_empty() && grants.iter().any(|g| &g.token == cluster) {
            bail!("cluster.token must differ from every API and ingest token");
        }
        Ok(tracelight_model::auth::Auth::new(grants).with_cluster_token(cluster))
    }
}
