//! midjourney-proxy's wire format: the submit bodies, the `{code, description, result,
//! properties}` envelope and its codes, the task object, and the customIds of the buttons.
//! Pure functions.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::base::job_errors;
use crate::base::operation::{BlendShape, Direction, Operation, Strength};
use crate::providers::{GenerateRequest, InputImage, ProviderError};

/// One submit: its path under the proxy's base URL, and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    pub path: &'static str,
    pub body: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubmitReply {
    pub code: i64,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub properties: Option<Value>,
}

/// The task object of `fetch` (fields Easel reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReply {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub progress: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub fail_reason: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub buttons: Option<Value>,
    #[serde(default)]
    pub properties: Option<Value>,
}

impl TaskReply {
    /// The message hash its images are acted on by: `properties.messageHash`, else the last
    /// part of a button's customId.
    pub fn message_hash(&self) -> Option<String> {
        let from_props = self
            .properties
            .as_ref()
            .and_then(|p| p["messageHash"].as_str())
            .map(str::to_owned);
        from_props.or_else(|| {
            self.buttons.as_ref()?.as_array()?.iter().find_map(|b| {
                let id = b["customId"].as_str()?;
                id.starts_with("MJ::JOB::upsample::")
                    .then(|| id.rsplit("::").next().map(str::to_owned))?
            })
        })
    }

    /// The progress it shows (`"45%"`, `"45"`), when it is a number from 0 to 100.
    pub fn percent(&self) -> Option<u8> {
        let text = self.progress.as_deref()?.trim();
        let number = text.strip_suffix('%').unwrap_or(text).trim();
        number.parse::<u8>().ok().filter(|p| *p <= 100)
    }

    /// A describe's four prompts.
    pub fn final_prompt(&self) -> Option<String> {
        self.properties
            .as_ref()?
            .get("finalPrompt")?
            .as_str()
            .map(str::to_owned)
    }
}

/// What a submit's code means: a task id to wait for, or the failure.
pub fn outcome(reply: SubmitReply) -> Result<String, ProviderError> {
    let description = reply.description.unwrap_or_default();
    let result = reply.result.as_ref().and_then(|r| match r {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let message = format!("midjourney-proxy code {}: {description}", reply.code);
    match reply.code {
        // Submitted, waiting for a window (the task then runs), or queued: wait for it.
        1 | 21 | 22 => result.ok_or_else(|| ProviderError::Retryable {
            code: job_errors::UPSTREAM_MALFORMED_RESPONSE.into(),
            message: format!("{message} without a task id"),
            retry_after: None,
        }),
        23 | 9 => Err(ProviderError::Retryable {
            code: job_errors::UPSTREAM_UNAVAILABLE.into(),
            message,
            retry_after: None,
        }),
        24 => {
            let word = reply
                .properties
                .as_ref()
                .and_then(|p| p["bannedWord"].as_str())
                .unwrap_or("a banned word");
            Err(ProviderError::ContentBlocked {
                reason: format!("BANNED_PROMPT: {word}"),
            })
        }
        // No account on this proxy: another key may have one.
        3 if !description.contains("关联任务") => Err(ProviderError::KeyRejected { message }),
        _ => Err(ProviderError::Final {
            code: job_errors::UPSTREAM_BAD_REQUEST.into(),
            message,
        }),
    }
}

/// A task that ended in FAILURE.
pub fn failure(task: &TaskReply) -> ProviderError {
    let reason = task
        .fail_reason
        .clone()
        .unwrap_or_else(|| "the task failed".into());
    if reason.contains("banned") || reason.contains("敏感") {
        return ProviderError::ContentBlocked { reason };
    }
    ProviderError::Final {
        code: job_errors::UPSTREAM_REJECTED.into(),
        message: format!("midjourney task failed: {reason}"),
    }
}

fn data_url(image: &InputImage) -> String {
    format!(
        "data:{};base64,{}",
        image.mime,
        base64::engine::general_purpose::STANDARD.encode(&image.bytes)
    )
}

/// The parent task an action acts on: its upstream id and message hash (from the parent
/// job's result meta), and whether it is a grid.
struct Parent {
    task_id: String,
    hash: String,
    grid: bool,
}

fn parent_of(request: &GenerateRequest) -> Option<Parent> {
    let up = request.extra.parent.as_ref()?;
    Some(Parent {
        task_id: up["taskId"].as_str()?.to_owned(),
        hash: up["messageHash"].as_str()?.to_owned(),
        grid: up["grid"].as_bool().unwrap_or(true),
    })
}

/// The submit for `request`: `change` for the open Java edition (U, V, reroll only),
/// otherwise `action` with the customId of the matching button.
pub fn build_submit(request: &GenerateRequest, use_change: bool) -> Result<Submit, String> {
    let op = request.extra.operation;
    let index = request.extra.parent_index.unwrap_or(1).clamp(1, 4);
    let images: Vec<String> = request.input_images().map(data_url).collect();
    match op {
        Operation::Generate | Operation::Edit => return Ok(imagine(request, images)),
        Operation::Reroll if request.extra.parent.is_none() => return Ok(imagine(request, images)),
        Operation::Describe => {
            let image = images.first().ok_or("describe needs an image")?;
            return Ok(Submit {
                path: "/mj/submit/describe",
                body: json!({ "base64": image }),
            });
        }
        Operation::Blend(shape) => {
            let dimensions = match shape {
                BlendShape::Portrait => "PORTRAIT",
                BlendShape::Square => "SQUARE",
                BlendShape::Landscape => "LANDSCAPE",
            };
            return Ok(Submit {
                path: "/mj/submit/blend",
                body: json!({ "base64Array": images, "dimensions": dimensions }),
            });
        }
        _ => {}
    }
    let parent = parent_of(request)
        .ok_or("the parent job was not made by midjourney: nothing to act on upstream")?;
    if use_change {
        let (action, index) = match op {
            Operation::Upscale { .. } if parent.grid => ("UPSCALE", Some(index)),
            Operation::Variation(_) if parent.grid => ("VARIATION", Some(index)),
            Operation::Reroll => ("REROLL", None),
            _ => return Err(format!("the proxy's change API cannot do '{op}'")),
        };
        let mut body = json!({ "taskId": parent.task_id, "action": action });
        if let Some(index) = index {
            body["index"] = json!(index);
        }
        return Ok(Submit {
            path: "/mj/submit/change",
            body,
        });
    }
    let hash = &parent.hash;
    let custom_id = match op {
        Operation::Upscale { .. } if parent.grid => format!("MJ::JOB::upsample::{index}::{hash}"),
        Operation::Upscale { factor, style } => {
            let style = match style {
                crate::base::operation::UpscaleStyle::Subtle => "subtle",
                crate::base::operation::UpscaleStyle::Creative => "creative",
            };
            let kind = if factor >= 4 {
                "v5_4x".to_owned()
            } else {
                format!("v6_2x_{style}")
            };
            format!("MJ::JOB::upsample_{kind}::1::{hash}::SOLO")
        }
        Operation::Variation(_) if parent.grid => format!("MJ::JOB::variation::{index}::{hash}"),
        Operation::Variation(Strength::Subtle) => {
            format!("MJ::JOB::low_variation::1::{hash}::SOLO")
        }
        Operation::Variation(Strength::Strong) => {
            format!("MJ::JOB::high_variation::1::{hash}::SOLO")
        }
        Operation::Reroll => format!("MJ::JOB::reroll::0::{hash}::SOLO"),
        Operation::Outpaint(direction) => {
            let side = match direction {
                Direction::Left => "left",
                Direction::Right => "right",
                Direction::Up => "up",
                Direction::Down => "down",
            };
            format!("MJ::JOB::pan_{side}::1::{hash}::SOLO")
        }
        Operation::ZoomOut { percent } => {
            let keep = if percent >= 175 { 50 } else { 75 };
            format!("MJ::Outpaint::{keep}::1::{hash}::SOLO")
        }
        _ => return Err(format!("'{op}' has no midjourney button")),
    };
    Ok(Submit {
        path: "/mj/submit/action",
        body: json!({ "taskId": parent.task_id, "customId": custom_id }),
    })
}

fn imagine(request: &GenerateRequest, images: Vec<String>) -> Submit {
    let mut body = json!({ "prompt": request.prompt });
    if !images.is_empty() {
        body["base64Array"] = json!(images);
    }
    Submit {
        path: "/mj/submit/imagine",
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::job::Mode;
    use crate::base::operation::UpscaleStyle;
    use crate::providers::RequestExtras;

    #[test]
    fn progress_reads_both_editions_forms_and_nothing_else() {
        let at = |p: &str| {
            TaskReply {
                progress: Some(p.into()),
                ..TaskReply::default()
            }
            .percent()
        };
        assert_eq!(at("45%"), Some(45));
        assert_eq!(at(" 7 "), Some(7));
        assert_eq!(at("100%"), Some(100));
        assert_eq!(at(""), None);
        assert_eq!(at("250%"), None);
        assert_eq!(at("-1%"), None);
        assert_eq!(TaskReply::default().percent(), None);
    }

    fn request(operation: Operation, parent: Option<Value>) -> GenerateRequest {
        GenerateRequest {
            job_id: "j".into(),
            prompt: "a cat".into(),
            mode: Mode::Final,
            input_image: None,
            seed: None,
            n: 4,
            aspect_ratio: None,
            image_size: None,
            extra: RequestExtras {
                operation,
                parent,
                parent_index: Some(2),
                ..RequestExtras::default()
            },
        }
    }

    #[test]
    fn buttons_are_the_proxys_custom_ids() {
        let grid = Some(json!({"taskId": "171", "messageHash": "h1", "grid": true}));
        let single = Some(json!({"taskId": "172", "messageHash": "h2", "grid": false}));
        let up = Operation::Upscale {
            style: UpscaleStyle::Subtle,
            factor: 2,
        };
        let s = build_submit(&request(up, grid.clone()), false).expect("ok");
        assert_eq!(s.path, "/mj/submit/action");
        assert_eq!(
            s.body,
            json!({"taskId": "171", "customId": "MJ::JOB::upsample::2::h1"})
        );
        let cases = [
            (
                Operation::ZoomOut { percent: 200 },
                "MJ::Outpaint::50::1::h2::SOLO",
            ),
            (
                Operation::ZoomOut { percent: 150 },
                "MJ::Outpaint::75::1::h2::SOLO",
            ),
            (
                Operation::Outpaint(Direction::Left),
                "MJ::JOB::pan_left::1::h2::SOLO",
            ),
            (
                Operation::Variation(Strength::Strong),
                "MJ::JOB::high_variation::1::h2::SOLO",
            ),
            (Operation::Reroll, "MJ::JOB::reroll::0::h2::SOLO"),
        ];
        for (op, id) in cases {
            let s = build_submit(&request(op, single.clone()), false).expect("ok");
            assert_eq!(s.body["customId"], id, "{op}");
        }
        let change = build_submit(&request(up, grid), true).expect("ok");
        assert_eq!(
            (change.path, change.body),
            (
                "/mj/submit/change",
                json!({"taskId": "171", "action": "UPSCALE", "index": 2})
            )
        );
        assert!(build_submit(&request(up, None), false).is_err());
        let imagine = build_submit(&request(Operation::Generate, None), false).expect("ok");
        assert_eq!(
            (imagine.path, imagine.body),
            ("/mj/submit/imagine", json!({"prompt": "a cat"}))
        );
    }

    #[test]
    fn codes_map_to_outcomes() {
        let reply = |code: i64| SubmitReply {
            code,
            description: Some("d".into()),
            result: Some(json!("1730000000000123")),
            properties: Some(json!({"bannedWord": "gore"})),
        };
        for code in [1, 21, 22] {
            assert_eq!(outcome(reply(code)).expect("id"), "1730000000000123");
        }
        assert!(matches!(
            outcome(reply(23)),
            Err(ProviderError::Retryable { .. })
        ));
        assert!(matches!(
            outcome(reply(9)),
            Err(ProviderError::Retryable { .. })
        ));
        assert!(
            matches!(outcome(reply(24)), Err(ProviderError::ContentBlocked { reason }) if reason.contains("gore"))
        );
        assert!(matches!(
            outcome(reply(3)),
            Err(ProviderError::KeyRejected { .. })
        ));
        assert!(matches!(
            outcome(reply(4)),
            Err(ProviderError::Final { .. })
        ));
    }
}
