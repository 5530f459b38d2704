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

/// Serves `router` on an ephemeral port of `127.0.0.1` until `stop`; its address. Panics if
/// it cannot bind (a broken test host), naming the fake.
pub async fn serve_local(
    name: &str,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) -> std::net::SocketAddr {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("{name} cannot bind 127.0.0.1:0: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("{name} has no address: {e}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    addr
}
