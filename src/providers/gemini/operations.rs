//! Every operation on Gemini as a `generateContent` call: the request a job makes is rewritten
//! into an edit Gemini understands (an instruction before the prompt, the source image, the
//! aspect ratio of what should come back). An upscale is a re-render at `imageSize` 2K or 4K;
//! a variation an edit; an outpaint or a zoom out an edit of the source on a padded canvas
//! whose blank part Gemini fills; a blend an edit of all the images; a reroll the same prompt
//! on another seed; a describe a text-only answer.

use image::Rgba;

use super::wire::GenerateContentResponse;
use crate::base::operation::{BlendShape, Direction, Operation, Strength, UpscaleStyle};
use crate::providers::{imageops, GenerateOutput, GenerateRequest, InputImage, ProviderError};

/// Seeds a reroll away from the picture it rerolls.
const REROLL: u64 = 0x5EED_0F2E_2011;

/// What Gemini is asked for a describe.
pub const DESCRIBE_INSTRUCTION: &str = "Describe this image as four alternative prompts an \
     image model could use to make it, numbered 1️⃣ to 4️⃣, each on its own paragraph.";

fn with_prompt(instruction: &str, prompt: &str) -> String {
    let prompt = prompt.trim();
    if prompt.is_empty() {
        instruction.to_owned()
    } else {
        format!("{instruction} {prompt}")
    }
}

/// `request` rewritten for its operation; `aspect_ratios` are those the models take.
pub fn prepare(
    request: &GenerateRequest,
    aspect_ratios: &[String],
) -> Result<GenerateRequest, String> {
    let mut out = request.clone();
    let op = request.extra.operation;
    let source = || {
        request
            .input_image
            .as_ref()
            .ok_or_else(|| format!("{} needs an image", op.kind()))
    };
    let source_ratio = || -> Result<Option<String>, String> {
        let image = imageops::decode(&source()?.bytes).map_err(|e| e.0)?;
        Ok(imageops::nearest_ratio(
            image.width(),
            image.height(),
            aspect_ratios,
        ))
    };
    match op {
        Operation::Generate | Operation::Edit => {}
        Operation::Reroll => out.seed = Some(request.seed.unwrap_or(0) ^ REROLL),
        Operation::Describe => out.prompt = DESCRIBE_INSTRUCTION.into(),
        Operation::Variation(strength) => {
            let how = match strength {
                Strength::Subtle => "Make a subtle variation of this image: keep its composition, subject and style, change small details.",
                Strength::Strong => "Make a strong variation of this image: keep its subject and mood, free to change composition and details.",
            };
            out.prompt = with_prompt(how, &request.prompt);
            out.aspect_ratio = source_ratio()?;
        }
        Operation::Upscale { style, factor } => {
            let how = match style {
                UpscaleStyle::Subtle => "Re-render this exact image at a higher resolution, changing nothing.",
                UpscaleStyle::Creative => "Re-render this image at a higher resolution, adding fine detail and texture while keeping the composition.",
            };
            out.prompt = how.into();
            out.image_size = Some(if factor >= 4 { "4K" } else { "2K" }.into());
            out.aspect_ratio = source_ratio()?;
        }
        Operation::Outpaint(direction) => {
            let side = match direction {
                Direction::Left => "left",
                Direction::Right => "right",
                Direction::Up => "top",
                Direction::Down => "bottom",
            };
            let how = format!("Extend this picture into the blank white area on its {side}, continuing it seamlessly; keep the rest as it is.");
            pad(&mut out, aspect_ratios, &how, |w, h| {
                imageops::outpaint_canvas(w, h, direction)
            })?;
        }
        Operation::ZoomOut { percent } => {
            let how = "Zoom out: paint the blank white border around this picture so the scene continues seamlessly; keep the middle as it is.";
            pad(&mut out, aspect_ratios, how, |w, h| {
                imageops::zoom_canvas(w, h, percent)
            })?;
        }
        Operation::Blend(shape) => {
            let (how, ratio) = match shape {
                BlendShape::Portrait => ("Blend these images into one portrait picture.", "2:3"),
                BlendShape::Square => ("Blend these images into one square picture.", "1:1"),
                BlendShape::Landscape => ("Blend these images into one landscape picture.", "3:2"),
            };
            out.prompt = with_prompt(how, &request.prompt);
            let (w, h) = imageops::blend_size(shape, 300);
            out.aspect_ratio = if aspect_ratios.iter().any(|r| r == ratio) {
                Some(ratio.into())
            } else {
                imageops::nearest_ratio(w, h, aspect_ratios)
            };
        }
    }
    Ok(out)
}

/// The source on a white canvas grown by `canvas`, and the ratio of that canvas.
fn pad(
    out: &mut GenerateRequest,
    aspect_ratios: &[String],
    how: &str,
    canvas: impl Fn(u32, u32) -> imageops::Canvas,
) -> Result<(), String> {
    let source = out
        .input_image
        .as_ref()
        .ok_or("this operation needs an image")?;
    let image = imageops::decode(&source.bytes).map_err(|e| e.0)?;
    let grown = canvas(image.width(), image.height());
    let padded = imageops::padded(&image, grown, Rgba([255, 255, 255, 255]));
    out.input_image = Some(InputImage {
        bytes: imageops::encode_png(&padded).map_err(|e| e.0)?.into(),
        mime: "image/png".into(),
    });
    out.aspect_ratio = imageops::nearest_ratio(grown.width, grown.height, aspect_ratios);
    out.prompt = with_prompt(how, &out.prompt);
    Ok(())
}

/// A describe's reply: the model's text (not its thoughts), or why there is none.
pub fn parse_text(reply: GenerateContentResponse) -> Result<GenerateOutput, ProviderError> {
    let texts: Vec<String> = reply
        .candidates
        .iter()
        .filter_map(|c| c.content.as_ref())
        .flat_map(|c| c.parts.iter())
        .filter(|p| p.thought != Some(true))
        .filter_map(|p| p.text.as_deref())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if texts.is_empty() {
        let reason = reply
            .prompt_feedback
            .and_then(|f| f.block_reason)
            .unwrap_or_else(|| "NO_TEXT".into());
        return Err(ProviderError::ContentBlocked { reason });
    }
    Ok(GenerateOutput {
        caption: Some(texts.join("\n\n")),
        usage: reply.usage_metadata,
        model_version: reply.model_version,
        response_id: reply.response_id,
        ..GenerateOutput::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::job::Mode;
    use crate::providers::RequestExtras;

    fn request(operation: Operation) -> GenerateRequest {
        let png = image::RgbaImage::from_pixel(300, 200, Rgba([10, 20, 30, 255]));
        GenerateRequest {
            job_id: "j".into(),
            prompt: "a fox".into(),
            mode: Mode::Final,
            input_image: Some(InputImage {
                bytes: imageops::encode_png(&png).expect("png").into(),
                mime: "image/png".into(),
            }),
            seed: Some(3),
            n: 1,
            aspect_ratio: None,
            image_size: None,
            extra: RequestExtras {
                operation,
                ..RequestExtras::default()
            },
        }
    }

    fn ratios() -> Vec<String> {
        ["1:1", "2:3", "3:2", "16:9", "21:9"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn upscale_asks_for_the_bigger_size_in_the_same_shape() {
        let r = prepare(
            &request(Operation::Upscale {
                style: UpscaleStyle::Subtle,
                factor: 4,
            }),
            &ratios(),
        )
        .expect("ok");
        assert_eq!(r.image_size.as_deref(), Some("4K"));
        assert_eq!(r.aspect_ratio.as_deref(), Some("3:2"));
        assert!(r.prompt.starts_with("Re-render"));
    }

    #[test]
    fn outpaint_sends_a_padded_canvas() {
        let r = prepare(&request(Operation::Outpaint(Direction::Right)), &ratios()).expect("ok");
        let sent = imageops::decode(&r.input_image.expect("image").bytes).expect("png");
        assert_eq!(sent.dimensions(), (450, 200));
        assert_eq!(sent.get_pixel(449, 0)[0], 255);
        assert_eq!(sent.get_pixel(0, 0)[0], 10);
        assert_eq!(r.aspect_ratio.as_deref(), Some("21:9"));
        assert!(r.prompt.ends_with("a fox"));
    }

    #[test]
    fn reroll_moves_the_seed_and_describe_asks_for_text() {
        let r = prepare(&request(Operation::Reroll), &ratios()).expect("ok");
        assert_ne!(r.seed, Some(3));
        let d = prepare(&request(Operation::Describe), &ratios()).expect("ok");
        assert_eq!(d.prompt, DESCRIBE_INSTRUCTION);
        let reply: GenerateContentResponse = serde_json::from_value(serde_json::json!({
            "candidates": [{"content": {"parts": [{"text": "1️⃣ a fox"}]}, "finishReason": "STOP"}]
        }))
        .expect("reply");
        assert_eq!(
            parse_text(reply).expect("text").caption.as_deref(),
            Some("1️⃣ a fox")
        );
        assert!(parse_text(GenerateContentResponse::default()).is_err());
    }
}
