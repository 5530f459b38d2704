//! The photo app (the AI photo seed, `photo-api.md`): scenes are prompt templates, a task is a
//! batch of images of one type made from a user's photos, and a work is what a task made.
//!
//! Owns: filling a scene's template ([`template`]), the task types and the provider and model
//! each one runs on (`[photo]` in the configuration, [`PhotoConfig`]), and what happens when a
//! task's jobs end ([`follower`]: the task ends and its work is written, once), and the
//! `workflow` provider for types run on an n8n workflow ([`workflow`]).
//! A task of N images is N jobs of one image each, created with their credit holds in one
//! transaction (`store::photo`), so each image that succeeds settles its credit and each one
//! that fails releases it.
//! Must not touch: HTTP (the routes are `api::consumer::photo`), SQL, the ledger's entries
//! (holds are written and resolved by the store with the jobs).

pub mod follower;
pub mod template;
pub mod workflow;

use serde::{Deserialize, Serialize};

use crate::base::secret::Secret;
use crate::base::settings::Invalid;

/// The task types the origin knows, in the order its queue stats list them.
pub const TASK_TYPES: [&str; 3] = ["fitting", "photography", "travel"];

/// `[photo]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PhotoConfig {
    pub fitting: TaskTypeConfig,
    pub photography: TaskTypeConfig,
    pub travel: TaskTypeConfig,
    /// The deployment's secret for the workflow's callbacks (`?secret=` in their URL, or
    /// the HMAC of their body in `X-Easel-Signature`); required once a type has a
    /// `workflow_url`. Also signs the webhook calls.
    pub workflow_secret: Option<Secret>,
    /// Easel's address as the workflow reaches it: when set, the webhook body carries
    /// `callback_url` and `failed_callback_url` (with the secret).
    pub public_url: Option<String>,
    /// A workflow task's jobs fail (and release their credits) this long after the task
    /// was made without a callback.
    pub workflow_timeout_secs: u64,
    /// One webhook call's (or image download's) bound.
    pub workflow_request_timeout_secs: u64,
}

impl Default for PhotoConfig {
    fn default() -> Self {
        PhotoConfig {
            fitting: TaskTypeConfig::default(),
            photography: TaskTypeConfig::default(),
            travel: TaskTypeConfig::default(),
            workflow_secret: None,
            public_url: None,
            workflow_timeout_secs: 600,
            workflow_request_timeout_secs: 120,
        }
    }
}

impl PhotoConfig {
    /// Whether a task type runs on a workflow.
    pub fn uses_workflow(&self) -> bool {
        TASK_TYPES
            .iter()
            .filter_map(|t| self.task_type(t))
            .any(|t| t.workflow_url.is_some())
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        let secret = self.workflow_secret.as_ref().map_or("", |s| s.expose());
        if self.uses_workflow() && secret.len() < 16 {
            return Err((
                "photo.workflow_secret",
                "a task type has a workflow_url: set a secret of 16 characters or more".into(),
            ));
        }
        if self.workflow_timeout_secs == 0 || self.workflow_request_timeout_secs == 0 {
            return Err(("photo.workflow_timeout_secs", "must be above 0".into()));
        }
        Ok(())
    }

    /// The settings of a task type; `None` for a type the app does not know.
    pub fn task_type(&self, name: &str) -> Option<&TaskTypeConfig> {
        match name {
            "fitting" => Some(&self.fitting),
            "photography" => Some(&self.photography),
            "travel" => Some(&self.travel),
            _ => None,
        }
    }
}

/// Where one task type's images are made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskTypeConfig {
    /// The provider; `None`: the default provider (`providers.default`).
    pub provider: Option<String>,
    /// The upstream model; `None`: the provider's model for the mode.
    pub model: Option<String>,
    /// The n8n webhook the type's tasks are posted to (the origin's
    /// `N8N_WEBHOOK_BASE_URL/<webhook>`); set, the type runs on the `workflow` provider
    /// ([`workflow`]) and `provider`/`model` are not used.
    pub workflow_url: Option<String>,
}

/// A random (version 4) UUID: the origin's task, work and scene ids.
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
