//! Benchmarks for Easel, one mode per subcommand; each prints `RESULT` lines.
//!
//! - `easel-bench [--jobs N] [--connections C] [--rate R] [--seconds S]`: end to end on the
//!   embedded default (see [`e2e`]).
//! - `easel-bench drain [--jobs N]`: the worker alone on a backlog (see [`e2e::drain`]).
//! - `easel-bench stats DB_PATH`: jobs/s and latency of a database another process filled.
//! - `easel-bench limiter`: GCRA decisions/s through the `Limiter` trait (see [`limiter`]).
//! - `easel-bench gemini`: jobs through the fake Gemini and the key pool (see [`gemini`]).
//! - `easel-bench claim`: PostgreSQL claims/s through the `Store` (see [`claim`]).
//! - `easel-bench fake-gemini`: the fake upstream as a process (see [`fake_gemini`]).
//! - `easel-bench signin`: end-user sign-ins per second with the configured argon2id cost,
//!   and the memory they take (see [`signin`]).
//! - `easel-bench paid-submit`: submits that hold their price against free ones, same run
//!   (see [`paid`]).
//! - `easel-bench photo`: the photo app's task creation against plain submits, same run, and
//!   its works list of a user with 10,000 works (see [`photo`]).
//! - `easel-bench uploads`: the image library's pipeline against sharp's, and uploads over
//!   HTTP (see [`uploads`]).
//! - `easel-bench sockets`: the editor's live sockets, idle memory per connection and the
//!   delivery latency of a posted message to the user's other device (see [`sockets`]).
//! - `easel-bench webhooks`: job end to webhook received, through the dispatcher (see
//!   [`webhooks`]).
//! - `easel-bench mj`: imagine → U1 chains through the `/mj` facade against plain jobs, and
//!   the facade's added latency (see [`mj`]).
//!
//! The server and the load generator share the same cores: figures are meant to be read as
//! ratios against the anchors in `../shared/anchors`, measured in the same run.

mod claim;
mod common;
mod e2e;
mod fake_gemini;
mod gemini;
mod limiter;
mod mj;
mod paid;
mod photo;
mod signin;
mod sockets;
mod uploads;
mod webhooks;

fn main() -> anyhow::Result<()> {
    // The allocator settings `easel` runs with, so the figures are the server's.
    easel::base::allocator::configure();
    let argv: Vec<String> = std::env::args().collect();
    let rest = argv.get(2..).unwrap_or_default();
    match argv.get(1).map(String::as_str) {
        Some("limiter") => limiter::run(rest),
        Some("gemini") => gemini::run(rest),
        Some("claim") => claim::run(rest),
        Some("drain") => e2e::drain(rest),
        Some("fake-gemini") => fake_gemini::run(rest),
        Some("webhooks") => webhooks::run(rest),
        Some("signin") => signin::run(rest),
        Some("paid-submit") => paid::run(rest),
        Some("photo") => photo::run(rest),
        Some("uploads") => uploads::run(rest),
        Some("sockets") => sockets::run(rest),
        Some("mj") => mj::run(rest),
        Some("stats") => {
            let path = rest
                .first()
                .ok_or_else(|| anyhow::anyhow!("usage: easel-bench stats DB_PATH"))?;
            e2e::stats_only(std::path::Path::new(path))
        }
        _ => e2e::run(&argv[1..]),
    }
}
