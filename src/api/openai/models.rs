//! `GET /v1/models`: the models Easel can route now, as OpenAI's model list. A route's exact
//! name is listed, and for a prefix route (`gpt-image-*`) the provider's known models under it,
//! when the provider needs no key or has an enabled one.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::OpenAiTenant;
use crate::app::App;

/// Model names a provider knows, for prefix routes.
fn known_models(app: &App, provider: &str) -> Vec<String> {
    match provider {
        "openai" => crate::providers::openai::KNOWN_MODELS
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
        "gemini" => app.config.providers.gemini.models.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn available(app: &App, provider: &str) -> bool {
    app.providers
        .get(provider)
        .is_some_and(|p| !p.capabilities().needs_key || app.keys.enabled_keys(provider) > 0)
}

pub async fn list(
    State(app): State<App>,
    OpenAiTenant(_tenant): OpenAiTenant,
) -> Result<Json<Value>, OpenAiError> {
    let mut ids: Vec<(String, String)> = Vec::new();
    for route in &app.config.openai_api.models {
        if !available(&app, &route.provider) {
            continue;
        }
        let names = match route.pattern.strip_suffix('*') {
            None => vec![route.pattern.clone()],
            Some(_) => known_models(&app, &route.provider)
                .into_iter()
                .filter(|m| route.matches(m))
                .collect(),
        };
        for name in names {
            if !ids.iter().any(|(id, _)| *id == name) {
                ids.push((name, route.provider.clone()));
            }
        }
    }
    let data: Vec<Value> = ids
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
