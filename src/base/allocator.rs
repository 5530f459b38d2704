//! The process's allocator: mimalloc for every binary that links Easel, with its options set
//! once at start ([`configure`]).
//!
//! Why not glibc's malloc: a job's path allocates in many small pieces across threads (HTTP,
//! the SQLite writer, blocking file writes), where glibc spent an eighth of the OpenAI
//! facade benchmark's CPU; with mimalloc that benchmark answers 1.13-1.25x the requests.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc's `mi_option_e`
/// (the sys crate names neither).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds freed pages stay mapped before they go back to the system. mimalloc's default
/// (a second, ten for arenas) held the facade's peak RSS at 75 MB where glibc's was 37; at 0,
/// each sign-in's argon2 hash (19 MiB) faulted all its pages in again, a fifth fewer logins/s.
/// At 10 ms: sign-ins within 3% of glibc's, the facade's peak RSS 43-48 MB.
const PURGE_AFTER_MS: std::ffi::c_long = 10;

/// Commit arena memory as it is used and give freed pages back soon ([`PURGE_AFTER_MS`]):
/// mimalloc's defaults (eager commit on Linux, purges after a delay) took the server's idle
/// RSS from 24 to 43 MB. Call first thing in `main`.
pub fn configure() {
    // SAFETY: setters of mimalloc's global options, called before any other thread starts.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_AFTER_MS);
    }
}
