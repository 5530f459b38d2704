//! Every `errorCode` a job can carry: the one list clients, the worker, the maintenance pass,
//! both store engines (their SQL included) and the providers take the codes from.
//!
//! Owns: the codes' spelling and what each means. Must not touch: anything else; a code is a
//! constant whose value is its own name, so a use cannot drift from the list.
//!
//! "Retried" means the attempt ends RETRYING (after the backoff of `jobs::retry`) while the job
//! has attempts left, and FAILED with the same code once it has none; "final" means FAILED (or
//! CANCELED) at once. A RETRYING job shows the code of its last attempt until the next one.

/// Declares each code as a constant named and valued alike, and [`ALL`] listing them.
macro_rules! job_error_codes {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        $($(#[$doc])* pub const $name: &str = stringify!($name);)*

        /// Every code above, in the order written.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

job_error_codes! {
    // ---- Easel's own: the worker, the maintenance pass and the store ----

    /// The job's deadline passed: the worker gave up the provider call, or the maintenance
    /// pass found the job still waiting or running. Final.
    JOB_TIMEOUT,
    /// The worker running the job stopped heartbeating and its lease expired (a crash, a hang,
    /// a lost database connection); the maintenance pass takes the job back. Retried at once,
    /// the lost attempt counted.
    WORKER_LOST,
    /// The worker shut down cleanly and gave the job back to the queue. Retried at once, the
    /// attempt not counted.
    WORKER_SHUTDOWN,
    /// The job was still waiting when its `Cancel-After` passed; it ends CANCELED. Final.
    CANCEL_AFTER_ELAPSED,
    /// The job names a provider the worker that claimed it does not have. Final.
    PROVIDER_UNAVAILABLE,
    /// The provider answered without an error and without an image. Final.
    NO_IMAGE,
    /// Writing the images to object storage failed. Retried.
    STORAGE_ERROR,

    // ---- what every provider reports through `ProviderError` ----

    /// Every upstream key the attempt tried was rejected (401, 403, an invalid key); the key
    /// pool disabled them. Retried.
    UPSTREAM_KEY_REJECTED,
    /// The upstream refused the prompt or the image for its content (a safety block). Final.
    CONTENT_BLOCKED,

    // ---- upstream failures a provider classifies (Gemini today) ----

    /// 429 on a per-minute (or unspecified) quota. Retried, after the upstream's delay if it
    /// gave one.
    UPSTREAM_RATE_LIMITED,
    /// 429 on a per-day quota: the Cloud project is spent until the daily reset. Retried.
    UPSTREAM_QUOTA_EXHAUSTED_DAILY,
    /// 5xx from the upstream. Retried.
    UPSTREAM_UNAVAILABLE,
    /// No answer in time (the client's timeout, or 408). Retried.
    UPSTREAM_TIMEOUT,
    /// Could not connect, or the connection broke before the body was complete. Retried.
    UPSTREAM_CONNECTION,
    /// The body is not the JSON (or the image) it should be. Retried.
    UPSTREAM_MALFORMED_RESPONSE,
    /// The body is JSON cut short. Retried.
    UPSTREAM_TRUNCATED_RESPONSE,
    /// 409 or 499: the upstream gave up on the request; another try may pass. Retried.
    UPSTREAM_ABORTED,
    /// 400: the upstream refused the request as built. Final.
    UPSTREAM_BAD_REQUEST,
    /// 404: no such model (or method) at the configured base URL. Final.
    UPSTREAM_NOT_FOUND,
    /// Any other 4xx. Final.
    UPSTREAM_REJECTED,
    /// 3xx: redirects are not followed, so the base URL is probably wrong. Final.
    UPSTREAM_REDIRECT,
    /// The upstream's body was larger than the configured bound. Final.
    UPSTREAM_RESPONSE_TOO_LARGE,
    /// The request does not fit the chosen model (checked before any call). Final.
    INVALID_REQUEST,
    /// The provider was called without the upstream key it needs. Final.
    PROVIDER_KEY_MISSING,
    /// The local renderer's task failed. Retried.
    RENDER_FAILED,

    // ---- the input image a client gave (`inputImageUrl`) ----

    /// The input image URL does not parse, or is not `http(s)`. Final.
    INPUT_IMAGE_INVALID_URL,
    /// The input image URL points at a private, loopback or otherwise forbidden address.
    /// Final.
    INPUT_IMAGE_FORBIDDEN_ADDRESS,
    /// The input image host could not be reached, or the download broke off. Retried.
    INPUT_IMAGE_UNREACHABLE,
    /// The input image URL answered an HTTP error or a bad redirect. Retried for 5xx and 429,
    /// final otherwise.
    INPUT_IMAGE_FETCH_FAILED,
    /// The input image is larger than the configured bound. Final.
    INPUT_IMAGE_TOO_LARGE,
    /// The input URL is not an image (its type, or its bytes). Final.
    INPUT_IMAGE_UNSUPPORTED,
    /// An image the client uploaded with the job (the OpenAI facade's edits) is no longer in
    /// object storage. Final.
    INPUT_IMAGE_MISSING,
    /// The upload named in `inputImageIds` is gone (or its stored file is). Final.
    INPUT_IMAGE_NOT_FOUND,
    /// The parent job's image the operation works on (`parentJobId`, `parentIndex`) is gone:
    /// the job was deleted or its image expired. Final.
    PARENT_IMAGE_NOT_FOUND,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ALL {
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{code}"
            );
        }
        assert_eq!(JOB_TIMEOUT, "JOB_TIMEOUT");
    }
}
