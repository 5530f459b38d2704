//! The editor's `/api/images/*` and the photo app's `/api/upload/*` routes with real files,
//! in their own envelopes. The end user comes from a test header here (the routes' logic
//! takes an `ImageOwner`); the real router mounts them behind the signed-in user.

mod common;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use common::images::*;
use common::{spawn_app_with, API_ONLY};
use easel::api::{editor_images, photo_uploads};
use easel::app::App;
use easel::base::image::ImageOwner;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Map, Value};

fn owner(headers: &HeaderMap) -> ImageOwner {
    let user = headers
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody");
    ImageOwner::user("tenant_a", user)
}

type Upload = Result<Multipart, MultipartRejection>;

fn seed_router(app: App) -> Router {
    Router::new()
        .route(
            "/api/images/upload",
            post(|State(a): State<App>, h: HeaderMap, m: Upload| async move {
                editor_images::upload(a, owner(&h), m).await
            }),
        )
        .route(
            "/api/images/upload/batch",
            post(|State(a): State<App>, h: HeaderMap, m: Upload| async move {
                editor_images::upload_batch(a, owner(&h), m).await
            }),
        )
        .route(
            "/api/images/{id}",
            get(
                |State(a): State<App>, h: HeaderMap, Path(id): Path<String>| async move {
                    editor_images::get(a, owner(&h), id).await
                },
            )
            .delete(
                |State(a): State<App>, h: HeaderMap, Path(id): Path<String>| async move {
                    editor_images::delete(a, owner(&h), id).await
                },
            ),
        )
        .route(
            "/api/images/session/{session}",
            get(
                |State(a): State<App>,
                 h: HeaderMap,
                 Path(s): Path<String>,
                 q: Query<editor_images::ListParams>| async move {
                    editor_images::list(a, owner(&h), Some(s), q).await
                },
            ),
        )
        .route(
            "/api/upload/single",
            post(|State(a): State<App>, h: HeaderMap, m: Upload| async move {
                photo_uploads::single(a, owner(&h), m).await
            }),
        )
        .route(
            "/api/upload/multiple",
            post(|State(a): State<App>, h: HeaderMap, m: Upload| async move {
                photo_uploads::multiple(a, owner(&h), m).await
            }),
        )
        .route(
            "/api/upload/base64",
            post(
                |State(a): State<App>, h: HeaderMap, Json(b): Json<Map<String, Value>>| async move {
                    photo_uploads::base64(a, owner(&h), b).await
                },
            ),
        )
        .route(
            "/api/upload/base64/batch",
            post(
                |State(a): State<App>, h: HeaderMap, Json(b): Json<Map<String, Value>>| async move {
                    photo_uploads::base64_batch(a, owner(&h), b).await
                },
            ),
        )
        .route(
            "/api/upload/{name}",
            delete(
                |State(a): State<App>,
                 h: HeaderMap,
                 Path(name): Path<String>,
                 Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    photo_uploads::delete(a, owner(&h), name, q.get("subDir").cloned()).await
                },
            ),
        )
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(app)
}

struct Seeds {
    base: String,
    http: reqwest::Client,
    _app: common::TestApp,
}

impl Seeds {
    async fn start() -> Seeds {
        let app = spawn_app_with(|c| c.uploads.max_bytes = 300_000, API_ONLY).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = seed_router(app.app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Seeds {
            base,
            http: reqwest::Client::new(),
            _app: app,
        }
    }

    async fn send(&self, user: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .header("x-test-user", user)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(format!("{}{path}", self.base))
    }
}

fn file(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

fn editor_form(session: &str) -> Form {
    Form::new()
        .text("sessionId", session.to_owned())
        .text("type", "uploaded")
}

#[tokio::test]
async fn editor_upload_get_list_and_delete() {
    let s = Seeds::start().await;
    let form = editor_form("s1").part("image", file(camera_jpeg(300, 200), "photo.png"));
    let (status, body) = s
        .send("alice", s.post("/api/images/upload").multipart(form))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"], "Image uploaded successfully");
    let image = &body["image"];
    for field in [
        "id",
        "sessionId",
        "userId",
        "type",
        "path",
        "thumbPath",
        "mime",
        "width",
        "height",
        "size",
        "refCount",
        "createdAt",
        "updatedAt",
    ] {
        assert!(image.get(field).is_some(), "{field} missing: {image}");
    }
    assert_eq!(
        (
            image["sessionId"].as_str(),
            image["userId"].as_str(),
            image["type"].as_str()
        ),
        (Some("s1"), Some("alice"), Some("uploaded"))
    );
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(200), Some(300))
    );
    assert_eq!(
        (image["mime"].as_str(), image["refCount"].as_u64()),
        (Some("image/jpeg"), Some(0))
    );
    let id = image["id"].as_str().expect("id").to_owned();

    let (status, got) = s.send("alice", s.get(&format!("/api/images/{id}"))).await;
    assert_eq!((status, &got["image"]["id"]), (200, &json!(id)));
    let (status, other) = s.send("bob", s.get(&format!("/api/images/{id}"))).await;
    assert_eq!((status, other), (404, json!({"error": "Image not found"})));
    let (status, _) = s.send("bob", s.delete(&format!("/api/images/{id}"))).await;
    assert_eq!(status, 404);

    let (status, list) = s
        .send("alice", s.get("/api/images/session/s1?limit=10"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["images"][0]["id"], id.as_str());
    assert_eq!(
        list["pagination"],
        json!({"limit": 10, "offset": 0, "total": 1})
    );
    let (_, none) = s.send("bob", s.get("/api/images/session/s1")).await;
    assert_eq!(none["pagination"]["total"], 0);

    let (status, gone) = s
        .send("alice", s.delete(&format!("/api/images/{id}")))
        .await;
    assert_eq!(
        (status, gone),
        (200, json!({"message": "Image deleted successfully"}))
    );
    let (status, _) = s.send("alice", s.get(&format!("/api/images/{id}"))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn editor_refusals_in_the_editor_shape() {
    let s = Seeds::start().await;
    // The body is validated before the file.
    let form = Form::new().text("type", "uploaded");
    let (status, body) = s
        .send("alice", s.post("/api/images/upload").multipart(form))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "Validation failed", "details": "\"sessionId\" is required"})
    );
    let form = editor_form("s1");
    let (status, body) = s
        .send("alice", s.post("/api/images/upload").multipart(form))
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "No image file provided"}))
    );

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"MZ\x90\0 an executable".to_vec(), 400, "Invalid file type"),
        (declared_png(20_000, 20_000), 413, "File too large"),
        (
            encode(
                &image::DynamicImage::ImageRgb8(noise(400, 400, 5)),
                image::ImageFormat::Png,
            ),
            413,
            "File too large",
        ),
        (Vec::new(), 400, "Invalid image"),
        (png(50, 50)[..60].to_vec(), 400, "Invalid image"),
    ];
    for (bytes, want_status, want_error) in cases {
        let form = editor_form("s1").part("image", file(bytes, "x.png"));
        let (status, body) = s
            .send("alice", s.post("/api/images/upload").multipart(form))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (want_status, Some(want_error)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn editor_batch_reports_each_file() {
    let s = Seeds::start().await;
    let form = editor_form("s1")
        .part("images", file(png(40, 40), "a.png"))
        .part("images", file(b"not an image".to_vec(), "b.png"))
        .part("images", file(webp(30, 30), "c.webp"))
        .part("images", file(Vec::new(), "d.gif"));
    let (status, body) = s
        .send("alice", s.post("/api/images/upload/batch").multipart(form))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"], "Batch upload completed");
    let results = &body["results"];
    assert_eq!(results["total"], 4);
    assert_eq!(results["successful"].as_array().map(Vec::len), Some(2));
    let failed: Vec<&str> = results["failed"]
        .as_array()
        .expect("failed")
        .iter()
        .map(|f| f["filename"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(failed, vec!["b.png", "d.gif"]);

    let mut too_many = editor_form("s1");
    for i in 0..11 {
        too_many = too_many.part("images", file(png(8, 8), &format!("{i}.png")));
    }
    let (status, body) = s
        .send(
            "alice",
            s.post("/api/images/upload/batch").multipart(too_many),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("Too many files"))
    );
    let (status, body) = s
        .send(
            "alice",
            s.post("/api/images/upload/batch")
                .multipart(editor_form("s1")),
        )
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "No image files provided"}))
    );
}

#[tokio::test]
async fn photo_single_multiple_and_delete_without_traversal() {
    let s = Seeds::start().await;
    let photo = png(64, 48);
    let form = Form::new().part("file", file(photo.clone(), "me.jpg"));
    let (status, body) = s
        .send("wx1", s.post("/api/upload/single").multipart(form))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["success"].as_bool(), body["message"].as_str()),
        (Some(true), Some("上传成功"))
    );
    let data = &body["data"];
    let name = data["file_name"].as_str().expect("file_name").to_owned();
    assert!(name.ends_with(".jpg"));
    assert_eq!(data["file_path"], format!("uploads/users/{name}"));
    assert_eq!(data["mime_type"], "image/jpeg");
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&photo));
    assert_eq!(data["file_hash"], hash.as_str());

    let (status, body) = s
        .send("wx1", s.post("/api/upload/single").multipart(Form::new()))
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"success": false, "message": "未找到上传的文件"})
        )
    );

    let form = Form::new()
        .part("files", file(png(10, 10), "a.png"))
        .part("files", file(b"<svg/>".to_vec(), "b.png"));
    let (status, body) = s
        .send("wx1", s.post("/api/upload/multiple").multipart(form))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "成功上传 1 个文件");
    assert_eq!(body["data"]["files"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"]["failed"][0]["original_name"], "b.png");

    // Traversal in subDir is refused; another user cannot delete; the owner can.
    for bad in ["..", "../../etc", "a/b", "..%2F.."] {
        let (status, body) = s
            .send(
                "wx1",
                s.delete(&format!("/api/upload/{name}"))
                    .query(&[("subDir", bad)]),
            )
            .await;
        assert_eq!(
            (status, body["success"].as_bool()),
            (400, Some(false)),
            "{bad}"
        );
    }
    let (status, body) = s
        .send("wx2", s.delete(&format!("/api/upload/{name}")))
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"success": false, "message": "文件不存在或删除失败"})
        )
    );
    let (status, body) = s
        .send("wx1", s.delete("/api/upload/..%2F..%2Fetc%2Fpasswd"))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s
        .send(
            "wx1",
            s.delete(&format!("/api/upload/{name}"))
                .query(&[("subDir", "users")]),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"success": true, "message": "文件删除成功"}))
    );
    let (status, _) = s
        .send("wx1", s.delete(&format!("/api/upload/{name}")))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn photo_base64_single_and_batch() {
    let s = Seeds::start().await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let data_url = format!("data:image/png;base64,{}", b64(&png(20, 20)));
    let (status, body) = s
        .send(
            "wx1",
            s.post("/api/upload/base64")
                .json(&json!({"base64": data_url})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    for field in [
        "fileName",
        "filePath",
        "fileUrl",
        "fileSize",
        "mimeType",
        "file_hash",
    ] {
        assert!(data.get(field).is_some(), "{field}: {data}");
    }
    let (status, body) = s
        .send("wx1", s.post("/api/upload/base64").json(&json!({})))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("缺少base64数据"))
    );
    let (status, body) = s
        .send(
            "wx1",
            s.post("/api/upload/base64")
                .json(&json!({"base64": b64(&png(8, 8)), "subDir": "../x"})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("非法的目录"))
    );

    let images = json!([
        b64(&jpeg(&halves(16, 16))),
        "%%%not base64",
        b64(b"plain text"),
        b64(&webp(9, 9))
    ]);
    let (status, body) = s
        .send(
            "wx1",
            s.post("/api/upload/base64/batch")
                .json(&json!({"images": images})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "成功上传 2 张图片，2 张失败");
    assert_eq!(
        body["data"]["summary"],
        json!({"total": 4, "success": 2, "failed": 2})
    );
    let flags: Vec<bool> = body["data"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["success"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(flags, vec![true, false, false, true]);
    let (status, body) = s
        .send(
            "wx1",
            s.post("/api/upload/base64/batch")
                .json(&json!({"images": vec!["x"; 51]})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("单次最多上传50张图片"))
    );
    let (status, body) = s
        .send(
            "wx1",
            s.post("/api/upload/base64/batch")
                .json(&json!({"images": []})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("请提供base64图片数组"))
    );
}
