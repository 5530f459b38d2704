//! `easel-bench uploads [--dir DIR] [--images N] [--threads T] [--uploads U] [--senders S]`:
//! the image library's pipeline and upload path.
//!
//! 1. Resize: one 12 MP photo to 2048 px with `image`'s Lanczos3 and with
//!    `fast_image_resize`'s, timed (why the library uses the latter).
//! 2. Pipeline: the first N JPEGs of DIR (the sharp anchor's `make_images.js` output, 4000x3000;
//!    or made here) each stored inside 2048 (q90) and thumbnailed inside 300 (q80), T at once:
//!    images/s and peak RSS, to read beside `anchors/sharp/bench.sh` run in the same session.
//! 3. Uploads: U distinct ~2 MB JPEGs sent by S concurrent clients to `POST /v1/uploads` on an
//!    in-process Easel: files/s, MB/s and the process's peak RSS during the run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use easel::uploads::{process, UploadsConfig};
use image::{ImageFormat, RgbImage};

use super::common::{bench_config, runtime, RunningServer};

struct Args {
    dir: Option<PathBuf>,
    images: usize,
    threads: usize,
    uploads: usize,
    senders: usize,
}

fn parse(rest: &[String]) -> anyhow::Result<Args> {
    let mut args = Args {
        dir: None,
        images: 100,
        threads: 2,
        uploads: 200,
        senders: 16,
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().context("a flag without its value")?;
        match flag.as_str() {
            "--dir" => args.dir = Some(PathBuf::from(value)),
            "--images" => args.images = value.parse()?,
            "--threads" => args.threads = value.parse()?,
            "--uploads" => args.uploads = value.parse()?,
            "--senders" => args.senders = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Peak resident set since the last reset, in MiB (`VmHWM`).
fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

/// Starts a new peak: writing 5 to `clear_refs` resets `VmHWM` to the current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A photo-like 12 MP JPEG: smooth gradients with noise, quality 90.
fn camera_jpeg(seed: u32, width: u32, height: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let image = RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = state % 48;
        image::Rgb([
            ((x * 200 / width) + n) as u8,
            ((y * 200 / height) + n) as u8,
            ((seed * 40 % 200) + n) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    image.write_with_encoder(encoder).expect("encode");
    out.into_inner()
}

fn load_inputs(args: &Args) -> anyhow::Result<Vec<Vec<u8>>> {
    if let Some(dir) = &args.dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        return files
            .iter()
            .take(args.images)
            .map(|p| std::fs::read(p).with_context(|| p.display().to_string()))
            .collect();
    }
    Ok((0..args.images as u32)
        .map(|i| camera_jpeg(i, 4000, 3000))
        .collect())
}

fn resize_comparison(photo: &[u8]) -> anyhow::Result<()> {
    let started = Instant::now();
    let decoded = image::load_from_memory_with_format(photo, ImageFormat::Jpeg)?.into_rgb8();
    let decode = started.elapsed();
    let (w, h) = process::fit_inside(decoded.width(), decoded.height(), 2048);
    let started = Instant::now();
    let _ = image::imageops::resize(&decoded, w, h, image::imageops::FilterType::Lanczos3);
    let with_image = started.elapsed();
    let pipeline = UploadsConfig::default().pipeline();
    let started = Instant::now();
    let _ = process::process(photo, &pipeline)?;
    let whole = started.elapsed();
    let started = Instant::now();
    let _ = process::resize_to(&decoded, w, h)?;
    let fast = started.elapsed();
    println!(
        "RESULT uploads resize_{}x{}_to_{w}x{h} decode_ms={} image_lanczos3_ms={} fast_image_resize_lanczos3_ms={} whole_pipeline_ms={}",
        decoded.width(),
        decoded.height(),
        decode.as_millis(),
        with_image.as_millis(),
        fast.as_millis(),
        whole.as_millis()
    );
    Ok(())
}

fn pipeline(inputs: &[Vec<u8>], threads: usize) -> anyhow::Result<()> {
    let pipeline = UploadsConfig::default().pipeline();
    reset_peak_rss();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(input) = inputs.get(i) else { break };
                if let Err(e) = process::process(input, &pipeline) {
                    eprintln!("image {i}: {e}");
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "RESULT uploads pipeline images={} threads={threads} seconds={seconds:.2} per_s={:.1} peak_rss_mb={}",
        inputs.len(),
        inputs.len() as f64 / seconds,
        peak_rss_mb()
    );
    Ok(())
}

/// A JPEG of about `target` bytes: noise compresses badly, so its size follows its area.
fn two_mb_jpeg(target: usize) -> Vec<u8> {
    let mut side = 1000u32;
    let mut bytes = camera_jpeg(7, side, side * 3 / 4);
    for _ in 0..3 {
        let scale = (target as f64 / bytes.len() as f64).sqrt();
        side = ((f64::from(side) * scale) as u32).max(64);
        bytes = camera_jpeg(7, side, side * 3 / 4);
    }
    bytes
}

async fn upload_throughput(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let (mut config, listener) = bench_config(dir).await?;
    config.uploads.max_bytes = 8 * 1024 * 1024;
    let base = format!("http://{}", listener.local_addr()?);
    let app = easel::app::App::build(config).await?;
    let tenant =
        easel::app::create_tenant(app.store.as_ref(), "bench", 1_000_000, 50, None).await?;
    let server = RunningServer::start(&app, listener).await;
    let photo = Arc::new(two_mb_jpeg(2 * 1024 * 1024));
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    reset_peak_rss();
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..args.senders {
        let (http, base, key, photo, next) = (
            http.clone(),
            base.clone(),
            tenant.api_key.clone(),
            photo.clone(),
            next.clone(),
        );
        let total = args.uploads;
        senders.spawn(async move {
            let mut stored = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return stored;
                }
                // Distinct bytes (after the end marker, ignored by decoders): no dedupe.
                let mut bytes = photo.as_ref().clone();
                bytes.extend_from_slice(&(i as u64).to_le_bytes());
                let form = reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::bytes(bytes).file_name("photo.jpg"),
                );
                let response = http
                    .post(format!("{base}/v1/uploads"))
                    .bearer_auth(&key)
                    .multipart(form)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().as_u16() == 201 => stored += 1,
                    Ok(r) => eprintln!("upload {i}: HTTP {}", r.status()),
                    Err(e) => eprintln!("upload {i}: {e}"),
                }
            }
        });
    }
    let mut stored = 0;
    while let Some(done) = senders.join_next().await {
        stored += done.unwrap_or(0);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mb = (stored * photo.len()) as f64 / 1_048_576.0;
    println!(
        "RESULT uploads http files={stored} file_mb={:.2} senders={} seconds={seconds:.2} files_per_s={:.1} mb_per_s={:.1} peak_rss_mb={}",
        photo.len() as f64 / 1_048_576.0,
        args.senders,
        stored as f64 / seconds,
        mb / seconds,
        peak_rss_mb()
    );
    server.stop().await;
    Ok(())
}

pub fn run(rest: &[String]) -> anyhow::Result<()> {
    let args = parse(rest)?;
    let inputs = load_inputs(&args)?;
    let first = inputs.first().context("no input images")?;
    resize_comparison(first)?;
    pipeline(&inputs, args.threads)?;
    drop(inputs);
    let dir = super::common::tempfile_dir()?;
    runtime()?.block_on(upload_throughput(&args, &dir))?;
    super::common::remove_or_keep(&dir);
    Ok(())
}
