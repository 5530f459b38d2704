//! Reading an upload's bytes from what a client sent: a base64 string (a `data:` URL or bare
//! base64). Multipart bodies are read by the API, which owns HTTP; they arrive here as bytes.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use bytes::Bytes;

use super::UploadError;

/// Decodes `data:image/png;base64,...` or bare base64 (whitespace ignored). The declared type
/// is not trusted: the bytes are checked by content later. Refuses before decoding when the
/// text alone shows the result would be over `max_bytes`.
pub fn decode_base64(text: &str, max_bytes: u64) -> Result<Bytes, UploadError> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((header, data)) if header.ends_with(";base64") => data,
            _ => {
                return Err(UploadError::BadEncoding(
                    "a data URL must be data:<type>;base64,<data>".into(),
                ))
            }
        },
        None => text,
    };
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(UploadError::Empty);
    }
    let decoded_len = (compact.len() as u64 / 4) * 3;
    if decoded_len > max_bytes + 3 {
        return Err(UploadError::TooLarge {
            size: decoded_len,
            limit: max_bytes,
        });
    }
    let engine = if compact.ends_with('=') || compact.len() % 4 == 0 {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine
        .decode(compact.as_bytes())
        .map(Bytes::from)
        .map_err(|e| UploadError::BadEncoding(format!("the image is not valid base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_and_bare_base64() {
        let bytes = b"\x89PNG\r\n\x1a\nxyz";
        let bare = STANDARD.encode(bytes);
        assert_eq!(&decode_base64(&bare, 100).expect("bare")[..], bytes);
        let url = format!("data:image/png;base64,{bare}");
        assert_eq!(&decode_base64(&url, 100).expect("url")[..], bytes);
        let wrapped = format!("{}\n{}", &bare[..4], &bare[4..]);
        assert_eq!(&decode_base64(&wrapped, 100).expect("wrapped")[..], bytes);
        assert_eq!(decode_base64("", 100), Err(UploadError::Empty));
        assert!(matches!(
            decode_base64("data:image/png,abc", 100),
            Err(UploadError::BadEncoding(_))
        ));
        assert!(matches!(
            decode_base64("!!!!", 100),
            Err(UploadError::BadEncoding(_))
        ));
        assert!(matches!(
            decode_base64(&STANDARD.encode([0u8; 300]), 100),
            Err(UploadError::TooLarge { .. })
        ));
    }
}
