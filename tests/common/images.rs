//! Real image files built in the test: PNG, JPEG (with an EXIF block carrying GPS and an
//! orientation, written byte by byte), WebP, animated GIF, and the broken ones.

use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::{Delay, DynamicImage, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

pub const RED: [u8; 3] = [220, 20, 20];
pub const BLUE: [u8; 3] = [20, 20, 220];

/// Left half red, right half blue.
pub fn halves(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgb(RED)
        } else {
            Rgb(BLUE)
        }
    })
}

/// Pixels that do not compress (so a file of a chosen size is easy to make).
pub fn noise(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    RgbImage::from_fn(width, height, |_, _| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        };
        Rgb([next(), next(), next()])
    })
}

pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgb8(halves(width, height)),
        ImageFormat::Png,
    )
}

pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(image)
        .expect("encode jpeg");
    out
}

pub fn webp(width: u32, height: u32) -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgb8(halves(width, height)),
        ImageFormat::WebP,
    )
}

/// A PNG whose left half is transparent.
pub fn transparent_png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([20, 20, 220, 255])
        }
    });
    encode(&DynamicImage::ImageRgba8(image), ImageFormat::Png)
}

/// Two frames: all red, then all blue.
pub fn animated_gif(width: u32, height: u32) -> Vec<u8> {
    let frame = |color: [u8; 3]| {
        let [r, g, b] = color;
        Frame::from_parts(
            RgbaImage::from_pixel(width, height, Rgba([r, g, b, 255])),
            0,
            0,
            Delay::from_numer_denom_ms(100, 1),
        )
    };
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder
            .encode_frames([frame(RED), frame(BLUE)])
            .expect("encode gif");
    }
    out
}

/// A PNG that declares `width` x `height` with the start of a deflate stream: a decompression
/// bomb as far as anything before decoding can tell (a real one's IDAT inflates to
/// width x height x 3 bytes).
pub fn declared_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().expect("png header");
        writer
            .write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d])
            .expect("idat");
    }
    out
}

/// The APP1 segment of an EXIF block (big-endian TIFF) with Orientation = `orientation` and
/// a GPS IFD holding GPSLatitudeRef = N and GPSLatitude = 48/1, 51/1, 2400/100.
pub fn exif_app1(orientation: u16) -> Vec<u8> {
    let mut tiff: Vec<u8> = b"MM\0\x2a\0\0\0\x08".to_vec();
    let gps_ifd: u32 = 8 + 2 + 2 * 12 + 4;
    let lat_data: u32 = gps_ifd + 2 + 2 * 12 + 4;
    // IFD0: Orientation (SHORT), GPSInfo pointer (LONG).
    tiff.extend_from_slice(&2u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0x8825u16.to_be_bytes());
    tiff.extend_from_slice(&4u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&gps_ifd.to_be_bytes());
    tiff.extend_from_slice(&0u32.to_be_bytes());
    // GPS IFD: GPSLatitudeRef (ASCII "N"), GPSLatitude (3 RATIONALs, at lat_data).
    tiff.extend_from_slice(&2u16.to_be_bytes());
    tiff.extend_from_slice(&0x0001u16.to_be_bytes());
    tiff.extend_from_slice(&2u16.to_be_bytes());
    tiff.extend_from_slice(&2u32.to_be_bytes());
    tiff.extend_from_slice(b"N\0\0\0");
    tiff.extend_from_slice(&0x0002u16.to_be_bytes());
    tiff.extend_from_slice(&5u16.to_be_bytes());
    tiff.extend_from_slice(&3u32.to_be_bytes());
    tiff.extend_from_slice(&lat_data.to_be_bytes());
    tiff.extend_from_slice(&0u32.to_be_bytes());
    for (num, den) in [(48u32, 1u32), (51, 1), (2400, 100)] {
        tiff.extend_from_slice(&num.to_be_bytes());
        tiff.extend_from_slice(&den.to_be_bytes());
    }
    let mut segment = vec![0xff, 0xe1];
    let length = u16::try_from(2 + 6 + tiff.len()).expect("small segment");
    segment.extend_from_slice(&length.to_be_bytes());
    segment.extend_from_slice(b"Exif\0\0");
    segment.extend_from_slice(&tiff);
    segment
}

/// `jpeg` with `segment` inserted after SOI and any APP0 (JFIF) segment.
pub fn with_segment(jpeg: &[u8], segment: &[u8]) -> Vec<u8> {
    let mut at = 2;
    if jpeg.get(2..4) == Some(&[0xff, 0xe0]) {
        let len = usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
        at = 4 + len;
    }
    let mut out = jpeg[..at].to_vec();
    out.extend_from_slice(segment);
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// A camera photo as far as the tests care: `width` x `height` halves, EXIF orientation 6
/// (rotate 90 degrees clockwise to view) and a GPS position.
pub fn camera_jpeg(width: u32, height: u32) -> Vec<u8> {
    with_segment(&jpeg(&halves(width, height)), &exif_app1(6))
}

/// Whether a JPEG has an APP1 segment (EXIF or XMP) or the `Exif` signature anywhere.
pub fn has_exif(bytes: &[u8]) -> bool {
    let exif_parses = exif::Reader::new()
        .read_from_container(&mut Cursor::new(bytes))
        .is_ok();
    exif_parses || bytes.windows(6).any(|w| w == b"Exif\0\0") || has_app1(bytes)
}

/// Walks the JPEG's marker segments up to the scan.
fn has_app1(bytes: &[u8]) -> bool {
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xff {
        let marker = bytes[at + 1];
        if marker == 0xe1 {
            return true;
        }
        if marker == 0xda {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        at += 2 + len;
    }
    false
}

/// The mean colour of a small square around (x, y).
pub fn color_at(image: &RgbImage, x: u32, y: u32) -> [u8; 3] {
    let mut sum = [0u32; 3];
    let mut n = 0;
    for yy in y.saturating_sub(2)..(y + 3).min(image.height()) {
        for xx in x.saturating_sub(2)..(x + 3).min(image.width()) {
            let p = image.get_pixel(xx, yy).0;
            for c in 0..3 {
                sum[c] += u32::from(p[c]);
            }
            n += 1;
        }
    }
    sum.map(|s| (s / n) as u8)
}

/// Whether two colours are within `tolerance` on every channel.
pub fn near(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}
