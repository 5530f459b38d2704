//! The job as the rest of Easel sees it: statuses, the rows the store returns, and the pure
//! rules for moving between statuses.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::base::clock::Millis;
pub use crate::base::operation::Operation;

/// A job's place in its life. `QUEUED` → `RUNNING` → `SUCCEEDED` | `FAILED`; a retryable failure
/// goes `RUNNING` → `RETRYING` → `RUNNING`; `QUEUED`/`RETRYING` → `CANCELED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "QUEUED",
            JobStatus::Running => "RUNNING",
            JobStatus::Retrying => "RETRYING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Canceled => "CANCELED",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled
        )
    }

    /// Waiting to be claimed by a worker.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Retrying)
    }

    /// Any job that has not finished may be canceled: a running attempt is aborted.
    pub fn can_cancel(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality tier the client asked for; providers map each to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Draft,
    Final,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Draft => "draft",
            Mode::Final => "final",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "draft" => Some(Mode::Draft),
            "final" => Some(Mode::Final),
            _ => None,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    /// Insertion order; pagination and queue position use it.
    pub seq: i64,
    pub tenant_id: String,
    pub status: JobStatus,
    pub prompt: String,
    pub mode: Mode,
    pub input_image_url: Option<String>,
    pub params: JobParams,
    pub provider: String,
    /// Object-store keys of the results; URLs are made from them when read.
    pub result_keys: Vec<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// An unstarted job is canceled at this time (`Cancel-After`).
    pub cancel_at: Option<Millis>,
    /// The job fails at this time whatever its state (per-job deadline).
    pub deadline_at: Millis,
    /// Upstream metadata of the successful attempt (usage, model version, caption...).
    pub result_meta: Option<serde_json::Value>,
    /// The follower told of its end, start and progress (`NewJob::follow_up`).
    pub follow_up: Option<String>,
}

/// Optional generation parameters beyond the origin's three fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<String>,
    /// The upstream model the client named (the OpenAI facade's `model`); `None`: the
    /// provider's model for the mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Object-store keys of input images the client uploaded with the request, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Object-store key of the edit mask, applied to the first input image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// A variation of the input image rather than a generation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub variation: bool,
    /// Parameters only the job's provider reads (OpenAI's `size`, `quality`, ...), checked by
    /// that provider at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
    /// The tenant's uploads (`POST /v1/uploads`) the job takes as inputs; each holds a
    /// reference (`refCount`) until the job ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_image_ids: Vec<String>,
    /// What the job does (`generate` unless said).
    #[serde(default, skip_serializing_if = "Operation::is_generate")]
    pub operation: Operation,
    /// The job whose image this one works on (an upscale's grid), with `parent_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
    /// Which of the parent's images, from 1 (U2 is index 2); `None`: the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_index: Option<u32>,
    /// Four images and a 2x2 grid of them composed by Easel, stored last (an imagine).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grid: bool,
    /// Earlier turns of a conversation the request continues (an editor session), oldest
    /// first; the provider sends them before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Turn>,
}

/// One earlier turn of a conversation: who spoke, what was said, the images it carried
/// (object-store keys) and, for a model turn, what the provider needs to continue from it
/// (Gemini's `thoughtSignature`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    /// `user` or `model`.
    pub role: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
}

/// A validated submission, ready to be written.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub tenant_id: String,
    pub prompt: String,
    pub mode: Mode,
    pub input_image_url: Option<String>,
    pub params: JobParams,
    pub provider: String,
    pub max_attempts: u32,
    pub created_at: Millis,
    pub cancel_at: Option<Millis>,
    pub deadline_at: Millis,
    /// Idempotency key and the fingerprint of the request body it was first used with.
    pub idempotency: Option<IdempotencyClaim>,
    /// The job's own webhook receiver; wins over the tenant's webhook URL.
    pub webhook_url: Option<String>,
    /// The price held from an account in the submit transaction (settled or released when
    /// the job ends); `None` for a free job.
    pub charge: Option<crate::base::ledger::Charge>,
    /// The follower (`jobs::followups`) to tell once the job ends: the capability that made
    /// the job for something of its own (an editor message, a photo task); `None` for none.
    pub follow_up: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    pub request_hash: String,
}

/// What a submit did.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    Created {
        job_id: String,
    },
    /// The idempotency key was seen before with the same body: here is its job.
    Replayed {
        job_id: String,
        status: JobStatus,
    },
    /// The idempotency key was seen before with a different body.
    KeyReused,
    /// The charge's account cannot pay: nothing was written.
    InsufficientCredits {
        required: i64,
        available: i64,
    },
}

/// A job handed to a worker, with the fencing token that proves its lease.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: Job,
    pub fence: i64,
    pub lease_until: Millis,
}

/// Who claims a job at its submit ([`crate::store::Store::job_submit_claimed`]): the worker of
/// the submitting process, and the lease it takes.
#[derive(Debug, Clone)]
pub struct Claimer {
    pub worker_id: String,
    pub lease: std::time::Duration,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone)]
pub enum Finish {
    Succeeded {
        result_keys: Vec<String>,
        meta: Option<serde_json::Value>,
    },
    /// Back to the queue as RETRYING, runnable again at `run_at`.
    Retry {
        run_at: Millis,
        error_code: String,
        error_message: String,
    },
    Failed {
        error_code: String,
        error_message: String,
    },
}

impl Finish {
    pub fn status(&self) -> JobStatus {
        match self {
            Finish::Succeeded { .. } => JobStatus::Succeeded,
            Finish::Retry { .. } => JobStatus::Retrying,
            Finish::Failed { .. } => JobStatus::Failed,
        }
    }
}

/// One row of the audit trail: a status change of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    pub id: i64,
    pub job_id: String,
    pub tenant_id: String,
    pub status: JobStatus,
    pub attempt: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub at: Millis,
    /// A progress report of the running attempt (0-99), not a status change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
}

/// Filter and position of one page of `GET /v1/jobs`.
#[derive(Debug, Clone)]
pub struct JobListQuery {
    pub tenant_id: String,
    pub status: Option<JobStatus>,
    pub limit: u32,
    /// Only jobs with `seq` below this (the previous page's last).
    pub before_seq: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct JobPage {
    pub items: Vec<Job>,
    pub has_more: bool,
}

/// A new job id: time-ordered and URL-safe (lowercase ULID).
pub fn new_job_id() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_rules() {
        for st in JobStatus::ALL {
            assert_eq!(JobStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(JobStatus::parse("queued"), None);
        assert!(JobStatus::Queued.can_cancel() && JobStatus::Retrying.can_cancel());
        assert!(JobStatus::Running.can_cancel() && !JobStatus::Succeeded.can_cancel());
        assert!(JobStatus::Canceled.is_terminal() && !JobStatus::Retrying.is_terminal());
    }
}
