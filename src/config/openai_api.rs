//! `[openai_api]`: the OpenAI-compatible facade's settings: which provider serves each
//! `model`, how long a call waits for its job, and whether a client that hangs up cancels it.

use serde::{Deserialize, Serialize};

/// One row of the routing table: models matching `pattern` (exact, or a prefix ending in `*`)
/// go to `provider`, as `model` when set (an alias), else under their own name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRoute {
    pub pattern: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl ModelRoute {
    fn new(pattern: &str, provider: &str, model: Option<&str>) -> ModelRoute {
        ModelRoute {
            pattern: pattern.into(),
            provider: provider.into(),
            model: model.map(str::to_owned),
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => model == self.pattern,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenAiApiConfig {
    /// The first route whose pattern matches a request's `model` serves it.
    pub models: Vec<ModelRoute>,
    /// How long a call waits for its job before answering 504 (the job goes on; its id is in
    /// the answer). Under the official SDK's 600 s read timeout.
    pub wait_secs: u64,
    /// Cancel a still-waiting job when its client hangs up. Off: the job runs on and can be read
    /// through the job API, which is what a client retrying with `Idempotency-Key` wants.
    pub cancel_on_disconnect: bool,
}

impl Default for OpenAiApiConfig {
    fn default() -> Self {
        OpenAiApiConfig {
            models: vec![
                ModelRoute::new("gpt-image-*", "openai", None),
                ModelRoute::new("chatgpt-image-*", "openai", None),
                ModelRoute::new("dall-e-2", "openai", None),
                ModelRoute::new("dall-e-3", "openai", None),
                ModelRoute::new("gemini-*", "gemini", None),
                ModelRoute::new("imagen-*", "gemini", None),
                ModelRoute::new("nano-banana", "gemini", Some("gemini-2.5-flash-image")),
                ModelRoute::new(
                    "nano-banana-pro",
                    "gemini",
                    Some("gemini-3-pro-image-preview"),
                ),
                ModelRoute::new("local", "local", None),
            ],
            wait_secs: 300,
            cancel_on_disconnect: false,
        }
    }
}

impl OpenAiApiConfig {
    /// The route of `model`, if any.
    pub fn route(&self, model: &str) -> Option<&ModelRoute> {
        self.models.iter().find(|r| r.matches(model))
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.wait_secs == 0 || self.wait_secs > 3600 {
            return Err(("openai_api.wait_secs", "must be between 1 and 3600".into()));
        }
        if let Some(bad) = self.models.iter().find(|r| r.pattern.is_empty()) {
            return Err((
                "openai_api.models",
                format!("a route to '{}' has an empty pattern", bad.provider),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes() {
        let c = OpenAiApiConfig::default();
        c.validate().expect("valid");
        let route = |m: &str| {
            c.route(m)
                .map(|r| (r.provider.as_str(), r.model.as_deref()))
        };
        assert_eq!(route("gpt-image-1"), Some(("openai", None)));
        assert_eq!(route("dall-e-3"), Some(("openai", None)));
        assert_eq!(route("dall-e-4"), None);
        assert_eq!(route("gemini-2.5-flash-image"), Some(("gemini", None)));
        assert_eq!(
            route("nano-banana"),
            Some(("gemini", Some("gemini-2.5-flash-image")))
        );
        assert_eq!(route("midjourney"), None);
    }
}
