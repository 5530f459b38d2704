//! The object storage conformance suite: every check runs on the local folder always, and on
//! an S3-compatible server when `EASEL_TEST_S3_URL` is set (see `common::test_s3_settings`
//! for the other variables; `.ci/run` starts s3s-fs and sets them). Without it each S3 half
//! prints a skip note.
//!
//! Each backend is a real Easel (`App::build` from a config), so the suite also covers how
//! storage and result links are wired: `app.objects` is the store, `app.urls` makes the URLs
//! clients get. Keys carry a fresh ULID, so parallel tests and reruns share one bucket.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{spawn_app_with, test_s3_settings, use_s3, TestApp};
use easel::base::clock::now_millis;
use easel::config::Config;
use easel::server::Roles;
use easel::storage::{ObjectStore, ObjectStoreBackend, S3Settings, StorageError};
use serde_json::json;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png, but bytes";

/// One backend under test: its name and an Easel using it.
struct Backend {
    name: &'static str,
    app: TestApp,
    /// S3 only: the settings it was built with.
    s3: Option<S3Settings>,
}

impl Backend {
    fn objects(&self) -> &dyn ObjectStore {
        self.app.app.objects.as_ref()
    }
}

/// The backends this run has for the test `name`, each an app built after `tweak`.
async fn backends(name: &str, tweak: impl Fn(&mut Config) + Clone) -> Vec<Backend> {
    let t = tweak.clone();
    let mut all = vec![Backend {
        name: "local",
        app: spawn_app_with(move |c| t(c), Roles::ALL).await,
        s3: None,
    }];
    match test_s3_settings() {
        Some(s3) => {
            let settings = s3.clone();
            let app = spawn_app_with(
                move |c| {
                    use_s3(c, settings);
                    tweak(c);
                },
                Roles::ALL,
            )
            .await;
            all.push(Backend {
                name: "s3",
                app,
                s3: Some(s3),
            });
        }
        None => eprintln!("{name}: S3 half skipped: EASEL_TEST_S3_URL unset"),
    }
    all
}

fn fresh_prefix() -> String {
    format!("t_{}", ulid::Ulid::new().to_string().to_lowercase())
}

async fn download(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The URL with the last hex digit of its signature changed.
fn flip_signature(url: &str) -> String {
    let param = if url.contains("X-Amz-Signature=") {
        "X-Amz-Signature="
    } else {
        "sig="
    };
    let start = url.find(param).expect("signature") + param.len();
    let end = url[start..].find('&').map_or(url.len(), |i| start + i);
    let last = if url[..end].ends_with('0') { "1" } else { "0" };
    format!("{}{last}{}", &url[..end - 1], &url[end..])
}

fn now_secs() -> i64 {
    now_millis() / 1000
}

#[tokio::test]
async fn put_get_exists_and_not_found() {
    for b in backends("put_get_exists_and_not_found", |_| {}).await {
        let objects = b.objects();
        let key = format!("{}/job/1-0.png", fresh_prefix());
        assert!(!objects.exists(&key).await.expect("exists"), "{}", b.name);
        assert!(
            matches!(objects.get(&key).await, Err(StorageError::NotFound)),
            "{}: get of a missing key",
            b.name
        );
        objects
            .put(&key, Bytes::from_static(PNG), "image/png")
            .await
            .unwrap_or_else(|e| panic!("{}: put: {e}", b.name));
        assert!(objects.exists(&key).await.expect("exists"), "{}", b.name);
        let got = objects.get(&key).await.expect("get");
        assert_eq!(&got.bytes[..], PNG, "{}", b.name);
        // Overwrite: the last put wins.
        objects
            .put(&key, Bytes::from_static(b"second"), "image/png")
            .await
            .expect("put again");
        let again = objects.get(&key).await.expect("get");
        assert_eq!(&again.bytes[..], b"second", "{}", b.name);
        assert_ne!(got.etag, again.etag, "{}: etag follows the bytes", b.name);
        b.app.shutdown().await;
    }
}

#[tokio::test]
async fn content_type_and_etag() {
    let mut etags = Vec::new();
    for b in backends("content_type_and_etag", |_| {}).await {
        let objects = b.objects();
        let prefix = fresh_prefix();
        for (name, content_type) in [
            ("0.png", "image/png"),
            ("1.jpg", "image/jpeg"),
            ("2.webp", "image/webp"),
        ] {
            let key = format!("{prefix}/job/{name}");
            objects
                .put(&key, Bytes::from_static(PNG), content_type)
                .await
                .expect("put");
            let got = objects.get(&key).await.expect("get");
            assert_eq!(got.content_type, content_type, "{}: {key}", b.name);
            assert!(
                got.etag.starts_with('"') && got.etag.ends_with('"'),
                "{}",
                got.etag
            );
            etags.push(got.etag);
        }
        b.app.shutdown().await;
    }
    // Content-addressed: the same bytes have the same validator on every backend and node.
    etags.dedup();
    assert_eq!(etags.len(), 1, "{etags:?}");
}

#[tokio::test]
async fn keys_are_validated() {
    for b in backends("keys_are_validated", |_| {}).await {
        let objects = b.objects();
        for bad in [
            "",
            "../etc/passwd",
            "a//b",
            "a/./b",
            "a/b c",
            "/abs",
            "a/%2e%2e",
            "a?b",
        ] {
            assert!(
                matches!(
                    objects.put(bad, Bytes::from_static(PNG), "image/png").await,
                    Err(StorageError::InvalidKey)
                ),
                "{}: put {bad:?}",
                b.name
            );
            assert!(
                matches!(objects.get(bad).await, Err(StorageError::InvalidKey)),
                "{}: get {bad:?}",
                b.name
            );
            assert!(
                matches!(objects.exists(bad).await, Err(StorageError::InvalidKey)),
                "{}: exists {bad:?}",
                b.name
            );
            assert!(
                matches!(
                    objects
                        .presigned_get_url(bad, Duration::from_secs(60))
                        .await,
                    Err(StorageError::InvalidKey)
                ),
                "{}: presign {bad:?}",
                b.name
            );
        }
        b.app.shutdown().await;
    }
}

/// The URL a client gets downloads the bytes with a plain HTTP client: an Easel-signed
/// `/v1/files` link on the local folder, a presigned GET to the bucket on S3.
#[tokio::test]
async fn result_links_download_the_bytes() {
    for b in backends("result_links_download_the_bytes", |_| {}).await {
        let key = format!("{}/job/1-0.png", fresh_prefix());
        b.objects()
            .put(&key, Bytes::from_static(PNG), "image/png")
            .await
            .expect("put");
        let url = b.app.app.urls.url(&key, now_secs()).await;
        match &b.s3 {
            None => assert!(url.starts_with(&b.app.url("/v1/files/")), "{url}"),
            Some(s3) => {
                let endpoint = s3.endpoint.as_deref().expect("endpoint");
                assert!(url.starts_with(endpoint), "{url}");
                assert!(url.contains("X-Amz-Signature="), "{url}");
                assert!(url.contains("X-Amz-Expires=3600"), "{url}");
            }
        }
        let response = download(&url).await;
        assert_eq!(response.status(), 200, "{}: {url}", b.name);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(content_type, "image/png", "{}", b.name);
        assert_eq!(
            &response.bytes().await.expect("body")[..],
            PNG,
            "{}",
            b.name
        );
        // The same key read again soon after gives the same URL (stable job ETags).
        assert_eq!(
            b.app.app.urls.url(&key, now_secs()).await,
            url,
            "{}",
            b.name
        );
        // A link for a missing object is not a way to probe the store.
        let missing = b
            .app
            .app
            .urls
            .url(&format!("{}/job/9-9.png", fresh_prefix()), now_secs())
            .await;
        assert_eq!(download(&missing).await.status(), 404, "{}", b.name);
        b.app.shutdown().await;
    }
}

/// Links stop working after `storage.url_ttl_secs`. Easel-signed links round their expiry
/// up to the minute (the unit tests in `storage::urls` check their expiry with a clock);
/// here a tampered one is refused, and a 2-second presigned link is used in time, then late.
#[tokio::test]
async fn links_expire_and_cannot_be_forged() {
    for b in backends("links_expire_and_cannot_be_forged", |c| {
        c.storage.url_ttl_secs = 2
    })
    .await
    {
        let key = format!("{}/job/1-0.png", fresh_prefix());
        b.objects()
            .put(&key, Bytes::from_static(PNG), "image/png")
            .await
            .expect("put");
        let url = b.app.app.urls.url(&key, now_secs()).await;
        let response = download(&url).await;
        assert_eq!(response.status(), 200, "{}: {url}", b.name);
        let tampered = flip_signature(&url);
        let status = download(&tampered).await.status().as_u16();
        assert!(
            matches!(status, 401 | 403),
            "{}: tampered link {status}",
            b.name
        );
        if b.s3.is_some() {
            tokio::time::sleep(Duration::from_millis(4_000)).await;
            let status = download(&url).await.status().as_u16();
            assert_eq!(status, 403, "{}: expired presigned link", b.name);
        }
        b.app.shutdown().await;
    }
}

/// `storage.public_base_url` wins on every backend: `<base>/<key>`, no signature.
#[tokio::test]
async fn public_base_url_wins() {
    let tweak =
        |c: &mut Config| c.storage.public_base_url = Some("https://cdn.example.com/".into());
    for b in backends("public_base_url_wins", tweak).await {
        let url = b.app.app.urls.url("ten_1/job_1/1-0.png", now_secs()).await;
        assert_eq!(
            url, "https://cdn.example.com/ten_1/job_1/1-0.png",
            "{}",
            b.name
        );
        b.app.shutdown().await;
    }
}

/// S3 with `presign = false`: Easel's own `/v1/files` links, served from the bucket.
#[tokio::test]
async fn s3_without_presigning_is_served_through_easel() {
    let Some(s3) = test_s3_settings() else {
        eprintln!("s3_without_presigning_is_served_through_easel skipped: EASEL_TEST_S3_URL unset");
        return;
    };
    let app = spawn_app_with(
        |c| {
            use_s3(c, s3);
            c.storage.s3.presign = false;
        },
        Roles::ALL,
    )
    .await;
    let key = format!("{}/job/1-0.png", fresh_prefix());
    app.app
        .objects
        .put(&key, Bytes::from_static(PNG), "image/png")
        .await
        .expect("put");
    let url = app.app.urls.url(&key, now_secs()).await;
    assert!(url.starts_with(&app.url("/v1/files/")), "{url}");
    let response = download(&url).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("etag"));
    assert_eq!(&response.bytes().await.expect("body")[..], PNG);
    app.shutdown().await;
}

/// `storage.s3.public_endpoint`: links are signed for the address clients use (here
/// `localhost` instead of `127.0.0.1`) and still download.
#[tokio::test]
async fn s3_presigns_for_the_public_endpoint() {
    let Some(s3) = test_s3_settings() else {
        eprintln!("s3_presigns_for_the_public_endpoint skipped: EASEL_TEST_S3_URL unset");
        return;
    };
    let endpoint = s3.endpoint.clone().expect("endpoint");
    if !endpoint.contains("127.0.0.1") {
        eprintln!("s3_presigns_for_the_public_endpoint skipped: endpoint is not 127.0.0.1");
        return;
    }
    let public = endpoint.replace("127.0.0.1", "localhost");
    let public_endpoint = public.clone();
    let app = spawn_app_with(
        move |c| {
            use_s3(c, s3);
            c.storage.s3.public_endpoint = Some(public_endpoint);
        },
        Roles::ALL,
    )
    .await;
    let key = format!("{}/job/1-0.png", fresh_prefix());
    app.app
        .objects
        .put(&key, Bytes::from_static(PNG), "image/png")
        .await
        .expect("put");
    let url = app.app.urls.url(&key, now_secs()).await;
    assert!(url.starts_with(&public), "{url}");
    let response = download(&url).await;
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(&response.bytes().await.expect("body")[..], PNG);
    app.shutdown().await;
}

/// A wrong secret or a missing bucket is seen by the start-up check, and the error
/// never carries the secret.
#[tokio::test]
async fn s3_check_reports_bad_credentials_and_buckets() {
    let Some(s3) = test_s3_settings() else {
        eprintln!("s3_check_reports_bad_credentials_and_buckets skipped: EASEL_TEST_S3_URL unset");
        return;
    };
    ObjectStoreBackend::s3(&s3)
        .expect("build")
        .check()
        .await
        .expect("the test bucket answers");
    let mut wrong_secret = s3.clone();
    wrong_secret.secret_access_key = Some(easel::base::secret::Secret::new("not-the-secret-42"));
    let err = ObjectStoreBackend::s3(&wrong_secret)
        .expect("build")
        .check()
        .await
        .expect_err("wrong secret");
    assert!(!err.to_string().contains("not-the-secret-42"), "{err}");
    let mut missing_bucket = s3;
    missing_bucket.bucket = Some(format!("missing-{}", fresh_prefix().replace('_', "-")));
    ObjectStoreBackend::s3(&missing_bucket)
        .expect("build")
        .check()
        .await
        .expect_err("missing bucket");
}

/// A job through the whole gateway with S3 storage: its `resultUrls` download the PNG, and
/// its images are in the bucket.
#[tokio::test]
async fn s3_job_end_to_end() {
    let Some(s3) = test_s3_settings() else {
        eprintln!("s3_job_end_to_end skipped: EASEL_TEST_S3_URL unset");
        return;
    };
    let app = spawn_app_with(|c| use_s3(c, s3), Roles::ALL).await;
    let response = app
        .submit(json!({"prompt": "a lighthouse at dusk", "mode": "draft", "n": 2}))
        .await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<serde_json::Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("jobId")
        .to_owned();
    let job = app
        .wait_for(&job_id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30))
        .await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    let urls = job["resultUrls"].as_array().expect("resultUrls");
    assert_eq!(urls.len(), 2, "{job}");
    for url in urls {
        let url = url.as_str().expect("url");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let response = download(url).await;
        assert_eq!(response.status(), 200, "{url}");
        let bytes = response.bytes().await.expect("body");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {url}");
    }
    let stored = app
        .app
        .store
        .job_get(&app.tenant_id, &job_id)
        .await
        .expect("job_get")
        .expect("job");
    for key in &stored.result_keys {
        assert!(app.app.objects.exists(key).await.expect("exists"), "{key}");
    }
    // The job view is stable between reads (presigned URLs are reused for a while).
    let again: serde_json::Value = app
        .get_job(&app.api_key, &job_id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["resultUrls"], job["resultUrls"]);
    app.shutdown().await;
}

/// The image library on each backend: an upload stored once for the same bytes, its link
/// downloads the stripped JPEG, and the object goes with its last record.
#[tokio::test]
async fn the_image_library_stores_shares_and_deletes_objects() {
    use easel::base::image::{ImageDeleteOutcome, ImageOwner};
    use easel::uploads::Upload;
    for b in backends(
        "the_image_library_stores_shares_and_deletes_objects",
        |_| {},
    )
    .await
    {
        let images = &b.app.app.images;
        // A tenant of its own: reruns against one bucket never meet an earlier object.
        let owner = ImageOwner::user(fresh_prefix(), "u1");
        let photo = Bytes::from(common::images::camera_jpeg(600, 400));
        let first = images
            .upload(&owner, Upload::new(photo.clone()))
            .await
            .expect("upload");
        let second = images
            .upload(&owner, Upload::new(photo))
            .await
            .expect("upload again");
        assert_eq!(first.object.id, second.object.id, "{}: one object", b.name);
        assert_eq!(second.object.holders, 2);
        assert_eq!((first.object.width, first.object.height), (400, 600));

        let url = images.link(&first.object.key).await;
        let response = download(&url).await;
        assert_eq!(response.status(), 200, "{}: {url}", b.name);
        let body = response.bytes().await.expect("body");
        assert!(body.starts_with(&[0xff, 0xd8, 0xff]), "{}", b.name);
        assert!(!common::images::has_exif(&body), "{}: EXIF left", b.name);
        let loaded = images.load(&owner, &first.id).await.expect("load");
        assert_eq!(loaded.bytes, body);

        for (record, last) in [(&first, false), (&second, true)] {
            let outcome = images.delete(&owner, &record.id).await.expect("delete");
            assert_eq!(
                matches!(outcome, ImageDeleteOutcome::Deleted(Some(_))),
                last,
                "{}",
                b.name
            );
            for key in [&first.object.key, &first.object.thumb_key] {
                let exists = b.objects().exists(key).await.expect("exists");
                assert_eq!(exists, !last, "{}: {key}", b.name);
            }
        }
        b.app.shutdown().await;
    }
}
