//! Fakes of upstream services, for tests and benchmarks.
//!
//! Owns: small local servers that speak an upstream's real wire format, inject faults on
//! demand and record what they were sent, so the providers, the key pool and the worker can
//! be exercised end to end without a network or real keys.
//! Must not: be used by `serve` or any production path. Nothing outside tests and benchmarks
//! constructs these types; they live in the library (not under `#[cfg(test)]`) only so that
//! integration tests and `easel-bench` can share them.

pub mod fake_gemini;
pub mod fake_mj_proxy;
pub mod fake_n8n;
pub mod fake_openai;
pub mod fake_wechat;
