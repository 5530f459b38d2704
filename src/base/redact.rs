//! Redaction of URLs that may carry a password (database URLs, mostly), for log lines and
//! error messages.
//!
//! Owns: [`redact_url`]. Must not touch: anything else in the crate.

/// A URL fit for a log line or an error: its password (in the user part or a `password=`
/// query parameter) replaced by `****`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL we can take apart: show only its scheme, if any.
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://****"),
            None => "****".to_owned(),
        };
    };
    let has_password_param = parsed
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if parsed.password().is_none() && !has_password_param {
        return url.to_owned();
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("****"));
    }
    if has_password_param {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "****".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://easel:s3cret@db.example.com:5432/easel"),
            "postgres://easel:****@db.example.com:5432/easel"
        );
        let query = redact_url("postgresql://db/easel?user=easel&password=s3cret&sslmode=require");
        assert!(
            !query.contains("s3cret") && query.contains("sslmode=require"),
            "{query}"
        );
        assert_eq!(
            redact_url("sqlite://./data/easel.db"),
            "sqlite://./data/easel.db"
        );
        assert!(!redact_url("postgres://u:s3cret@[bad").contains("s3cret"));
    }
}
