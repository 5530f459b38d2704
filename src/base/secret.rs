//! Secrets: the [`Secret`] string that never prints, and the [`Sealer`] that seals upstream
//! provider keys and webhook secrets at rest with AES-256-GCM.
//!
//! The master key comes from config (`EASEL_MASTER_KEY`, 32 bytes base64) or is generated
//! into `<data_dir>/master.key` at first start with mode 0600. A sealed value is
//! `nonce (12 bytes) || ciphertext+tag`.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A string that never reaches a log line or a `Debug` print.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("cannot open sealed value (wrong master key or corrupted)")]
    Open,
}

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// Loads the master key from `configured` (base64) or from the file in `data_dir`,
    /// creating the file on first start.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Sealer, CryptoError> {
        let engine = base64::engine::general_purpose::STANDARD;
        let encoded = match configured {
            Some(value) => value.trim().to_owned(),
            None => read_or_create_key_file(&data_dir.join("master.key"))?,
        };
        let bytes = engine
            .decode(encoded)
            .map_err(|_| CryptoError::MasterKey("not valid base64".into()))?;
        if bytes.len() != 32 {
            return Err(CryptoError::MasterKey("must be 32 bytes".into()));
        }
        let key = Key::<Aes256Gcm>::from_slice(&bytes);
        Ok(Sealer {
            cipher: Aes256Gcm::new(key),
        })
    }

    /// The deployment's sealer: `EASEL_MASTER_KEY` if set, else `<data_dir>/master.key`.
    pub fn from_env(data_dir: &Path) -> Result<Sealer, CryptoError> {
        let configured = std::env::var("EASEL_MASTER_KEY").ok();
        Sealer::load(configured.as_deref(), data_dir)
    }

    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption into a Vec cannot fail for inputs under AES-GCM's size limit (64 GiB).
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, CryptoError> {
        if sealed.len() < 12 {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

/// A short, non-reversible name for a secret: safe to show and log.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

/// Reads a secret file, or creates it with `make()` and mode 0600.
pub fn read_or_create_secret_file(
    path: &Path,
    make: impl FnOnce() -> String,
) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(existing) => return Ok(existing.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let value = make();
    write_private(path, &value)?;
    Ok(value)
}

#[cfg(unix)]
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(value.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

fn read_or_create_key_file(path: &Path) -> Result<String, CryptoError> {
    read_or_create_secret_file(path, || {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        base64::engine::general_purpose::STANDARD.encode(key)
    })
    .map_err(|e| CryptoError::MasterKey(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_file_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = Sealer::load(None, dir.path()).expect("load");
        let sealed = sealer.seal("AIza-secret");
        assert!(!sealed.windows(5).any(|w| w == b"AIza-"));
        assert_eq!(sealer.open(&sealed).expect("open"), "AIza-secret");
        // Same file, same key.
        let again = Sealer::load(None, dir.path()).expect("reload");
        assert_eq!(again.open(&sealed).expect("open"), "AIza-secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = tempfile::tempdir().expect("tempdir");
        let wrong = Sealer::load(None, other.path()).expect("load");
        assert!(wrong.open(&sealed).is_err());
    }

    #[test]
    fn fingerprint_hides_the_secret() {
        let f = fingerprint("AIzaSyExample");
        assert!(f.starts_with("sha256:") && !f.contains("AIza"));
        assert_eq!(f, fingerprint("AIzaSyExample"));
    }
}
