//! The photo app (the AI photo seed, `photo-api.md`): scenes are prompt templates, a task is a
//! batch of images of one type made from a user's photos, and a work is what a task made.
//!
//! Owns: filling a scene's template ([`template`]), the task types and the provider and model
//! each one runs on (`[photo]` in the configuration, [`PhotoConfig`]), and what happens when a
//! task's jobs end ([`follower`]: the task ends and its work is written, once).
//! A task of N images is N jobs of one image each, created with their credit holds in one
//! transaction (`store::photo`), so each image that succeeds settles its credit and each one
//! that fails releases it.
//! Must not touch: HTTP (the routes are `api::consumer::photo`), SQL, the ledger's entries
//! (holds are written and resolved by the store with the jobs).

pub mod follower;
pub mod template;

use serde::{Deserialize, Serialize};

/// The task types the origin knows, in the order its queue stats list them.
pub const TASK_TYPES: [&str; 3] = ["fitting", "photography", "travel"];

/// `[photo]` in the configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PhotoConfig {
    pub fitting: TaskTypeConfig,
    pub photography: TaskTypeConfig,
    pub travel: TaskTypeConfig,
}

impl PhotoConfig {
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
