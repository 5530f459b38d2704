//! What the worker does for operations beyond generate: it finds the images an operation
//! works on (the parent job's chosen image, a blend's uploads) and composes the 2x2 grid of
//! an imagine after the provider's four images.
//! Must not touch: providers' wire formats (they get the images and the operation) or job
//! state (the worker reports the outcome).

use std::sync::Arc;

use bytes::Bytes;
use image::{DynamicImage, RgbImage};

use super::input_image::InputImageError;
use super::worker::WorkerDeps;
use crate::base::image::ImageOwner;
use crate::base::job::{Job, JobStatus};
use crate::base::job_errors;
use crate::providers::{imageops, GenerateOutput, GeneratedImage, InputImage};
use crate::storage::StorageError;
use crate::uploads::UploadError;

fn final_error(code: &'static str, message: String) -> InputImageError {
    InputImageError {
        code,
        message,
        retryable: false,
    }
}

fn unavailable(message: String) -> InputImageError {
    InputImageError {
        code: job_errors::STORAGE_ERROR,
        message,
        retryable: true,
    }
}

/// The object key of image `index` (from 1) of a finished job: its images come before an
/// imagine's grid.
pub fn image_key(parent: &Job, index: u32) -> Option<&String> {
    let images = if parent.params.grid {
        parent.result_keys.len().saturating_sub(1)
    } else {
        parent.result_keys.len()
    };
    let i = index.checked_sub(1)? as usize;
    (i < images).then(|| &parent.result_keys[i])
}

/// How many images (grid aside) a finished job has.
pub fn image_count(job: &Job) -> usize {
    job.result_keys.len() - usize::from(job.params.grid && !job.result_keys.is_empty())
}

/// What an operation works on beyond the plain input image.
pub struct Sources {
    pub images: Vec<InputImage>,
    /// The parent job's upstream result (`result_meta.upstream`), for providers that act on
    /// it upstream (a midjourney button).
    pub parent_upstream: Option<serde_json::Value>,
}

/// The images the job's operation works on when they are not the plain input image: the
/// parent job's chosen image, or every upload a blend names. `None`: the usual input path.
pub async fn source_images(
    deps: &WorkerDeps,
    job: &Job,
) -> Result<Option<Sources>, InputImageError> {
    if let Some(parent_id) = &job.params.parent_job_id {
        let (image, upstream) = parent_image(deps, job, parent_id).await?;
        return Ok(Some(Sources {
            images: vec![image],
            parent_upstream: upstream,
        }));
    }
    if job.params.input_image_ids.len() < 2 {
        return Ok(None);
    }
    let owner = ImageOwner::tenant(&job.tenant_id);
    let mut images = Vec::with_capacity(job.params.input_image_ids.len());
    for id in &job.params.input_image_ids {
        match deps.images.load(&owner, id).await {
            Ok(loaded) => images.push(InputImage {
                bytes: loaded.bytes,
                mime: loaded.mime,
            }),
            Err(UploadError::Unavailable(e)) => return Err(unavailable(e.to_string())),
            Err(_) => {
                return Err(final_error(
                    job_errors::INPUT_IMAGE_NOT_FOUND,
                    format!("the input image '{id}' no longer exists"),
                ))
            }
        }
    }
    Ok(Some(Sources {
        images,
        parent_upstream: None,
    }))
}

async fn parent_image(
    deps: &WorkerDeps,
    job: &Job,
    parent_id: &str,
) -> Result<(InputImage, Option<serde_json::Value>), InputImageError> {
    let gone = |what: &str| {
        final_error(
            job_errors::PARENT_IMAGE_NOT_FOUND,
            format!("the parent job '{parent_id}' {what}"),
        )
    };
    let parent = deps
        .store
        .job_get(&job.tenant_id, parent_id)
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .ok_or_else(|| gone("no longer exists"))?;
    if parent.status != JobStatus::Succeeded {
        return Err(gone("has no images"));
    }
    let index = job.params.parent_index.unwrap_or(1);
    let key = image_key(&parent, index).ok_or_else(|| gone("has no such image"))?;
    let upstream = parent
        .result_meta
        .as_ref()
        .and_then(|m| m.get("upstream"))
        .filter(|u| !u.is_null())
        .cloned();
    match deps.objects.get(key).await {
        Ok(object) => Ok((
            InputImage {
                bytes: object.bytes,
                mime: object.content_type,
            },
            upstream,
        )),
        Err(StorageError::Unavailable(e)) => Err(unavailable(e)),
        Err(_) => Err(gone("image has expired")),
    }
}

/// Cells up to this many pixels (128x128) are composed into a grid on the calling thread.
const SMALL_CELL_PIXELS: u64 = 128 * 128;

/// The provider's four images with their 2x2 grid appended (an imagine), composed off the
/// async workers unless they are small.
pub async fn with_grid(mut output: GenerateOutput) -> Result<GenerateOutput, String> {
    if output.images.len() < 4 {
        return Err(format!(
            "a grid needs 4 images and the provider gave {}",
            output.images.len()
        ));
    }
    output.images.truncate(4);
    // Kept pixels this small make a grid in microseconds, less than a hop to a blocking
    // thread and back; anything to decode, or larger, is composed off the async workers.
    let small = output.images.iter().all(|i| {
        i.pixels
            .as_ref()
            .is_some_and(|p| u64::from(p.width()) * u64::from(p.height()) <= SMALL_CELL_PIXELS)
    });
    // The pixels a provider kept (the local renderer's) are taken, not decoded again.
    let cells: Vec<(Bytes, Option<Arc<RgbImage>>)> = output
        .images
        .iter_mut()
        .map(|i| (i.bytes.clone(), i.pixels.take()))
        .collect();
    let compose = move || {
        let decoded = cells
            .into_iter()
            .map(|(bytes, pixels)| match pixels {
                Some(pixels) => Ok(DynamicImage::ImageRgb8(Arc::unwrap_or_clone(pixels))),
                None => imageops::decode_any(&bytes),
            })
            .collect::<Result<Vec<_>, _>>()?;
        imageops::grid_png_of(decoded)
    };
    let grid = if small {
        compose()
    } else {
        tokio::task::spawn_blocking(compose)
            .await
            .map_err(|e| e.to_string())?
    }
    .map_err(|e| e.0)?;
    output.images.push(GeneratedImage {
        bytes: Bytes::from(grid),
        mime: "image/png".into(),
        pixels: None,
    });
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::local::render::render;

    fn output(keep_pixels: bool) -> GenerateOutput {
        let images = (0..4)
            .map(|seed| {
                let (png, pixels) = render("a lighthouse", seed, 24, 16);
                GeneratedImage {
                    bytes: Bytes::from(png),
                    mime: "image/png".into(),
                    pixels: keep_pixels.then(|| Arc::new(pixels)),
                }
            })
            .collect();
        GenerateOutput {
            images,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_grid_from_kept_pixels_is_the_grid_from_decoding() {
        let from_pixels = with_grid(output(true)).await.expect("grid");
        let from_bytes = with_grid(output(false)).await.expect("grid");
        assert_eq!(from_pixels.images.len(), 5);
        assert_eq!(from_pixels.images[4].bytes, from_bytes.images[4].bytes);
        let grid = image::load_from_memory(&from_pixels.images[4].bytes).expect("png");
        assert_eq!((grid.width(), grid.height()), (48, 32));
        assert!(
            from_pixels.images.iter().all(|i| i.pixels.is_none()),
            "the pixels went into the grid"
        );
    }
}
