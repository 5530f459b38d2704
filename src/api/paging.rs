//! Paging shared by the list routes: `limit` (1-100, default 50) and an opaque `cursor` that
//! carries the last row's sequence number behind a per-list prefix.

use std::collections::HashMap;

use base64::Engine;

use crate::error::ApiError;

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 100;

pub fn encode_cursor(prefix: &str, seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{prefix}{seq}"))
}

pub fn decode_cursor(prefix: &str, cursor: &str) -> Option<i64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
        .filter(|s| *s > 0)
}

/// `limit` and the decoded `cursor` of a list request, or a 400 naming the bad one.
pub fn page(prefix: &str, q: &HashMap<String, String>) -> Result<(u32, Option<i64>), ApiError> {
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(format!("limit must be an integer between 1 and {MAX_PAGE}"))
            })?,
    };
    let before_seq = match q.get("cursor") {
        None => None,
        Some(raw) => {
            Some(decode_cursor(prefix, raw).ok_or_else(|| ApiError::invalid("cursor is invalid"))?)
        }
    };
    Ok((limit, before_seq))
}
