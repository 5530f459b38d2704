//! Lists of browser origins in the configuration (`server.cors_origins`): read from a string
//! or a list, and checked at load so a bad entry names itself before the server starts.

use serde::{Deserialize, Deserializer};

/// The allowed origins, as `server.cors_origins` gives them: `"*"`, one origin, a
/// comma-separated string of origins (how `CORS_ORIGIN` is usually written) or a list.
pub fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect())
}

/// Checks every configured origin: `*`, or `scheme://host[:port]` with nothing after it (what
/// a browser sends in `Origin`). The problem names the first bad entry.
pub fn check_origins(origins: &[String]) -> Result<(), String> {
    if origins.is_empty() {
        return Err("list no origin; use \"*\" to allow every origin".into());
    }
    for origin in origins {
        if origin == "*" {
            continue;
        }
        let parsed = url::Url::parse(origin).map_err(|e| format!("'{origin}': {e}"))?;
        let bare = parsed.origin().ascii_serialization();
        if !matches!(parsed.scheme(), "http" | "https") || bare != *origin {
            return Err(format!(
                "'{origin}' is not an origin like https://app.example.com or http://localhost:5173"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Vec<String> {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(deserialize_with = "one_or_many")]
            origins: Vec<String>,
        }
        let holder: Holder = serde_json::from_str(toml).expect("parse");
        holder.origins
    }

    #[test]
    fn origins_come_as_one_a_comma_list_or_a_list() {
        assert_eq!(parse(r#"{"origins": "*"}"#), ["*"]);
        assert_eq!(
            parse(r#"{"origins": "http://localhost:5173, https://a.example/"}"#),
            ["http://localhost:5173", "https://a.example"]
        );
        assert_eq!(
            parse(r#"{"origins": ["https://a.example", " "]}"#),
            ["https://a.example"]
        );
    }

    #[test]
    fn only_bare_origins_pass_the_check() {
        let ok = |o: &str| check_origins(&[o.to_owned()]).is_ok();
        assert!(ok("*"));
        assert!(ok("http://localhost:5173"));
        assert!(ok("https://app.example.com"));
        assert!(!ok("https://app.example.com/path"));
        assert!(!ok("app.example.com"));
        assert!(!ok("ftp://app.example.com"));
        assert!(check_origins(&[]).is_err());
    }
}
