//! `[midjourney]` in the configuration: the Midjourney API seed's routes (`/v1/api/trigger/*`):
//! which provider runs them, the banned words (the origin's `banned_words.txt`), the secret
//! the origin's Discord bot puts in its callback URLs, and the wait-queue bound.

use serde::{Deserialize, Serialize};

use crate::base::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MidjourneyConfig {
    /// The provider MJ calls run on; `None`: `providers.default`.
    pub provider: Option<String>,
    /// Words refused in a prompt, matched as the origin does: case-insensitively against the
    /// prompt's whitespace-separated words. A refused call costs nothing.
    pub banned_words: Vec<String>,
    /// The secret the origin's bot sends as `?secret=` on `POST /midjourney/result` and
    /// `POST /queue/release`; unset: those routes refuse every call.
    pub callback_secret: Option<Secret>,
    /// Tasks of a tenant still unfinished at once; past it a call answers code 15 (the
    /// origin's `WAIT_SIZE` + `CONCUR_SIZE`).
    pub max_waiting: u64,
}

impl Default for MidjourneyConfig {
    fn default() -> Self {
        MidjourneyConfig {
            provider: None,
            banned_words: Vec::new(),
            callback_secret: None,
            max_waiting: 9999,
        }
    }
}

impl MidjourneyConfig {
    /// The banned words of `prompt`, lower-cased, each once, in the prompt's order.
    pub fn banned_in(&self, prompt: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for word in prompt.split_whitespace() {
            let word = word.to_lowercase();
            let banned = self
                .banned_words
                .iter()
                .any(|b| b.trim().to_lowercase() == word);
            if banned && !found.contains(&word) {
                found.push(word);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_words_match_whole_words_in_any_case() {
        let config = MidjourneyConfig {
            banned_words: vec!["Gore".into(), "blood".into()],
            ..MidjourneyConfig::default()
        };
        assert_eq!(
            config.banned_in("a GORE scene, blood blood"),
            ["gore", "blood"]
        );
        assert!(config.banned_in("gory bloodline").is_empty());
    }
}
