//! Password hashing: argon2id with the configured cost, off the async runtime on a fixed set
//! of threads (`users.max_concurrent_hashes`), each taking `argon2_memory_kib` while it hashes.
//! Fixed threads, not `spawn_blocking`: the allocator keeps a hash's large blocks per thread,
//! and on the blocking pool's ever-changing threads 16 concurrent sign-ins held 1.7 GB.
//!
//! A sign-in for an unknown account verifies against a dummy hash made with the same
//! parameters, so it costs the same time as a wrong password and gets the same answer.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::config::UsersConfig;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing: {0}")]
    Hash(String),
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    hashers: mpsc::Sender<HashJob>,
    /// A hash of a random password nobody knows, with the same parameters.
    dummy: Arc<String>,
}

impl Passwords {
    pub fn new(config: &UsersConfig) -> Result<Passwords, PasswordError> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let at_once = match config.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let unknown: [u8; 24] = rand::random();
        let dummy = hash_with(&params, &hex::encode(unknown))?;
        Ok(Passwords {
            params,
            hashers: start_hashers(at_once)?,
            dummy: Arc::new(dummy),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.run(move || hash_with(&params, &password)).await?
    }

    /// Whether `password` matches `stored`; `None` (no such account, or no password) checks
    /// against the dummy hash and answers `false` after the same work.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy).to_owned();
        let password = password.to_owned();
        let matched = self
            .run(move || {
                let parsed = PasswordHash::new(&stored).ok()?;
                Some(
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await?;
        Ok(known && matched.unwrap_or(false))
    }

    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PasswordError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.hashers
            .send(Box::new(move || {
                let _ = reply.send(work());
            }))
            .map_err(|_| PasswordError::Hash("hashers stopped".into()))?;
        answer
            .await
            .map_err(|_| PasswordError::Hash("hash abandoned".into()))
    }
}

type HashJob = Box<dyn FnOnce() + Send>;

/// `n` threads taking hash jobs from one queue, in order; they end when every sender is gone.
fn start_hashers(n: usize) -> Result<mpsc::Sender<HashJob>, PasswordError> {
    let (jobs, queue) = mpsc::channel::<HashJob>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..n.max(1) {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("easel-argon2-{i}"))
            .spawn(move || loop {
                let next = match queue.lock() {
                    Ok(queue) => queue.recv(),
                    Err(_) => return,
                };
                let Ok(job) = next else { return };
                // A panicking job drops its reply (the caller gets an error); the thread stays.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            })
            .map_err(|e| PasswordError::Hash(format!("hasher thread: {e}")))?;
    }
    Ok(jobs)
}

fn hash_with(params: &Params, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> UsersConfig {
        UsersConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..UsersConfig::default()
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_fail() {
        let p = Passwords::new(&cheap()).expect("params");
        let hash = p.hash("correct horse").await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(p
            .verify("correct horse", Some(&hash))
            .await
            .expect("verify"));
        assert!(!p.verify("wrong", Some(&hash)).await.expect("verify"));
        assert!(!p.verify("correct horse", None).await.expect("verify"));
        assert!(!p.verify("x", Some("not a hash")).await.expect("verify"));
    }
}
