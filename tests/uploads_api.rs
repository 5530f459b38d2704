//! The upload routes over HTTP with real files: the tenant's `POST /v1/uploads` (and `GET`,
//! `DELETE /v1/uploads/{id}`) and jobs' `inputImageIds`, in the job API's error shape.

mod common;

use std::time::Duration;

use common::images::*;
use common::{expect_error, spawn_app, spawn_app_with, TestApp, API_ONLY};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

async fn upload_as(
    app: &TestApp,
    key: &str,
    field: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let form = Form::new().part(
        field.to_owned(),
        Part::bytes(bytes).file_name(name.to_owned()),
    );
    app.http
        .post(app.url("/v1/uploads"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .expect("send")
}

async fn upload(app: &TestApp, bytes: Vec<u8>) -> reqwest::Response {
    upload_as(app, &app.api_key, "file", "photo.jpg", bytes).await
}

async fn uploaded(app: &TestApp, bytes: Vec<u8>) -> Value {
    let response = upload(app, bytes).await;
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}

async fn get_upload(app: &TestApp, key: &str, id: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/uploads/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn a_tenant_uploads_an_image_and_reads_it_back() {
    let app = spawn_app().await;
    let photo = camera_jpeg(800, 600);
    let body = uploaded(&app, photo.clone()).await;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&photo));
    assert_eq!(body["contentHash"], hash.as_str());
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(600), Some(800))
    );
    assert_eq!(body["mime"], "image/jpeg");
    assert_eq!(body["refCount"], 0);
    let id = body["id"].as_str().expect("id");

    let stored = app
        .http
        .get(body["url"].as_str().expect("url"))
        .send()
        .await
        .expect("get");
    assert_eq!(stored.status(), 200);
    let bytes = stored.bytes().await.expect("bytes");
    assert_eq!(body["size"].as_u64(), Some(bytes.len() as u64));
    assert!(!has_exif(&bytes), "EXIF served");
    let thumb = app
        .http
        .get(body["thumbUrl"].as_str().expect("thumb"))
        .send()
        .await
        .expect("get");
    let thumb = image::load_from_memory(&thumb.bytes().await.expect("bytes")).expect("thumb");
    assert_eq!((thumb.width(), thumb.height()), (225, 300));

    let again: Value = get_upload(&app, &app.api_key, id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["id"], id);
    assert_eq!(again["contentHash"], hash.as_str());

    // Another tenant: 404, on read and delete.
    let (_, other_key) = app.new_tenant("other", 100, 5).await;
    expect_error(get_upload(&app, &other_key, id).await, 404, "NOT_FOUND").await;
    let deleted = app
        .http
        .delete(app.url(&format!("/v1/uploads/{id}")))
        .bearer_auth(&other_key)
        .send()
        .await
        .expect("send");
    expect_error(deleted, 404, "NOT_FOUND").await;
    // The same bytes by the other tenant: its own object.
    let theirs: Value = upload_as(&app, &other_key, "file", "a.jpg", photo)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["contentHash"], hash.as_str());
    assert_ne!(theirs["url"], body["url"]);

    let deleted = app
        .http
        .delete(app.url(&format!("/v1/uploads/{id}")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("send");
    assert_eq!(deleted.status(), 204);
    expect_error(get_upload(&app, &app.api_key, id).await, 404, "NOT_FOUND").await;
    app.shutdown().await;
}

#[tokio::test]
async fn refused_uploads_name_their_reason_in_the_job_api_shape() {
    let app = spawn_app_with(|c| c.uploads.max_bytes = 200_000, API_ONLY).await;
    let message = expect_error(upload(&app, Vec::new()).await, 400, "INVALID_REQUEST").await;
    assert!(message.contains("EMPTY_FILE"), "{message}");
    let message = expect_error(
        upload(&app, b"%PDF-1.7 not an image".to_vec()).await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    assert!(message.contains("UNSUPPORTED_TYPE"), "{message}");
    let message = expect_error(
        upload(&app, declared_png(20_000, 20_000)).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    assert!(message.contains("20000x20000"), "{message}");
    let whole = png(100, 100);
    let message = expect_error(
        upload(&app, whole[..whole.len() - 20].to_vec()).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert!(message.contains("CORRUPT_IMAGE"), "{message}");
    let big = encode(
        &image::DynamicImage::ImageRgb8(noise(400, 400, 3)),
        image::ImageFormat::Png,
    );
    let message = expect_error(upload(&app, big).await, 413, "PAYLOAD_TOO_LARGE").await;
    assert!(message.contains("FILE_TOO_LARGE"), "{message}");
    // A PNG named .jpg is a PNG: accepted.
    let response = upload_as(&app, &app.api_key, "file", "renamed.jpg", png(20, 20)).await;
    assert_eq!(response.status(), 201);
    // The wrong field, no multipart, no key.
    let message = expect_error(
        upload_as(&app, &app.api_key, "image", "a.png", png(8, 8)).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert!(message.contains("file"), "{message}");
    let response = app
        .http
        .post(app.url("/v1/uploads"))
        .bearer_auth(&app.api_key)
        .json(&json!({"file": "x"}))
        .send()
        .await
        .expect("send");
    expect_error(response, 400, "INVALID_REQUEST").await;
    let anonymous = app
        .http
        .post(app.url("/v1/uploads"))
        .multipart(Form::new().part("file", Part::bytes(png(8, 8))))
        .send()
        .await
        .expect("send");
    expect_error(anonymous, 401, "INVALID_API_KEY").await;
    app.shutdown().await;
}

async fn first_result(app: &TestApp, job: &Value) -> Vec<u8> {
    let url = job["resultUrls"][0].as_str().expect("a result");
    app.http
        .get(url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec()
}

#[tokio::test]
async fn jobs_take_uploads_as_inputs_and_hold_them_until_they_end() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let upload = uploaded(&app, png(64, 64)).await;
    let id = upload["id"].as_str().expect("id").to_owned();

    // Unknown, another tenant's, and both kinds of input at once: 400 naming the problem.
    let message = expect_error(
        app.submit(json!({"prompt": "a cat", "inputImageIds": ["img_nope"]}))
            .await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert!(message.contains("img_nope"), "{message}");
    let (_, other_key) = app.new_tenant("other", 100, 5).await;
    let message = expect_error(
        app.submit_as(
            &other_key,
            json!({"prompt": "a cat", "inputImageIds": [id]}),
            None,
        )
        .await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert!(message.contains(&id), "{message}");
    expect_error(
        app.submit(json!({"prompt": "a cat", "inputImageIds": [id],
                          "inputImageUrl": "https://example.com/a.png"}))
            .await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    let refs = |v: Value| v["refCount"].as_u64();
    assert_eq!(
        refs(
            get_upload(&app, &app.api_key, &id)
                .await
                .json()
                .await
                .expect("json")
        ),
        Some(0)
    );

    let with_input: Value = app
        .submit(json!({"prompt": "a cat", "seed": 7, "inputImageIds": [id]}))
        .await
        .json()
        .await
        .expect("json");
    let plain: Value = app
        .submit(json!({"prompt": "a cat", "seed": 7}))
        .await
        .json()
        .await
        .expect("json");
    let with_input = with_input["jobId"].as_str().expect("job").to_owned();
    let plain = plain["jobId"].as_str().expect("job").to_owned();
    assert_eq!(
        refs(
            get_upload(&app, &app.api_key, &id)
                .await
                .json()
                .await
                .expect("json")
        ),
        Some(1)
    );
    let job: Value = app
        .get_job(&app.api_key, &with_input)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(job["inputImageIds"], json!([id]));
    // Held by a waiting job: not deletable.
    let held = app
        .http
        .delete(app.url(&format!("/v1/uploads/{id}")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("send");
    expect_error(held, 400, "INVALID_STATE").await;

    let worker = app.start_worker();
    let done = app
        .wait_for(&with_input, &["SUCCEEDED"], Duration::from_secs(20))
        .await;
    let baseline = app
        .wait_for(&plain, &["SUCCEEDED"], Duration::from_secs(20))
        .await;
    assert_ne!(
        first_result(&app, &done).await,
        first_result(&app, &baseline).await,
        "the provider got the uploaded image"
    );
    assert_eq!(
        refs(
            get_upload(&app, &app.api_key, &id)
                .await
                .json()
                .await
                .expect("json")
        ),
        Some(0)
    );
    worker.cancel();

    // A canceled job lets go too.
    let queued: Value = app
        .submit(json!({"prompt": "later", "inputImageIds": [id]}))
        .await
        .json()
        .await
        .expect("json");
    let queued = queued["jobId"].as_str().expect("job");
    assert_eq!(
        refs(
            get_upload(&app, &app.api_key, &id)
                .await
                .json()
                .await
                .expect("json")
        ),
        Some(1)
    );
    let canceled = app
        .http
        .delete(app.url(&format!("/v1/jobs/{queued}")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("send");
    assert_eq!(canceled.status(), 200);
    assert_eq!(
        refs(
            get_upload(&app, &app.api_key, &id)
                .await
                .json()
                .await
                .expect("json")
        ),
        Some(0)
    );
    app.shutdown().await;
}
