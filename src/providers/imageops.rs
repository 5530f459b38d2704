//! Pixel work the operations share: decoding and encoding, the 2x2 grid of an imagine (and
//! cutting one apart), the padded canvas of an outpaint or a zoom out, resizing, mixing and
//! the plain facts a local describe reports.
//! Must not touch: upstreams or storage; every function is pure (bytes in, bytes out).

use std::io::Cursor;

use image::imageops::{self, FilterType};
use image::{
    DynamicImage, ImageBuffer, ImageFormat, Pixel, PixelWithColorType, RgbImage, Rgba, RgbaImage,
};

use crate::base::operation::{BlendShape, Direction};

/// Largest side an operation makes (a 4x upscale of a large image stops here).
pub const MAX_SIDE: u32 = 4096;

/// An image that could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ImageOpError(pub String);

pub fn decode(bytes: &[u8]) -> Result<RgbaImage, ImageOpError> {
    decode_any(bytes).map(DynamicImage::into_rgba8)
}

/// The image in its own colour type (no conversion).
pub fn decode_any(bytes: &[u8]) -> Result<DynamicImage, ImageOpError> {
    image::load_from_memory(bytes)
        .map_err(|e| ImageOpError(format!("the image cannot be decoded: {e}")))
}

pub fn encode_png(image: &RgbaImage) -> Result<Vec<u8>, ImageOpError> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(image.clone())
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| ImageOpError(format!("the image cannot be encoded: {e}")))?;
    Ok(out.into_inner())
}

/// A PNG at fast compression with the cheap Sub filter (the local renderer's settings): for
/// the grid, four images' worth of pixels that only preview them (each is stored on its own),
/// where default compression, or trying every filter on each row, cost most of an imagine.
pub fn encode_png_fast<P>(image: &ImageBuffer<P, Vec<u8>>) -> Result<Vec<u8>, ImageOpError>
where
    P: PixelWithColorType<Subpixel = u8>,
{
    use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
    use image::ImageEncoder;
    // Smooth pictures compress to about a third; a quarter saves most regrowths.
    let mut out = Vec::with_capacity(image.as_raw().len() / 4);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, PngFilter::Sub)
        .write_image(image.as_raw(), image.width(), image.height(), P::COLOR_TYPE)
        .map_err(|e| ImageOpError(format!("the image cannot be encoded: {e}")))?;
    Ok(out)
}

/// The 2x2 grid of four decoded images as a PNG, each cell at the first image's full size
/// (see [`grid`]). RGB unless an image has an alpha channel: a quarter fewer bytes to filter
/// and compress than RGBA, and opaque cells (the usual) are not converted at all.
pub fn grid_png_of(decoded: Vec<DynamicImage>) -> Result<Vec<u8>, ImageOpError> {
    if decoded.iter().any(|image| image.color().has_alpha()) {
        let cells: Vec<RgbaImage> = decoded.into_iter().map(|i| i.into_rgba8()).collect();
        encode_png_fast(&grid(&cells)?)
    } else {
        let cells: Vec<RgbImage> = decoded.into_iter().map(|i| i.into_rgb8()).collect();
        encode_png_fast(&grid(&cells)?)
    }
}

/// The 2x2 grid of four images (1 top left, 2 top right, 3 bottom left, 4 bottom right),
/// each cell the size of the first image; the cells' rows are copied straight into place.
pub fn grid<P>(images: &[ImageBuffer<P, Vec<u8>>]) -> Result<ImageBuffer<P, Vec<u8>>, ImageOpError>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    if images.len() != 4 {
        return Err(ImageOpError(format!(
            "a grid takes 4 images, not {}",
            images.len()
        )));
    }
    let (w, h) = images[0].dimensions();
    let mut canvas = ImageBuffer::new(w * 2, h * 2);
    let pixels: &mut [u8] = &mut canvas;
    let row = w as usize * usize::from(P::CHANNEL_COUNT);
    for (i, image) in images.iter().enumerate() {
        let resized;
        let cell = if image.dimensions() == (w, h) {
            image
        } else {
            resized = imageops::resize(image, w, h, FilterType::Triangle);
            &resized
        };
        let (x, top) = ((i % 2) * row, (i / 2) * h as usize);
        let rows = cell.as_raw().chunks_exact(row).take(h as usize);
        for (y, source) in rows.enumerate() {
            let at = (top + y) * 2 * row + x;
            pixels[at..at + row].copy_from_slice(source);
        }
    }
    Ok(canvas)
}

/// The four quadrants of a grid, in the grid's order.
pub fn split_grid(grid: &RgbaImage) -> Vec<RgbaImage> {
    let (w, h) = (grid.width() / 2, grid.height() / 2);
    (0..4u32)
        .map(|i| imageops::crop_imm(grid, (i % 2) * w, (i / 2) * h, w, h).to_image())
        .collect()
}

/// `image` scaled by `factor`, no side above [`MAX_SIDE`] (the aspect kept).
pub fn upscale(image: &RgbaImage, factor: u32, filter: FilterType) -> RgbaImage {
    let (w, h) = image.dimensions();
    let (w, h) = fit(w.saturating_mul(factor), h.saturating_mul(factor));
    imageops::resize(image, w, h, filter)
}

/// `(w, h)` shrunk to fit [`MAX_SIDE`], the aspect kept.
pub fn fit(w: u32, h: u32) -> (u32, u32) {
    let longest = w.max(h).max(1);
    if longest <= MAX_SIDE {
        return (w.max(1), h.max(1));
    }
    let scale = f64::from(MAX_SIDE) / f64::from(longest);
    (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    )
}

/// Where the source goes on a grown canvas: its size and the source's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub x: u32,
    pub y: u32,
}

/// An outpaint grows the canvas by half the source on one side.
pub fn outpaint_canvas(w: u32, h: u32, direction: Direction) -> Canvas {
    let (dw, dh) = (w / 2, h / 2);
    match direction {
        Direction::Left => Canvas {
            width: w + dw,
            height: h,
            x: dw,
            y: 0,
        },
        Direction::Right => Canvas {
            width: w + dw,
            height: h,
            x: 0,
            y: 0,
        },
        Direction::Up => Canvas {
            width: w,
            height: h + dh,
            x: 0,
            y: dh,
        },
        Direction::Down => Canvas {
            width: w,
            height: h + dh,
            x: 0,
            y: 0,
        },
    }
}

/// A zoom out grows the canvas by `percent`/100 on both axes, the source in the middle.
pub fn zoom_canvas(w: u32, h: u32, percent: u16) -> Canvas {
    let grow = |side: u32| (u64::from(side) * u64::from(percent) / 100) as u32;
    let (width, height) = (grow(w).max(w), grow(h).max(h));
    Canvas {
        width,
        height,
        x: (width - w) / 2,
        y: (height - h) / 2,
    }
}

/// `source` placed on `background` (already the canvas size) where `canvas` says.
pub fn place(background: &RgbaImage, source: &RgbaImage, canvas: Canvas) -> RgbaImage {
    let mut out = background.clone();
    imageops::replace(&mut out, source, i64::from(canvas.x), i64::from(canvas.y));
    out
}

/// `source` on a canvas of `fill` (what an upstream is asked to paint over).
pub fn padded(source: &RgbaImage, canvas: Canvas, fill: Rgba<u8>) -> RgbaImage {
    let background = RgbaImage::from_pixel(canvas.width, canvas.height, fill);
    place(&background, source, canvas)
}

/// `a` mixed with `b` (resized to `a`): `weight` of `a`, the rest of `b`.
pub fn mix(a: &RgbaImage, b: &RgbaImage, weight: f32) -> RgbaImage {
    let (w, h) = a.dimensions();
    let b = if b.dimensions() == (w, h) {
        b.clone()
    } else {
        imageops::resize(b, w, h, FilterType::Triangle)
    };
    let mut out = a.clone();
    for (p, q) in out.pixels_mut().zip(b.pixels()) {
        for c in 0..4 {
            let v = f32::from(p[c]) * weight + f32::from(q[c]) * (1.0 - weight);
            p[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Width and height of a blend's result whose longer side is `size`.
pub fn blend_size(shape: BlendShape, size: u32) -> (u32, u32) {
    match shape {
        BlendShape::Square => (size, size),
        BlendShape::Portrait => (size * 2 / 3, size),
        BlendShape::Landscape => (size, size * 2 / 3),
    }
}

/// The even average of every image, each resized to `(w, h)`.
pub fn average(images: &[RgbaImage], w: u32, h: u32) -> RgbaImage {
    let mut sums = vec![0u32; (w * h * 4) as usize];
    for image in images {
        let resized = imageops::resize(image, w, h, FilterType::Triangle);
        for (sum, value) in sums.iter_mut().zip(resized.as_raw()) {
            *sum += u32::from(*value);
        }
    }
    let count = images.len().max(1) as u32;
    let pixels = sums.into_iter().map(|s| (s / count) as u8).collect();
    RgbaImage::from_raw(w, h, pixels).unwrap_or_else(|| RgbaImage::new(w, h))
}

/// The aspect ratio of `(w, h)` nearest among `allowed` (`"16:9"`...); `None` when none parse.
pub fn nearest_ratio(w: u32, h: u32, allowed: &[String]) -> Option<String> {
    let target = f64::from(w.max(1)) / f64::from(h.max(1));
    allowed
        .iter()
        .filter_map(|r| {
            let (a, b) = r.split_once(':')?;
            let value = a.parse::<f64>().ok()? / b.parse::<f64>().ok()?;
            Some((r, (value.ln() - target.ln()).abs()))
        })
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(r, _)| r.clone())
}

/// Plain facts about an image, in words: its size, shape, brightness and main colour.
pub fn facts(image: &RgbaImage) -> String {
    let (w, h) = image.dimensions();
    let count = f64::from((w * h).max(1));
    let mut sum = [0f64; 3];
    for p in image.pixels() {
        for c in 0..3 {
            sum[c] += f64::from(p[c]);
        }
    }
    let mean = sum.map(|s| s / count);
    let brightness = (mean[0] + mean[1] + mean[2]) / 3.0;
    let light = match brightness {
        b if b < 85.0 => "dark",
        b if b < 170.0 => "mid-toned",
        _ => "bright",
    };
    let hue = match mean
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
    {
        Some(0) => "warm red",
        Some(1) => "green",
        _ => "cool blue",
    };
    let shape = match w.cmp(&h) {
        std::cmp::Ordering::Greater => "landscape",
        std::cmp::Ordering::Less => "portrait",
        std::cmp::Ordering::Equal => "square",
    };
    format!("a {light} {shape} picture ({w}x{h}) dominated by {hue} tones")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, v: u8) -> RgbaImage {
        RgbaImage::from_pixel(w, h, Rgba([v, v, v, 255]))
    }

    #[test]
    fn grid_and_split_round_trip() {
        let cells: Vec<_> = (0..4).map(|i| solid(8, 6, i * 60)).collect();
        let g = grid(&cells).expect("grid");
        assert_eq!(g.dimensions(), (16, 12));
        assert_eq!(g.get_pixel(9, 0)[0], 60);
        assert_eq!(g.get_pixel(0, 7)[0], 120);
        let back = split_grid(&g);
        assert_eq!(back, cells);
        assert!(grid(&cells[..3]).is_err());
        let png = encode_png(&g).expect("png");
        assert_eq!(decode(&png).expect("decode"), g);
    }

    /// The grid of four encoded images, as the worker makes it from a provider's PNGs.
    fn grid_png(cells: &[&[u8]]) -> Result<Vec<u8>, ImageOpError> {
        let decoded = cells
            .iter()
            .map(|bytes| decode_any(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        grid_png_of(decoded)
    }

    #[test]
    fn grid_png_keeps_rgb_cells_rgb_and_alpha_cells_rgba() {
        let rgb: Vec<Vec<u8>> = (0..4u8)
            .map(|i| {
                let cell = RgbImage::from_fn(8, 6, |x, y| image::Rgb([i * 60, x as u8, y as u8]));
                encode_png_fast(&cell).expect("png")
            })
            .collect();
        let cells: Vec<&[u8]> = rgb.iter().map(Vec::as_slice).collect();
        let png = grid_png(&cells).expect("grid");
        let image = image::load_from_memory(&png).expect("decode");
        assert_eq!(image.color(), image::ColorType::Rgb8);
        let image = image.into_rgb8();
        assert_eq!(image.dimensions(), (16, 12));
        assert_eq!(image.get_pixel(8 + 3, 6 + 2).0, [180, 3, 2]);
        assert_eq!(image.get_pixel(3, 6 + 5).0, [120, 3, 5]);
        let back = split_grid(&decode(&png).expect("decode"));
        assert_eq!(back[1].get_pixel(7, 5).0, [60, 7, 5, 255]);

        // One translucent cell, smaller than the first: RGBA, the cell scaled up.
        let clear = encode_png(&RgbaImage::from_pixel(4, 3, Rgba([9, 9, 9, 100]))).expect("png");
        let cells = [cells[0], cells[1], &clear, cells[3]];
        let image = image::load_from_memory(&grid_png(&cells).expect("grid")).expect("decode");
        assert_eq!(image.color(), image::ColorType::Rgba8);
        let image = image.into_rgba8();
        assert_eq!(image.get_pixel(5, 10).0, [9, 9, 9, 100]);
        assert_eq!(image.get_pixel(9, 1).0, [60, 1, 1, 255]);
        assert!(grid_png(&cells[..3]).is_err());
        assert!(grid_png(&[b"nope".as_slice(); 4]).is_err());
    }

    #[test]
    fn canvases_grow_the_right_way() {
        assert_eq!(
            outpaint_canvas(100, 80, Direction::Left),
            Canvas {
                width: 150,
                height: 80,
                x: 50,
                y: 0
            }
        );
        assert_eq!(outpaint_canvas(100, 80, Direction::Down).height, 120);
        let c = zoom_canvas(100, 80, 150);
        assert_eq!((c.width, c.height, c.x, c.y), (150, 120, 25, 20));
        assert_eq!(fit(8000, 4000), (4096, 2048));
        assert_eq!(
            nearest_ratio(150, 100, &["1:1".into(), "3:2".into(), "16:9".into()]).as_deref(),
            Some("3:2")
        );
    }

    #[test]
    fn mix_and_average() {
        let m = mix(&solid(4, 4, 200), &solid(2, 2, 100), 0.5);
        assert_eq!(m.get_pixel(0, 0)[0], 150);
        let a = average(&[solid(4, 4, 0), solid(4, 4, 100)], 3, 2);
        assert_eq!((a.dimensions(), a.get_pixel(0, 0)[0]), ((3, 2), 50));
        assert!(facts(&solid(10, 5, 250)).contains("bright landscape"));
    }
}
