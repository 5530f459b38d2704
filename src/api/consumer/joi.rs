//! The validation the origins did with Joi, with Joi's messages: each route declares its
//! fields in order; the editor reports the first problem (`abortEarly`, unknown keys refused),
//! the photo app every problem with its own messages (`stripUnknown`).

use serde_json::{Map, Value};

/// What a field must be.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string of `min..=max` characters.
    Text { min: usize, max: usize },
    /// An email address (at most 254 characters).
    Email,
    /// An absolute http(s) URI (at most 2048 characters).
    Uri,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

pub const fn required(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

pub const fn optional(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

/// One problem: the field and Joi's message for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// Every problem of `body` against `fields`, in field order; unknown keys last when
/// `allow_unknown` is false.
pub fn check(body: &Map<String, Value>, fields: &[Field], allow_unknown: bool) -> Vec<Problem> {
    let mut problems: Vec<Problem> = fields
        .iter()
        .filter_map(|f| check_field(f, body.get(f.name)).map(|m| problem(f.name, m)))
        .collect();
    if !allow_unknown {
        for key in body.keys() {
            if !fields.iter().any(|f| f.name == key) {
                problems.push(problem(key, format!("\"{key}\" is not allowed")));
            }
        }
    }
    problems
}

fn problem(field: &str, message: String) -> Problem {
    Problem {
        field: field.to_owned(),
        message,
    }
}

fn check_field(field: &Field, value: Option<&Value>) -> Option<String> {
    let name = field.name;
    let text = match value {
        None => return field.required.then(|| format!("\"{name}\" is required")),
        Some(Value::String(s)) => s,
        Some(_) => return Some(format!("\"{name}\" must be a string")),
    };
    if text.is_empty() {
        return Some(format!("\"{name}\" is not allowed to be empty"));
    }
    let chars = text.chars().count();
    match field.kind {
        Kind::Text { min, .. } if chars < min => Some(format!(
            "\"{name}\" length must be at least {min} characters long"
        )),
        Kind::Text { max, .. } if chars > max => Some(format!(
            "\"{name}\" length must be less than or equal to {max} characters long"
        )),
        Kind::Email if chars > 254 || !is_email(text) => {
            Some(format!("\"{name}\" must be a valid email"))
        }
        Kind::Uri if chars > 2048 || !is_uri(text) => {
            Some(format!("\"{name}\" must be a valid uri"))
        }
        _ => None,
    }
}

/// `local@domain.tld`, as Joi's default `email()` accepts: no spaces, one `@`, a dotted domain
/// whose last label is at least two letters.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && local.len() <= 64
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphabetic))
}

fn is_uri(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// The string value of a field that passed [`check`].
pub fn text<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LOGIN: &[Field] = &[
        required("email", Kind::Email),
        required("password", Kind::Text { min: 1, max: 256 }),
    ];

    fn first(body: Value) -> Option<String> {
        let map = body.as_object().cloned().unwrap_or_default();
        check(&map, LOGIN, false).first().map(|p| p.message.clone())
    }

    #[test]
    fn messages_are_joi_s() {
        assert_eq!(
            first(json!({"password": "x"})).as_deref(),
            Some("\"email\" is required")
        );
        assert_eq!(
            first(json!({"email": "nope", "password": "x"})).as_deref(),
            Some("\"email\" must be a valid email")
        );
        assert_eq!(
            first(json!({"email": "", "password": "x"})).as_deref(),
            Some("\"email\" is not allowed to be empty")
        );
        assert_eq!(
            first(json!({"email": 5, "password": "x"})).as_deref(),
            Some("\"email\" must be a string")
        );
        assert_eq!(
            first(json!({"email": "a@b.io", "password": "x", "foo": 1})).as_deref(),
            Some("\"foo\" is not allowed")
        );
        assert_eq!(first(json!({"email": "a@b.io", "password": "x"})), None);
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@c.io"));
    }
}
