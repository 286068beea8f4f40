//! Bearer-token checks shared by the gRPC and HTTP receivers (and the API).

/// Whether an `Authorization` header value carries one of `tokens`. No tokens configured
/// means authentication is off. Compared in constant time per candidate token.
pub fn bearer_allowed(header: Option<&str>, tokens: &[String]) -> bool {
    if tokens.is_empty() {
        return true;
    }
    let Some(presented) = header.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    }) else {
        return false;
    };
    // Check every token so the time taken does not reveal which one matched.
    tokens.iter().fold(false, |ok, t| constant_time_eq(presented.as_bytes(), t.as_bytes()) | ok)
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

    #[test]
    fn bearer_tokens() {
        let tokens = vec!["s3cret".to_string(), "other".to_string()];
        assert!(bearer_allowed(None, &[]));
        assert!(bearer_allowed(Some("Bearer s3cret"), &tokens));
        assert!(bearer_allowed(Some("bearer other"), &tokens));
        assert!(!bearer_allowed(Some("Bearer s3cre"), &tokens));
        assert!(!bearer_allowed(Some("Basic s3cret"), &tokens));
        assert!(!bearer_allowed(Some("s3cret"), &tokens));
        assert!(!bearer_allowed(None, &tokens));
    }
}
