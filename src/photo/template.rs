//! A scene's `prompt_template`: `{{name}}` variables filled from a task's `parameters` (and
//! `custom_description`). A variable with no value is an error naming it, never a prompt
//! with a hole in it.

use serde_json::{Map, Value};

/// Fills `template`'s `{{name}}` variables (spaces inside the braces allowed) from `values`:
/// strings as they are, numbers and booleans as written in JSON. `Err` names the first
/// variable with no usable value. A `{{` that never closes is kept as text.
pub fn fill(template: &str, values: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + 2 + len].trim();
        match values.get(name) {
            Some(Value::String(s)) if !s.is_empty() => out.push_str(s),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
            _ => return Err(name.to_owned()),
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn fills_every_variable() {
        let v = values(json!({"style": "warm", "count": 2, "custom_description": "at dusk"}));
        assert_eq!(
            fill("a {{style}} photo x{{ count }}, {{custom_description}}", &v).unwrap(),
            "a warm photo x2, at dusk"
        );
        assert_eq!(fill("no variables", &v).unwrap(), "no variables");
        assert_eq!(fill("open {{ brace", &v).unwrap(), "open {{ brace");
    }

    #[test]
    fn a_missing_or_empty_variable_is_named() {
        let v = values(json!({"style": "", "obj": {}}));
        assert_eq!(fill("{{style}}", &v), Err("style".into()));
        assert_eq!(fill("{{obj}}", &v), Err("obj".into()));
        assert_eq!(fill("a {{place}}", &v), Err("place".into()));
    }
}
