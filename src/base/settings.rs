//! What every configuration section shares: how a section names a bad value ([`Invalid`]) and
//! the checks many sections make. Each section lives with the module that owns it; the loader
//! in `config` runs their checks and reports the first problem with its key.
//!
//! Owns: [`Invalid`] and the shared checks. Must not touch: anything else in the crate.

/// A refused setting: its key (e.g. `worker.concurrency`) and the problem.
pub type Invalid = (&'static str, String);

/// The first of `settings` that is 0, refused with "must be at least 1".
pub fn at_least_one<const N: usize>(settings: [(&'static str, u64); N]) -> Result<(), Invalid> {
    match settings.into_iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err((key, "must be at least 1".into())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_zero_is_named() {
        assert_eq!(at_least_one([("a", 1), ("b", 2)]), Ok(()));
        let err = at_least_one([("a", 1), ("b", 0), ("c", 0)]).expect_err("zero");
        assert_eq!(err, ("b", "must be at least 1".to_owned()));
    }
}
