//! Every operation on the local renderer, deterministically (same inputs, same result), so
//! each flow (imagine, upscale, variation, pan, zoom, blend, describe) runs with no key.
//! The rendered picture stands in for what a model would paint: a variation mixes it into
//! the source, an outpaint or zoom out fills the grown canvas with it.

use bytes::Bytes;
use image::imageops::FilterType;
use image::RgbaImage;

use super::render::{render, render_rgba};
use crate::base::operation::{Operation, Strength, UpscaleStyle};
use crate::providers::imageops::{self, ImageOpError};
use crate::providers::GeneratedImage;

/// One local job, owned so it can run on a blocking thread.
pub struct LocalJob {
    pub operation: Operation,
    pub prompt: String,
    pub seed: u64,
    /// Side of a rendered picture.
    pub size: u32,
    pub n: u32,
    /// The source image and the others (a blend's), as given.
    pub images: Vec<Bytes>,
}

/// What a local job made: images and/or text.
pub struct LocalResult {
    pub images: Vec<GeneratedImage>,
    pub text: Option<String>,
}

fn png(bytes: Vec<u8>) -> GeneratedImage {
    GeneratedImage {
        bytes: Bytes::from(bytes),
        mime: "image/png".into(),
        pixels: None,
    }
}

/// A rendered picture, with its pixels kept for the grid.
fn rendered((bytes, pixels): (Vec<u8>, image::RgbImage)) -> GeneratedImage {
    GeneratedImage {
        pixels: Some(std::sync::Arc::new(pixels)),
        ..png(bytes)
    }
}

/// Seeds a reroll away from the picture it rerolls.
const REROLL: u64 = 0x9E37_79B9_7F4A_7C15;

pub fn perform(job: &LocalJob) -> Result<LocalResult, ImageOpError> {
    let sources = job
        .images
        .iter()
        .map(|b| imageops::decode(b))
        .collect::<Result<Vec<_>, _>>()?;
    let source = || {
        sources
            .first()
            .ok_or_else(|| ImageOpError(format!("{} needs an image", job.operation.kind())))
    };
    if job.operation == Operation::Describe {
        return Ok(LocalResult {
            images: Vec::new(),
            text: Some(describe(&job.prompt, source()?)),
        });
    }
    let mut images = Vec::with_capacity(job.n as usize);
    for i in 0..job.n.max(1) {
        let seed = job.seed.wrapping_add(u64::from(i));
        let one = match job.operation {
            Operation::Generate | Operation::Edit | Operation::Describe => {
                rendered(render(&job.prompt, seed, job.size, job.size))
            }
            Operation::Reroll => rendered(render(&job.prompt, seed ^ REROLL, job.size, job.size)),
            Operation::Variation(strength) => {
                let source = source()?;
                let painted = render_rgba(&job.prompt, seed, source.width(), source.height());
                let keep = match strength {
                    Strength::Subtle => 0.75,
                    Strength::Strong => 0.4,
                };
                encode(&imageops::mix(source, &painted, keep))?
            }
            Operation::Upscale { style, factor } => {
                let source = source()?;
                let filter = match style {
                    UpscaleStyle::Subtle => FilterType::Triangle,
                    UpscaleStyle::Creative => FilterType::CatmullRom,
                };
                let big = imageops::upscale(source, u32::from(factor), filter);
                let big = match style {
                    UpscaleStyle::Subtle => big,
                    UpscaleStyle::Creative => {
                        let detail =
                            render_rgba(&job.prompt, seed, source.width(), source.height());
                        imageops::mix(&big, &detail, 0.9)
                    }
                };
                encode(&big)?
            }
            Operation::Outpaint(direction) => {
                let source = source()?;
                let canvas = imageops::outpaint_canvas(source.width(), source.height(), direction);
                grown(&job.prompt, seed, source, canvas)?
            }
            Operation::ZoomOut { percent } => {
                let source = source()?;
                let canvas = imageops::zoom_canvas(source.width(), source.height(), percent);
                grown(&job.prompt, seed, source, canvas)?
            }
            Operation::Blend(shape) => {
                let (w, h) = imageops::blend_size(shape, job.size);
                let mixed = imageops::average(&sources, w, h);
                let painted = render_rgba(&job.prompt, seed, w, h);
                encode(&imageops::mix(&mixed, &painted, 0.85))?
            }
        };
        images.push(one);
    }
    Ok(LocalResult { images, text: None })
}

fn encode(image: &RgbaImage) -> Result<GeneratedImage, ImageOpError> {
    imageops::encode_png(image).map(png)
}

/// The source on a grown canvas whose new parts are a rendered picture.
fn grown(
    prompt: &str,
    seed: u64,
    source: &RgbaImage,
    canvas: imageops::Canvas,
) -> Result<GeneratedImage, ImageOpError> {
    let background = render_rgba(prompt, seed, canvas.width, canvas.height);
    let out = imageops::place(&background, source, canvas);
    let (w, h) = imageops::fit(out.width(), out.height());
    if (w, h) == out.dimensions() {
        return encode(&out);
    }
    encode(&image::imageops::resize(&out, w, h, FilterType::Triangle))
}

/// Midjourney's describe answers four prompts; these say what the pixels show.
fn describe(prompt: &str, image: &RgbaImage) -> String {
    let facts = imageops::facts(image);
    let ratio = {
        let (w, h) = image.dimensions();
        let g = gcd(w.max(1), h.max(1));
        format!("{}:{}", w / g, h / g)
    };
    let subject = if prompt.trim().is_empty() {
        "a scene".to_owned()
    } else {
        prompt.trim().to_owned()
    };
    [
        format!("1️⃣ {facts} --ar {ratio}"),
        format!("2️⃣ {subject}, {facts} --ar {ratio}"),
        format!("3️⃣ a study of {facts}, soft light --ar {ratio}"),
        format!("4️⃣ {subject} as a painting, {facts} --ar {ratio}"),
    ]
    .join("\n\n")
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::operation::{BlendShape, Direction};
    use crate::providers::local::render::render_png;

    #[test]
    fn rendered_images_carry_the_pixels_their_png_holds() {
        let mut generate = job(Operation::Generate, Vec::new());
        generate.n = 2;
        let made = perform(&generate).expect("generate");
        assert_eq!(made.images.len(), 2);
        for image in &made.images {
            let pixels = image.pixels.as_ref().expect("pixels kept");
            let decoded = image::load_from_memory(&image.bytes)
                .expect("png")
                .to_rgb8();
            assert_eq!(decoded.as_raw(), pixels.as_raw());
        }
    }

    fn job(operation: Operation, images: Vec<Bytes>) -> LocalJob {
        LocalJob {
            operation,
            prompt: "a red fox".into(),
            seed: 7,
            size: 32,
            n: 1,
            images,
        }
    }

    fn dims(image: &GeneratedImage) -> (u32, u32) {
        imageops::decode(&image.bytes).expect("png").dimensions()
    }

    #[test]
    fn every_operation_is_deterministic_and_shaped() {
        let source = Bytes::from(render_png("a cat", 1, 40, 30));
        let cases = [
            (Operation::Generate, (32, 32)),
            (Operation::Reroll, (32, 32)),
            (Operation::Variation(Strength::Strong), (40, 30)),
            (
                Operation::Upscale {
                    style: UpscaleStyle::Creative,
                    factor: 4,
                },
                (160, 120),
            ),
            (Operation::Outpaint(Direction::Up), (40, 45)),
            (Operation::ZoomOut { percent: 200 }, (80, 60)),
            (Operation::Blend(BlendShape::Portrait), (21, 32)),
        ];
        for (op, shape) in cases {
            let images = vec![source.clone(), source.clone()];
            let a = perform(&job(op, images.clone())).expect("run");
            let b = perform(&job(op, images)).expect("run");
            assert_eq!(dims(&a.images[0]), shape, "{op}");
            assert_eq!(a.images[0].bytes, b.images[0].bytes, "{op}");
        }
        let plain = perform(&job(Operation::Generate, vec![])).expect("run");
        let rerolled = perform(&job(Operation::Reroll, vec![])).expect("run");
        assert_ne!(plain.images[0].bytes, rerolled.images[0].bytes);
    }

    #[test]
    fn describe_is_text_and_a_missing_source_is_an_error() {
        let source = Bytes::from(render_png("a cat", 1, 40, 20));
        let out = perform(&job(Operation::Describe, vec![source])).expect("run");
        let text = out.text.expect("text");
        assert!(out.images.is_empty());
        assert!(
            text.starts_with("1️⃣") && text.contains("--ar 2:1"),
            "{text}"
        );
        assert!(perform(&job(Operation::Describe, vec![])).is_err());
    }
}
