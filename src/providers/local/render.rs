//! Deterministic PNG rendering for the local provider.
//!
//! [`render_png`] turns a prompt and a seed into an abstract picture: a palette picked from a
//! hash, a smooth two-colour gradient background, a few soft "hills" or ribbons, and a handful
//! of soft discs, glows and rings, finished with a light vignette. Some words of the prompt steer
//! the result: colour words ("red", "teal", ...) pick the base hue, mood words ("night",
//! "sunny", ...) pick a dark or light theme, and each of the first few words adds one shape whose
//! kind and palette slot depend only on that word, so prompts sharing words share motifs.
//!
//! Why it is deterministic: every parameter comes from a SplitMix64 stream seeded with FNV-1a 64
//! of `(prompt, seed)`, both fixed algorithms written here (std's `DefaultHasher` may change
//! between releases). The maths uses only `f32` operations that IEEE 754 rounds exactly
//! (`+ - * /`, `sqrt`, `floor`, comparisons), so it gives the same bits everywhere; curves use a
//! polynomial sine instead of libm, whose last bits vary across platforms. So the pixels depend
//! only on the inputs, and the PNG bytes additionally on the (lockfile-pinned) `png` version.

use png::{BitDepth, ColorType, Compression, Encoder, FilterType};

/// Longer words beyond this many do not add shapes; keeps long prompts from cluttering the image.
const MAX_WORD_SHAPES: usize = 6;

/// Words shorter than this ("a", "of", "in") are too generic to become motifs.
const MIN_WORD_LEN: usize = 3;

/// Hues (degrees) for colour words, so "a red fox" actually comes out reddish.
const COLOR_WORDS: &[(&str, f32)] = &[
    ("red", 0.0),
    ("crimson", 350.0),
    ("orange", 28.0),
    ("amber", 40.0),
    ("gold", 48.0),
    ("golden", 48.0),
    ("yellow", 56.0),
    ("green", 125.0),
    ("forest", 135.0),
    ("teal", 175.0),
    ("cyan", 188.0),
    ("ocean", 205.0),
    ("sea", 200.0),
    ("blue", 222.0),
    ("indigo", 250.0),
    ("violet", 270.0),
    ("purple", 280.0),
    ("magenta", 305.0),
    ("pink", 330.0),
];

/// Words that force a dark theme.
const DARK_WORDS: &[&str] = &["night", "dark", "midnight", "noir", "space", "shadow"];

/// Words that force a light theme.
const LIGHT_WORDS: &[&str] = &["day", "sunny", "bright", "pastel", "morning", "light"];

/// Renders a deterministic, non-trivial RGB PNG for `prompt` and `seed` at `width` x `height`.
///
/// The caller validates the size (1..=4096); zero is clamped to 1 rather than failing.
pub fn render_png(prompt: &str, seed: u64, width: u32, height: u32) -> Vec<u8> {
    render(prompt, seed, width, height).0
}

/// As [`render_png`], with the pixels the PNG was encoded from.
pub fn render(prompt: &str, seed: u64, width: u32, height: u32) -> (Vec<u8>, image::RgbImage) {
    let width = width.max(1);
    let height = height.max(1);
    let rgb = Scene::new(prompt, seed, width, height).rasterize();
    let png = encode(&rgb, width, height);
    let pixels = image::RgbImage::from_raw(width, height, rgb)
        .unwrap_or_else(|| image::RgbImage::new(width, height));
    (png, pixels)
}

/// The same picture as [`render_png`] as RGBA pixels, for the operations that mix it with
/// other images.
pub fn render_rgba(prompt: &str, seed: u64, width: u32, height: u32) -> image::RgbaImage {
    let width = width.max(1);
    let height = height.max(1);
    let rgb = Scene::new(prompt, seed, width, height).rasterize();
    let rgba = rgb
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    image::RgbaImage::from_raw(width, height, rgba)
        .unwrap_or_else(|| image::RgbaImage::new(width, height))
}

/// Encodes tightly packed RGB8 rows as a PNG.
fn encode(pixels: &[u8], width: u32, height: u32) -> Vec<u8> {
    // Smooth images compress well even at the fastest level; a rough quarter is a fair guess.
    let mut out = Vec::with_capacity(pixels.len() / 4 + 1024);
    let mut encoder = Encoder::new(&mut out, width, height);
    encoder.set_color(ColorType::Rgb);
    encoder.set_depth(BitDepth::Eight);
    // Fast uses fdeflate, which is tuned for filtered PNG data and is far quicker than zlib.
    encoder.set_compression(Compression::Fast);
    // Sub is cheap and suits horizontal gradients; rendering speed matters more than size here.
    encoder.set_filter(FilterType::Sub);
    // The only failures possible below are I/O errors (none when writing into a Vec) and
    // header/data mismatches, which the caller rules out by construction.
    let mut writer = encoder
        .write_header()
        .expect("PNG header for a non-zero size into a Vec cannot fail");
    writer
        .write_image_data(pixels)
        .expect("pixel buffer is exactly width * height * 3 bytes and a Vec write cannot fail");
    writer
        .finish()
        .expect("finishing a complete image into a Vec cannot fail");
    out
}

/// FNV-1a 64 over `bytes`, continuing from `hash`. Fixed forever so images stay reproducible.
fn fnv1a64(mut hash: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The scene key: FNV-1a of the prompt, a separator and the seed.
fn scene_key(prompt: &str, seed: u64) -> u64 {
    // 0xFF never occurs in UTF-8, so no prompt can imitate the separator and shift the seed.
    let bytes = prompt
        .bytes()
        .chain(std::iter::once(0xFF))
        .chain(seed.to_le_bytes());
    fnv1a64(FNV_OFFSET, bytes)
}

/// Case-insensitive word hash, so "Cat" and "cat" give the same motif.
fn word_hash(word: &str) -> u64 {
    fnv1a64(FNV_OFFSET, word.bytes().map(|b| b.to_ascii_lowercase()))
}

/// SplitMix64: tiny, fixed, and its output mixing hides FNV's weak low-bit avalanche.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1). Uses 24 bits so the conversion to f32 is exact.
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform-enough integer in [0, n); the modulo bias is irrelevant for picking shapes.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Sine of `turns` full cycles (1.0 = 2π), without libm so results match on every platform.
/// Parabolic approximation with one refinement step; max error about 0.001, invisible here.
fn sin_turns(turns: f32) -> f32 {
    // Map to [-0.5, 0.5) turns, i.e. [-π, π).
    let t = turns - (turns + 0.5).floor();
    let x = t * 2.0 * std::f32::consts::PI;
    const B: f32 = 4.0 / std::f32::consts::PI;
    const C: f32 = -4.0 / (std::f32::consts::PI * std::f32::consts::PI);
    let y = B * x + C * x * x.abs();
    0.225 * (y * y.abs() - y) + y
}

fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A colour with channels in 0..=255, kept in f32 for blending.
#[derive(Clone, Copy)]
struct Rgb([f32; 3]);

impl Rgb {
    /// HSV to RGB; hue in degrees (any value), saturation and value in 0..=1.
    fn hsv(hue: f32, sat: f32, val: f32) -> Rgb {
        let h = (hue - 360.0 * (hue / 360.0).floor()) / 60.0;
        let sector = (h.floor() as u32).min(5);
        let f = h - sector as f32;
        let v = val * 255.0;
        let p = v * (1.0 - sat);
        let q = v * (1.0 - sat * f);
        let t = v * (1.0 - sat * (1.0 - f));
        Rgb(match sector {
            0 => [v, t, p],
            1 => [q, v, p],
            2 => [p, v, t],
            3 => [p, q, v],
            4 => [t, p, v],
            _ => [v, p, q],
        })
    }
}

/// Alpha-blends `color` over the pixel at `px` (three consecutive channels).
#[inline]
fn blend(px: &mut [f32], color: Rgb, alpha: f32) {
    for (dst, src) in px.iter_mut().zip(color.0) {
        *dst += (src - *dst) * alpha;
    }
}

/// What the prompt's words ask for, beyond the raw hash.
struct Hints {
    hue: Option<f32>,
    dark: Option<bool>,
    /// Hashes of the first few longer words, each becoming one shape.
    words: Vec<u64>,
}

impl Hints {
    fn from_prompt(prompt: &str) -> Hints {
        let mut hints = Hints {
            hue: None,
            dark: None,
            words: Vec::new(),
        };
        for word in prompt
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= MIN_WORD_LEN)
        {
            let is = |list: &[&str]| list.iter().any(|w| w.eq_ignore_ascii_case(word));
            if hints.hue.is_none() {
                hints.hue = COLOR_WORDS
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(word))
                    .map(|&(_, hue)| hue);
            }
            if hints.dark.is_none() {
                if is(DARK_WORDS) {
                    hints.dark = Some(true);
                } else if is(LIGHT_WORDS) {
                    hints.dark = Some(false);
                }
            }
            if hints.words.len() < MAX_WORD_SHAPES {
                hints.words.push(word_hash(word));
            }
        }
        hints
    }
}

#[derive(Clone, Copy)]
enum ShapeKind {
    /// Filled circle with a soft edge.
    Disc,
    /// Radial falloff from the centre, like a light source.
    Glow,
    /// Soft-edged circular outline.
    Ring,
}

struct Shape {
    kind: ShapeKind,
    cx: f32,
    cy: f32,
    radius: f32,
    /// Edge softness (Disc, Ring) in pixels.
    feather: f32,
    /// Half the stroke width (Ring) in pixels.
    half_thickness: f32,
    alpha: f32,
    color: Rgb,
    /// Distance from the centre beyond which the shape contributes nothing.
    extent: f32,
}

impl Shape {
    fn new(kind: ShapeKind, color: Rgb, rng: &mut Rng, w: f32, h: f32) -> Shape {
        let scale = w.min(h);
        // Centres may sit slightly off-canvas so shapes get cropped like in a real picture.
        let cx = rng.range(-0.1, 1.1) * w;
        let cy = rng.range(-0.1, 1.1) * h;
        let (radius, alpha) = match kind {
            ShapeKind::Disc => (rng.range(0.06, 0.3), rng.range(0.45, 0.85)),
            ShapeKind::Glow => (rng.range(0.2, 0.55), rng.range(0.35, 0.7)),
            ShapeKind::Ring => (rng.range(0.1, 0.35), rng.range(0.4, 0.75)),
        };
        let radius = (radius * scale).max(1.0);
        // At least ~1 px of feather keeps edges anti-aliased and smoothstep's range non-empty.
        let feather = (radius * rng.range(0.08, 0.5)).max(1.0);
        let half_thickness = (radius * rng.range(0.03, 0.09)).max(0.5);
        let feather = match kind {
            // Rings look best crisp-ish; a wide feather would smear them into a disc.
            ShapeKind::Ring => feather.min(half_thickness * 1.5 + 1.0),
            _ => feather,
        };
        let extent = match kind {
            ShapeKind::Disc | ShapeKind::Glow => radius,
            ShapeKind::Ring => radius + half_thickness + feather,
        };
        Shape {
            kind,
            cx,
            cy,
            radius,
            feather,
            half_thickness,
            alpha,
            color,
            extent,
        }
    }

    /// Coverage in 0..=1 at distance `d` from the centre.
    #[inline]
    fn coverage(&self, d: f32) -> f32 {
        match self.kind {
            ShapeKind::Disc => 1.0 - smoothstep(self.radius - self.feather, self.radius, d),
            ShapeKind::Glow => {
                let c = 1.0 - d / self.radius;
                c * c
            }
            ShapeKind::Ring => {
                let off = (d - self.radius).abs();
                1.0 - smoothstep(self.half_thickness, self.half_thickness + self.feather, off)
            }
        }
    }

    /// Blends this shape into one row, touching only the columns it can cover.
    fn draw_row(&self, row: &mut [f32], fy: f32) {
        let dy = fy - self.cy;
        let extent2 = self.extent * self.extent;
        let rest = extent2 - dy * dy;
        if rest <= 0.0 {
            return;
        }
        let half = rest.sqrt();
        let width = row.len() / 3;
        // `as usize` saturates negatives (and NaN) to 0, which is the clamp we want.
        let x0 = ((self.cx - half).floor() as usize).min(width);
        let x1 = ((self.cx + half).ceil() as usize).min(width);
        for (x, px) in row.chunks_exact_mut(3).enumerate().take(x1).skip(x0) {
            let dx = x as f32 + 0.5 - self.cx;
            let d2 = dx * dx + dy * dy;
            if d2 >= extent2 {
                continue;
            }
            let a = self.alpha * self.coverage(d2.sqrt());
            if a > 0.0 {
                blend(px, self.color, a);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum BandKind {
    /// Everything below a wavy horizon, like a layer of hills.
    Hill,
    /// A soft wavy stripe.
    Ribbon,
}

struct Band {
    kind: BandKind,
    /// Precomputed curve height per column, so rows do no trigonometry.
    center: Vec<f32>,
    half_thickness: f32,
    feather: f32,
    alpha: f32,
    color: Rgb,
}

impl Band {
    fn new(kind: BandKind, color: Rgb, rng: &mut Rng, w: u32, h: f32) -> Band {
        let scale = (w as f32).min(h);
        let (base, alpha) = match kind {
            BandKind::Hill => (rng.range(0.45, 0.85), rng.range(0.35, 0.7)),
            BandKind::Ribbon => (rng.range(0.2, 0.8), rng.range(0.25, 0.55)),
        };
        let amp = rng.range(0.02, 0.12);
        let cycles = rng.range(0.4, 2.5);
        let phase = rng.unit();
        // A second, faster harmonic keeps the curve from looking like a textbook sine.
        // Kept low in amplitude and frequency so ridges stay rolling rather than spiky.
        let amp2 = amp * rng.range(0.1, 0.3);
        let cycles2 = cycles * rng.range(1.7, 3.0);
        let phase2 = rng.unit();
        let center = (0..w)
            .map(|x| {
                let u = (x as f32 + 0.5) / w as f32;
                let v = base
                    + amp * sin_turns(cycles * u + phase)
                    + amp2 * sin_turns(cycles2 * u + phase2);
                v * h
            })
            .collect();
        let half_thickness = rng.range(0.015, 0.07) * scale;
        let feather = match kind {
            BandKind::Hill => 1.0 + rng.range(0.002, 0.02) * scale,
            BandKind::Ribbon => 1.0 + half_thickness * rng.range(0.3, 1.0),
        };
        Band {
            kind,
            center,
            half_thickness,
            feather,
            alpha,
            color,
        }
    }

    fn draw_row(&self, row: &mut [f32], fy: f32) {
        for (px, &cy) in row.chunks_exact_mut(3).zip(&self.center) {
            let cov = match self.kind {
                BandKind::Hill => smoothstep(cy - self.feather, cy + self.feather, fy),
                BandKind::Ribbon => {
                    let off = (fy - cy).abs();
                    1.0 - smoothstep(self.half_thickness, self.half_thickness + self.feather, off)
                }
            };
            if cov > 0.0 {
                blend(px, self.color, self.alpha * cov);
            }
        }
    }
}

/// 4x4 Bayer matrix: ordered dithering hides 8-bit banding in the gradients, deterministically.
const BAYER: [[f32; 4]; 4] = [
    [0.0, 8.0, 2.0, 10.0],
    [12.0, 4.0, 14.0, 6.0],
    [3.0, 11.0, 1.0, 9.0],
    [15.0, 7.0, 13.0, 5.0],
];

/// Everything needed to rasterize, derived once from the hash.
struct Scene {
    width: u32,
    height: u32,
    bg_from: Rgb,
    bg_to: Rgb,
    /// Unit direction of the background gradient.
    dir: (f32, f32),
    vignette: f32,
    bands: Vec<Band>,
    shapes: Vec<Shape>,
}

impl Scene {
    fn new(prompt: &str, seed: u64, width: u32, height: u32) -> Scene {
        let key = scene_key(prompt, seed);
        let mut rng = Rng::new(key);
        let hints = Hints::from_prompt(prompt);
        let (w, h) = (width as f32, height as f32);

        let base_hue = match hints.hue {
            // Jitter a little so a colour word still gives a different image per seed.
            Some(hue) => hue + rng.range(-12.0, 12.0),
            None => rng.range(0.0, 360.0),
        };
        // Classic harmony schemes as signed hue offsets, so colours always go together.
        let offsets: [f32; 3] = match rng.below(4) {
            0 => [0.0, 30.0, -30.0],   // analogous
            1 => [0.0, 180.0, 30.0],   // complementary
            2 => [0.0, 120.0, -120.0], // triadic
            _ => [0.0, 150.0, -150.0], // split complementary
        };
        let dark = hints.dark.unwrap_or_else(|| rng.unit() < 0.4);

        let palette: [Rgb; 5] = std::array::from_fn(|i| {
            let hue = base_hue + offsets[i % 3] + rng.range(-8.0, 8.0);
            let sat = rng.range(0.45, 0.85);
            let val = if dark {
                rng.range(0.55, 0.95)
            } else {
                rng.range(0.7, 1.0)
            };
            Rgb::hsv(hue, sat, val)
        });
        let (v_from, v_to) = if dark {
            (rng.range(0.06, 0.16), rng.range(0.18, 0.35))
        } else {
            (rng.range(0.85, 0.97), rng.range(0.55, 0.75))
        };
        // The background stays near the base hue (so a colour word dominates the picture);
        // the scheme's full contrast is left to the shapes.
        let bg_from = Rgb::hsv(base_hue + 0.2 * offsets[2], rng.range(0.25, 0.55), v_from);
        let bg_to = Rgb::hsv(base_hue + 0.2 * offsets[1], rng.range(0.3, 0.65), v_to);
        let angle = rng.unit();
        let dir = (sin_turns(angle + 0.25), sin_turns(angle));
        let vignette = rng.range(0.15, 0.5);

        let band_count = rng.below(3) as usize;
        let bands = (0..band_count)
            .map(|_| {
                let kind = if rng.below(2) == 0 {
                    BandKind::Hill
                } else {
                    BandKind::Ribbon
                };
                let color = palette[rng.below(5) as usize];
                Band::new(kind, color, &mut rng, width, h)
            })
            .collect::<Vec<_>>();

        let kinds = [ShapeKind::Disc, ShapeKind::Glow, ShapeKind::Ring];
        let mut shapes = Vec::with_capacity(6 + hints.words.len());
        for _ in 0..3 + rng.below(4) {
            let kind = kinds[rng.below(3) as usize];
            let color = palette[rng.below(5) as usize];
            shapes.push(Shape::new(kind, color, &mut rng, w, h));
        }
        for &wh in &hints.words {
            // Kind and colour slot come from the word alone, so a word keeps its look across
            // seeds and prompts; placement still comes from the scene stream.
            let kind = kinds[(wh % 3) as usize];
            let color = palette[((wh >> 8) % 5) as usize];
            shapes.push(Shape::new(kind, color, &mut rng, w, h));
        }
        // Big shapes behind small ones reads as depth rather than clutter.
        shapes.sort_by(|a, b| b.extent.total_cmp(&a.extent));

        Scene {
            width,
            height,
            bg_from,
            bg_to,
            dir,
            vignette,
            bands,
            shapes,
        }
    }

    /// Renders row by row into packed RGB8, reusing one f32 row buffer.
    fn rasterize(&self) -> Vec<u8> {
        let (width, height) = (self.width as usize, self.height as usize);
        let (w, h) = (self.width as f32, self.height as f32);
        let mut out = vec![0u8; width * height * 3];
        let mut row = vec![0f32; width * 3];
        // Projection onto `dir` spans [-norm/2, norm/2] over the unit square; rescale to 0..1.
        let norm = self.dir.0.abs() + self.dir.1.abs();
        for (y, out_row) in out.chunks_exact_mut(width * 3).enumerate() {
            let fy = y as f32 + 0.5;
            let ny = fy / h - 0.5;
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let nx = (x as f32 + 0.5) / w - 0.5;
                let t = 0.5 + (nx * self.dir.0 + ny * self.dir.1) / norm;
                let t = smoothstep(0.0, 1.0, t);
                px.copy_from_slice(&self.bg_from.0);
                blend(px, self.bg_to, t);
            }
            for band in &self.bands {
                band.draw_row(&mut row, fy);
            }
            for shape in &self.shapes {
                shape.draw_row(&mut row, fy);
            }
            let bayer = &BAYER[y & 3];
            for (x, (src, dst)) in row
                .chunks_exact(3)
                .zip(out_row.chunks_exact_mut(3))
                .enumerate()
            {
                let nx = (x as f32 + 0.5) / w - 0.5;
                // r² reaches 0.5 in the corners, so corners darken by up to vignette/2.
                let shade = 1.0 - self.vignette * (nx * nx + ny * ny);
                let dither = (bayer[x & 3] + 0.5) / 16.0;
                for (d, s) in dst.iter_mut().zip(src) {
                    // `as u8` saturates, so no explicit clamp is needed.
                    *d = (s * shade + dither) as u8;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

    /// Decodes `bytes` and returns (width, height, rgb pixels).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(bytes);
        let mut reader = decoder.read_info().expect("valid PNG header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("valid PNG data");
        assert_eq!(info.color_type, ColorType::Rgb);
        assert_eq!(info.bit_depth, BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Fraction of pixels where some channel differs by more than 24 levels.
    fn changed_fraction(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let changed = a
            .chunks_exact(3)
            .zip(b.chunks_exact(3))
            .filter(|(p, q)| p.iter().zip(q.iter()).any(|(x, y)| x.abs_diff(*y) > 24))
            .count();
        changed as f64 / (a.len() / 3) as f64
    }

    fn distinct_colors(pixels: &[u8]) -> usize {
        let mut colors: Vec<[u8; 3]> = pixels.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
        colors.sort_unstable();
        colors.dedup();
        colors.len()
    }

    #[test]
    fn png_signature() {
        let bytes = render_png("a lighthouse at dusk", 1, 32, 32);
        assert_eq!(bytes[..8], PNG_SIGNATURE);
    }

    #[test]
    fn decodes_to_requested_size() {
        for (w, h) in [(1, 1), (64, 64), (200, 90), (3, 500), (513, 257)] {
            let (dw, dh, pixels) = decode(&render_png("size check", 7, w, h));
            assert_eq!((dw, dh), (w, h));
            assert_eq!(pixels.len(), (w * h * 3) as usize);
        }
    }

    #[test]
    fn zero_size_is_clamped_to_one() {
        let (w, h, _) = decode(&render_png("tiny", 0, 0, 0));
        assert_eq!((w, h), (1, 1));
    }

    #[test]
    fn same_input_is_byte_identical() {
        let a = render_png("a red fox in the snow", 42, 96, 64);
        let b = render_png("a red fox in the snow", 42, 96, 64);
        assert_eq!(a, b);
    }

    #[test]
    fn different_seed_differs_visibly() {
        for prompt in ["a red fox in the snow", "", "night city"] {
            for seed in 0..8u64 {
                let (_, _, a) = decode(&render_png(prompt, seed, 64, 64));
                let (_, _, b) = decode(&render_png(prompt, seed + 1, 64, 64));
                let f = changed_fraction(&a, &b);
                assert!(
                    f > 0.3,
                    "{prompt:?} seeds {seed}/{}: only {f} changed",
                    seed + 1
                );
            }
        }
    }

    #[test]
    fn different_prompt_differs_visibly() {
        let pairs = [
            ("a red fox", "a blue whale"),
            ("cat", "cats"),
            ("sunset", "Sunset"),
            ("mountain lake", "mountain lake."),
        ];
        for (p, q) in pairs {
            let (_, _, a) = decode(&render_png(p, 3, 64, 64));
            let (_, _, b) = decode(&render_png(q, 3, 64, 64));
            let f = changed_fraction(&a, &b);
            assert!(f > 0.3, "{p:?} vs {q:?}: only {f} changed");
        }
    }

    #[test]
    fn image_is_not_flat() {
        for seed in 0..8 {
            let (_, _, pixels) = decode(&render_png("a quiet meadow", seed, 64, 64));
            let n = distinct_colors(&pixels);
            assert!(n > 200, "seed {seed}: only {n} distinct colours");
        }
    }

    #[test]
    fn odd_prompts_render() {
        let long = "word ".repeat(2000);
        for prompt in ["", "   ", "🦊 狐狸 renard", "\0\u{ff}", long.as_str()] {
            let (w, h, _) = decode(&render_png(prompt, u64::MAX, 17, 9));
            assert_eq!((w, h), (17, 9));
        }
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors: guards against accidental algorithm changes.
        assert_eq!(fnv1a64(FNV_OFFSET, *b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, *b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, *b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn sin_turns_is_close_to_sin() {
        for i in -400..=400 {
            let t = i as f32 / 100.0;
            let exact = (t * 2.0 * std::f32::consts::PI).sin();
            assert!((sin_turns(t) - exact).abs() < 0.002, "t = {t}");
        }
    }

    #[test]
    fn colour_word_steers_hue() {
        // Mean red minus mean blue should come out clearly positive for "red" and negative for
        // "blue", averaged over several seeds.
        let bias = |prompt: &str| {
            let mut total = 0i64;
            for seed in 0..6 {
                let (_, _, px) = decode(&render_png(prompt, seed, 32, 32));
                total += px
                    .chunks_exact(3)
                    .map(|p| i64::from(p[0]) - i64::from(p[2]))
                    .sum::<i64>();
            }
            total
        };
        assert!(bias("a red poppy") > 0);
        assert!(bias("a blue poppy") < 0);
    }
}
