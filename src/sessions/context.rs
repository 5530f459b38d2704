//! The context a generating message hands its job: the session's earlier turns, oldest
//! first, each with its images' object keys and, for an answer, what the provider needs to
//! continue from it (Gemini's `thoughtSignature`, kept in the answer's `params`).
//!
//! Answers that report a failure (no image) are left out: there is nothing to continue from.

use crate::base::image::ImageOwner;
use crate::base::job::Turn;
use crate::store::sessions::{EditorMessage, SessionOwner};
use crate::uploads::Library;

/// Whether an assistant message reports a job that succeeded (or was written by a client).
fn usable(message: &EditorMessage) -> bool {
    message.role != "assistant"
        || message
            .params
            .get("status")
            .and_then(|s| s.as_str())
            .is_none_or(|s| s == "SUCCEEDED")
}

/// The object keys of the owner's images among `ids` (other ids are skipped).
pub async fn image_keys(images: &Library, owner: &ImageOwner, ids: &[String]) -> Vec<String> {
    let mut keys = Vec::with_capacity(ids.len());
    for id in ids {
        if let Ok(record) = images.get(owner, id).await {
            keys.push(record.object.key);
        }
    }
    keys
}

/// `messages` (oldest first) as turns.
pub async fn turns(
    images: &Library,
    owner: &SessionOwner,
    messages: &[EditorMessage],
) -> Vec<Turn> {
    let image_owner = ImageOwner::user(&owner.tenant_id, &owner.user_id);
    let mut turns = Vec::with_capacity(messages.len());
    for message in messages.iter().filter(|m| usable(m)) {
        let model = message.role == "assistant";
        turns.push(Turn {
            role: if model { "model" } else { "user" }.into(),
            text: message.text.clone(),
            image_keys: image_keys(images, &image_owner, &message.image_ids).await,
            thought_signature: model
                .then(|| {
                    message
                        .params
                        .get("thoughtSignature")?
                        .as_str()
                        .map(str::to_owned)
                })
                .flatten(),
        });
    }
    turns
}
