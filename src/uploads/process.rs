//! Turning uploaded bytes into what is stored: pure, CPU-bound functions with no I/O (the
//! library runs them on its bounded blocking pool).
//!
//! In order, each step refusing before the next costs anything:
//! 1. size: empty or over the byte limit;
//! 2. type by content (magic bytes), never by name or declared type: PNG, JPEG, WebP, GIF
//!    (HEIC is refused: no well-kept pure-Rust crate decodes it; libheif needs a C library);
//! 3. dimensions read from the header alone, refused above the pixel limit, so a
//!    decompression bomb (a 20000x20000 PNG of a few KB) is never decoded;
//! 4. decode (the decoder's own allocation limit as a second guard), the first frame of an
//!    animated GIF or WebP (the editor stores a still picture), EXIF orientation applied;
//! 5. re-encode as JPEG (q90, fit inside 2048x2048, never enlarged) and a thumbnail (q80,
//!    inside 300x300) made from the already reduced image. The encoder writes no metadata, so
//!    EXIF (GPS included), XMP, ICC and comments never reach storage. Transparent pixels are
//!    laid on white, as JPEG has no alpha.

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use super::UploadError;

/// What the pipeline may accept and what it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    pub max_bytes: u64,
    pub max_pixels: u64,
    /// The stored image fits inside this square.
    pub max_side: u32,
    pub thumb_side: u32,
    pub quality: u8,
    pub thumb_quality: u8,
}

/// The stored image and thumbnail, as JPEG bytes.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Of the upload, after orientation.
    pub width: u32,
    pub height: u32,
    pub image: Vec<u8>,
    pub image_width: u32,
    pub image_height: u32,
    pub thumb: Vec<u8>,
}

/// The stored type: what every upload becomes.
pub const STORED_MIME: &str = "image/jpeg";

/// The type of `bytes` by its magic number.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else {
        None
    }
}

fn is_heic(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"ftyp")
        && matches!(
            bytes.get(8..12),
            Some(b"heic" | b"heix" | b"mif1" | b"msf1" | b"avif")
        )
}

/// Steps 1-3: the checks that need no decoding. Returns the type and the header's size.
pub fn inspect(bytes: &[u8], pipeline: &Pipeline) -> Result<(ImageFormat, u32, u32), UploadError> {
    if bytes.is_empty() {
        return Err(UploadError::Empty);
    }
    let size = bytes.len() as u64;
    if size > pipeline.max_bytes {
        return Err(UploadError::TooLarge {
            size,
            limit: pipeline.max_bytes,
        });
    }
    let format = sniff(bytes).ok_or(if is_heic(bytes) {
        UploadError::Unsupported("HEIC/HEIF/AVIF images are not accepted; send JPEG or PNG")
    } else {
        UploadError::Unsupported("the file is not a PNG, JPEG, WebP or GIF image")
    })?;
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| UploadError::Corrupt(format!("the image header cannot be read: {e}")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(UploadError::Corrupt("the image has no pixels".into()));
    }
    if pixels > pipeline.max_pixels {
        return Err(UploadError::TooManyPixels {
            width,
            height,
            limit: pipeline.max_pixels,
        });
    }
    Ok((format, width, height))
}

/// Steps 1-5.
pub fn process(bytes: &[u8], pipeline: &Pipeline) -> Result<Processed, UploadError> {
    let (format, width, height) = inspect(bytes, pipeline)?;
    let picture = decode(bytes, format, width, height)?;
    let (width, height) = (picture.width(), picture.height());
    let (image_width, image_height) = fit_inside(width, height, pipeline.max_side);
    let stored = resize(picture, image_width, image_height)?;
    let (thumb_width, thumb_height) = fit_inside(width, height, pipeline.thumb_side);
    let thumb = resize_to(&stored, thumb_width, thumb_height)?;
    Ok(Processed {
        width,
        height,
        image: encode(&stored, pipeline.quality)?,
        image_width,
        image_height,
        thumb: encode(&thumb, pipeline.thumb_quality)?,
    })
}

/// Decodes the first frame, applies the EXIF orientation and flattens it to RGB on white.
fn decode(
    bytes: &[u8],
    format: ImageFormat,
    width: u32,
    height: u32,
) -> Result<RgbImage, UploadError> {
    let corrupt =
        |e: image::ImageError| UploadError::Corrupt(format!("the image cannot be decoded: {e}"));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // The header was checked; a decoder that finds other sizes inside stops here.
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut picture = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    picture.apply_orientation(orientation);
    Ok(flatten(picture))
}

/// RGB, with any transparency laid on white.
fn flatten(picture: DynamicImage) -> RgbImage {
    if !picture.color().has_alpha() {
        return picture.into_rgb8();
    }
    let rgba = picture.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut rgb = RgbImage::new(w, h);
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u16::from(px[3]);
        for c in 0..3 {
            let over = (u16::from(px[c]) * alpha + 255 * (255 - alpha)) / 255;
            out[c] = over as u8;
        }
    }
    rgb
}

/// The largest size with the same aspect ratio inside `side` x `side`, never larger than
/// the original (and at least one pixel each way).
pub fn fit_inside(width: u32, height: u32, side: u32) -> (u32, u32) {
    if width <= side && height <= side {
        return (width, height);
    }
    let scale = f64::from(side) / f64::from(width.max(height));
    let fit = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, side);
    (fit(width), fit(height))
}

fn resize(picture: RgbImage, width: u32, height: u32) -> Result<RgbImage, UploadError> {
    if picture.dimensions() == (width, height) {
        return Ok(picture);
    }
    resize_to(&picture, width, height)
}

/// Lanczos3, as sharp uses by default. `fast_image_resize` rather than `image::imageops`:
/// its convolution is SIMD (AVX2/SSE4.1/NEON) where `image`'s is scalar, and resizing the
/// 12 MP decode is most of an upload's CPU after decoding (`easel-bench uploads` times both).
pub fn resize_to(picture: &RgbImage, width: u32, height: u32) -> Result<RgbImage, UploadError> {
    let failed = |e: String| UploadError::Corrupt(format!("the image cannot be resized: {e}"));
    let src = ImageRef::new(
        picture.width(),
        picture.height(),
        picture.as_raw(),
        PixelType::U8x3,
    )
    .map_err(|e| failed(e.to_string()))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| failed(e.to_string()))?;
    RgbImage::from_raw(width, height, dst.into_vec()).ok_or_else(|| failed("buffer size".into()))
}

/// Baseline JPEG, 4:2:0 as sharp and libjpeg make by default, with no metadata segments
/// but the JFIF header. `jpeg-encoder` rather than `image`'s encoder: its DCT and colour
/// conversion have AVX2 paths, and encoding the stored image was the upload's slowest step.
fn encode(picture: &RgbImage, quality: u8) -> Result<Vec<u8>, UploadError> {
    let side = |v: u32| {
        u16::try_from(v)
            .map_err(|_| UploadError::Corrupt(format!("{v} pixels is too wide for JPEG")))
    };
    let (width, height) = (side(picture.width())?, side(picture.height())?);
    let mut out = Vec::with_capacity(picture.as_raw().len() / 8);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    encoder
        .encode(
            picture.as_raw(),
            width,
            height,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| UploadError::Corrupt(format!("the image cannot be encoded: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_inside_never_enlarges_and_keeps_the_ratio() {
        assert_eq!(fit_inside(4000, 3000, 2048), (2048, 1536));
        assert_eq!(fit_inside(3000, 4000, 300), (225, 300));
        assert_eq!(fit_inside(100, 50, 2048), (100, 50));
        assert_eq!(fit_inside(10000, 1, 300), (300, 1));
    }

    #[test]
    fn sniffing_is_by_content() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some(ImageFormat::Png));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::WebP));
        assert_eq!(sniff(b"GIF89a...."), Some(ImageFormat::Gif));
        assert_eq!(sniff(b"<html>"), None);
        assert!(is_heic(b"\0\0\0\x18ftypheic\0\0\0\0"));
    }

    #[test]
    fn transparency_is_laid_on_white() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([255, 0, 0, 255]));
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 0]));
        let rgb = flatten(DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
    }
}
