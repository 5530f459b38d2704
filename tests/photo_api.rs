//! The photo app's routes (`photo-api.md`): scenes, works, tasks and uploads, in the origin's
//! envelope, messages and status codes; tasks as jobs with a credit per image.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::TestApp;
use easel::config::Config;
use easel::testing::fake_n8n::{FakeN8n, Proof, Reply};
use easel::testing::fake_openai::{FakeOpenAi, Fault, FaultKind};
use easel::testing::fake_wechat::{self, FakeWechat};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "admin-password-1";

fn cheap(config: &mut Config) {
    config.users.argon2_memory_kib = 64;
    config.users.argon2_iterations = 1;
}

struct Photo {
    app: TestApp,
    _wechat: FakeWechat,
}

async fn start(tweak: impl FnOnce(&mut Config)) -> Photo {
    let wechat = FakeWechat::start().await;
    let base = wechat.base_url.clone();
    let app = common::spawn_app_with(
        move |c| {
            cheap(c);
            c.wechat.base_url = base;
            c.wechat.app_id = Some(fake_wechat::APP_ID.into());
            c.wechat.app_secret = Some(easel::base::secret::Secret::new(fake_wechat::APP_SECRET));
            c.worker.retry_base_ms = 5;
            c.worker.retry_max_ms = 20;
            tweak(c);
        },
        easel::server::Roles::ALL,
    )
    .await;
    Photo {
        app,
        _wechat: wechat,
    }
}

impl Photo {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.app.http.request(method, self.app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A mini-program user signed in with WeChat (10 starting credits): its token.
    async fn user(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/auth/wechat/login",
                None,
                json!({"code": format!("user:{name}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["token"].as_str().expect("token").to_owned()
    }

    async fn admin(&self) -> String {
        self.app
            .app
            .accounts
            .create_admin(&self.app.tenant_id, "boss", PASSWORD)
            .await
            .expect("admin");
        let (status, body) = self
            .post(
                "/api/auth/admin/login",
                None,
                json!({"username": "boss", "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["token"].as_str().expect("token").to_owned()
    }

    /// Uploads a photo as base64: what the upload route answered.
    async fn upload(&self, token: &str) -> Value {
        let png = common::images::png(64, 48);
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let (status, body) = self
            .post(
                "/api/upload/base64",
                Some(token),
                json!({"base64": format!("data:image/png;base64,{b64}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    async fn credits(&self, token: &str) -> i64 {
        let (_, body) = self.get("/api/credits/balance", Some(token)).await;
        body["data"]["credits"].as_i64().expect("credits")
    }

    /// Polls the task until its status is one of `wanted`.
    async fn wait_task(&self, token: &str, task_id: &str, wanted: &[&str]) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self
                .get(&format!("/api/tasks/{task_id}"), Some(token))
                .await;
            assert_eq!(status, 200, "{body}");
            if wanted.contains(&body["data"]["task"]["status"].as_str().unwrap_or("")) {
                return body["data"].clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "task still {}",
                body["data"]["task"]["status"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ledger_check(&self) {
        let out = self.app.cli(&["ledger", "check"]);
        assert!(
            out.status.success(),
            "ledger check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn invalid_fields(body: &Value) -> Vec<String> {
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["message"], "参数验证失败", "{body}");
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            assert!(e["message"].is_string());
            e["field"].as_str().expect("field").to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenes_for_anyone_and_managed_by_admins() {
    let p = start(|_| {}).await;
    let admin = p.admin().await;
    let user = p.user("wang").await;
    let scene = json!({"scene_name": "海边写真", "category": "outdoor",
        "prompt_template": "a {{style}} portrait by the sea, {{custom_description}}",
        "description": "Sunset beach", "parameters": {"style": "warm"}});
    let (status, body) = p.post("/api/scenes", None, scene.clone()).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("请先登录")));
    let (status, body) = p.post("/api/scenes", Some(&user), scene.clone()).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("需要管理员权限"))
    );
    let (status, body) = p
        .post(
            "/api/scenes",
            Some(&admin),
            json!({"category": "moon", "cover_image": "nope"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        invalid_fields(&body),
        ["scene_name", "category", "prompt_template", "cover_image"]
    );
    let (status, body) = p.post("/api/scenes", Some(&admin), scene.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "场景创建成功");
    let id = body["data"]["scene"]["scene_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID");
    let mut studio = scene.clone();
    studio["scene_name"] = json!("影棚");
    studio["category"] = json!("studio");
    studio["display_order"] = json!(-1);
    p.post("/api/scenes", Some(&admin), studio).await;

    let (status, body) = p.get("/api/scenes", None).await;
    assert_eq!(status, 200);
    let names: Vec<_> = body["data"]["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scene_name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("影棚"), json!("海边写真")],
        "display order first"
    );
    assert_eq!(
        body["pagination"],
        json!({"page": 1, "pageSize": 50, "total": 2, "totalPages": 1})
    );
    let (_, body) = p
        .get("/api/scenes?keyword=sunset&category=outdoor", Some(&user))
        .await;
    assert_eq!(body["data"]["scenes"].as_array().unwrap().len(), 1);
    let (status, body) = p.get(&format!("/api/scenes/{id}"), None).await;
    assert_eq!(
        (status, body["data"]["scene"]["category"].as_str()),
        (200, Some("outdoor"))
    );
    let (status, body) = p.get("/api/scenes/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"success": false, "message": "场景不存在"}));

    let path = format!("/api/scenes/{id}");
    let (status, body) = p
        .call(Method::PUT, &path, Some(&admin), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("没有需要更新的字段"))
    );
    let (status, body) = p
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"status": "inactive"})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("场景更新成功"))
    );
    let (_, body) = p.get("/api/scenes", None).await;
    assert_eq!(
        body["data"]["scenes"].as_array().unwrap().len(),
        1,
        "inactive is hidden"
    );
    let (status, _) = p
        .call(
            Method::PUT,
            "/api/scenes/nope",
            Some(&admin),
            Some(json!({"status": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = p.call(Method::DELETE, &path, Some(&user), None).await;
    assert_eq!(status, 403);
    let (status, body) = p.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("场景删除成功"))
    );
    let (status, _) = p.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(status, 404);
    p.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_four_with_one_failure_settles_three_and_releases_one() {
    let fake = FakeOpenAi::start().await;
    let p = start(|c| c.providers.default = Some("openai".into())).await;
    p.app
        .add_key("openai", "sk-photo", Some(&fake.base_url), 60_000, 4)
        .await;
    fake.set_fault("sk-photo", Fault::next(FaultKind::ModerationBlocked, 1));
    let admin = p.admin().await;
    let user = p.user("li").await;
    let (_, body) = p
        .post(
            "/api/scenes",
            Some(&admin),
            json!({"scene_name": "旅拍", "category": "outdoor",
                   "prompt_template": "{{person}} in {{city}}"}),
        )
        .await;
    let scene_id = body["data"]["scene"]["scene_id"].clone();
    let file = p.upload(&user).await;
    assert_eq!(p.credits(&user).await, 10);

    // Validation, a missing variable, an unknown upload, too few credits: nothing is charged.
    let (status, body) = p
        .post(
            "/api/tasks/create",
            Some(&user),
            json!({"type": "cooking", "batch_count": 99, "images": []}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(invalid_fields(&body), ["type", "batch_count", "images"]);
    let task = |n: i64, params: Value| {
        json!({"type": "travel", "batch_count": n, "images": [file["fileUrl"]],
               "scene_id": scene_id, "parameters": params})
    };
    let (status, body) = p
        .post(
            "/api/tasks/create",
            Some(&user),
            task(4, json!({"person": "me"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(invalid_fields(&body), ["parameters.city"]);
    let (status, body) = p
        .post(
            "/api/tasks/create",
            Some(&user),
            json!({"type": "travel", "images": ["/uploads/users/nope.jpg"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(invalid_fields(&body), ["images[0]"]);
    let params = json!({"person": "me", "city": "Paris"});
    let (status, body) = p
        .post("/api/tasks/create", Some(&user), task(11, params.clone()))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"success": false, "message": "积分不足",
               "data": {"required": 11, "current": 10, "shortage": 1}})
    );
    assert_eq!(p.credits(&user).await, 10);

    let (status, body) = p
        .post("/api/tasks/create", Some(&user), task(4, params))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "任务创建成功");
    let data = &body["data"];
    assert_eq!(
        (data["status"].as_str(), data["credits_deducted"].as_i64()),
        (Some("pending"), Some(4))
    );
    let task_id = data["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task_id.len(), 36);

    let ended = p.wait_task(&user, &task_id, &["completed", "failed"]).await;
    assert_eq!(ended["task"]["status"], "completed", "{ended}");
    assert_eq!(ended["task"]["progress"], 100);
    let work = &ended["work"];
    let images = work["images"].as_array().expect("images");
    assert_eq!(images.len(), 3, "three images made, one refused: {work}");
    assert_eq!(work["original_images"], json!([file["fileUrl"]]));
    // The work's links load without a header.
    let url = images[0]["url"].as_str().unwrap();
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200, "{url}");
    assert_eq!(p.credits(&user).await, 7, "3 settled, 1 released");
    p.ledger_check();
    // Each image was made from the task's photo, read from the image library.
    let last = fake.stats("sk-photo").last.expect("a request");
    assert!(last.route.contains("edits"), "{}", last.route);
    assert_eq!(last.file_parts().len(), 1, "{:?}", last.parts);

    // The work in the lists: the user's own, not anyone's public ones yet.
    let (_, body) = p.get("/api/works", Some(&user)).await;
    assert_eq!(body["pagination"]["total"], 1);
    let work_id = body["data"]["works"][0]["work_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, body) = p.get("/api/works", None).await;
    assert_eq!(body["pagination"]["total"], 0);
    let (_, body) = p.get("/api/tasks/user/list?type=travel", Some(&user)).await;
    assert_eq!(body["pagination"]["total"], 1);
    assert_eq!(body["data"]["tasks"][0]["task_id"], task_id.as_str());
    let (status, body) = p.get("/api/tasks/stats/queue", Some(&user)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["travel"]["completed"], 3);
    assert_eq!(body["data"]["travel"]["failed"], 1);
    assert_eq!(body["data"]["fitting"]["total"], 0);
    let (status, body) = p
        .post(
            &format!("/api/tasks/{task_id}/cancel"),
            Some(&user),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("只能取消待处理或处理中的任务"))
    );

    // Works: another user sees nothing, the owner changes and deletes.
    let other = p.user("zhao").await;
    let (status, body) = p.get(&format!("/api/tasks/{task_id}"), Some(&other)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("任务不存在"))
    );
    let path = format!("/api/works/{work_id}");
    let (status, body) = p.get(&path, Some(&other)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("作品不存在"))
    );
    let (status, body) = p
        .call(
            Method::PUT,
            &path,
            Some(&other),
            Some(json!({"is_public": true})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("作品不存在或无权操作"))
    );
    let (status, body) = p
        .call(Method::PUT, &path, Some(&user), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("没有需要更新的字段"))
    );
    let (status, body) = p
        .call(
            Method::PUT,
            &path,
            Some(&user),
            Some(json!({"is_public": "yes"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(invalid_fields(&body), ["is_public"]);
    let (status, body) = p
        .call(
            Method::PUT,
            &path,
            Some(&user),
            Some(json!({"is_public": true, "tags": ["巴黎"]})),
        )
        .await;
    assert_eq!((status, body["message"].as_str()), (200, Some("更新成功")));
    assert_eq!(body["data"]["work"]["is_public"], 1);
    let (_, body) = p.get("/api/works", None).await;
    assert_eq!(body["pagination"]["total"], 1, "public now");
    let (status, _) = p.get(&path, Some(&other)).await;
    assert_eq!(status, 200);
    let (status, body) = p
        .post(
            "/api/works/batch/delete",
            Some(&user),
            json!({"work_ids": []}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("请提供要删除的作品ID列表"))
    );
    let (status, body) = p
        .post(
            "/api/works/batch/delete",
            Some(&user),
            json!({"work_ids": [work_id, "nope"]}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("部分作品不存在或无权操作"))
    );
    let (status, body) = p.call(Method::DELETE, &path, Some(&other), None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("作品不存在或无权操作"))
    );
    let (status, body) = p
        .post(
            "/api/works/batch/delete",
            Some(&user),
            json!({"work_ids": [work_id]}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("成功删除 1 个作品"))
    );
    let (status, _) = p.call(Method::DELETE, &path, Some(&user), None).await;
    assert_eq!(status, 404);
    let (status, _) = p.get("/api/works", Some("not-a-token")).await;
    assert_eq!(status, 200, "a bad token on an open route is ignored");
    let (status, _) = p.get("/api/tasks/user/list", None).await;
    assert_eq!(status, 401);
    p.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run_releases_what_has_not_run() {
    let fake = FakeOpenAi::start().await;
    let p = start(|c| c.providers.default = Some("openai".into())).await;
    p.app
        .add_key("openai", "sk-held", Some(&fake.base_url), 60_000, 1)
        .await;
    fake.set_fault("sk-held", Fault::always(FaultKind::Held));
    let admin = p.admin().await;
    let user = p.user("chen").await;
    let file = p.upload(&user).await;
    let (status, body) = p
        .post(
            "/api/tasks/create",
            Some(&user),
            json!({"type": "fitting", "batch_count": 3, "images": [file["fileName"]],
                   "custom_description": "a red dress"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let task_id = body["data"]["task_id"].as_str().unwrap().to_owned();
    assert_eq!(p.credits(&user).await, 7);
    // One image is at the upstream (the key allows one at a time); two wait.
    fake.wait_held(1).await;
    let running = p.wait_task(&user, &task_id, &["processing"]).await;
    assert_eq!(running["work"], Value::Null);
    // The stored task is `processing` from its first job's claim: the lists and the admin
    // filter see it, not only the task's own page.
    let (_, body) = p.get("/api/tasks/user/list", Some(&user)).await;
    assert_eq!(body["data"]["tasks"][0]["status"], "processing", "{body}");
    let (_, body) = p
        .get("/api/admin/tasks?status=processing", Some(&admin))
        .await;
    assert_eq!(body["pagination"]["total"], 1, "{body}");
    assert_eq!(body["data"]["tasks"][0]["task_id"], task_id.as_str());
    let (_, body) = p.get("/api/admin/tasks?status=pending", Some(&admin)).await;
    assert_eq!(body["pagination"]["total"], 0, "{body}");
    let (_, body) = p.get("/api/admin/stats/overview", Some(&admin)).await;
    assert_eq!(body["data"]["tasks"]["processing_tasks"], 1, "{body}");
    assert_eq!(body["data"]["tasks"]["pending_tasks"], 0, "{body}");
    let (status, body) = p
        .post(
            &format!("/api/tasks/{task_id}/cancel"),
            Some(&user),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "任务已取消，积分已退还"})
    );
    fake.release_held();
    let ended = p.wait_task(&user, &task_id, &["cancelled"]).await;
    assert_eq!(ended["task"]["error"], "用户取消");
    assert_eq!(
        p.credits(&user).await,
        10,
        "nothing was made, everything released"
    );
    let (status, body) = p
        .post(
            &format!("/api/tasks/{task_id}/cancel"),
            Some(&user),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("只能取消待处理或处理中的任务"))
    );
    let (status, body) = p
        .post("/api/tasks/nope/cancel", Some(&user), json!({}))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("任务不存在"))
    );
    p.ledger_check();
    p.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_area() {
    let p = start(|_| {}).await;
    let admin = p.admin().await;
    let user = p.user("sun").await;
    let paths = [
        "/api/admin/stats/overview",
        "/api/admin/users",
        "/api/admin/works",
        "/api/admin/tasks",
        "/api/admin/orders",
        "/api/admin/config",
    ];
    for path in paths {
        let (status, body) = p.get(path, None).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some("请先登录")),
            "{path}"
        );
        let (status, body) = p.get(path, Some(&user)).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (403, Some("需要管理员权限")),
            "{path}"
        );
    }
    let file = p.upload(&user).await;
    let (status, body) = p
        .post(
            "/api/tasks/create",
            Some(&user),
            json!({"type": "photography", "batch_count": 2, "images": [file["filePath"]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let task_id = body["data"]["task_id"].as_str().unwrap().to_owned();
    p.wait_task(&user, &task_id, &["completed"]).await;
    p.post(
        "/api/credits/recharge",
        Some(&user),
        json!({"package_id": "basic"}),
    )
    .await;

    let (status, body) = p.get("/api/admin/stats/overview", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["users"]["total_users"], 2, "{data}");
    assert_eq!(data["works"]["completed_works"], 1);
    assert_eq!(data["tasks"]["completed_tasks"], 1);
    assert_eq!(data["orders"]["total_orders"], 1);
    assert_eq!(
        data["orders"]["total_revenue"], "0.00",
        "the order is not paid"
    );
    assert_eq!(data["credits"]["total_consumed"], 2);

    let (_, body) = p.get("/api/admin/users?role=user", Some(&admin)).await;
    assert_eq!(body["pagination"]["total"], 1);
    let listed = &body["data"]["users"][0];
    assert_eq!(listed["credits"], 8);
    let seq = listed["user_id"].as_i64().unwrap();
    let path = format!("/api/admin/users/{seq}");
    let (status, body) = p
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"role": "boss", "credits_adjustment": 1.5})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(invalid_fields(&body), ["role", "credits_adjustment"]);
    let (status, body) = p
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"credits_adjustment": -100})),
        )
        .await;
    assert_eq!((status, body["message"].as_str()), (400, Some("积分不足")));
    let (status, body) = p
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(
                json!({"credits_adjustment": 5, "adjustment_reason": "补偿", "status": "inactive"}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("用户更新成功")),
        "{body}"
    );
    assert_eq!(body["data"]["user"]["credits"], 13);
    assert_eq!(body["data"]["user"]["status"], "inactive");
    let (status, _) = p
        .call(
            Method::PUT,
            "/api/admin/users/999999",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    p.ledger_check();

    let (_, body) = p
        .get(&format!("/api/admin/works?user_id={seq}"), Some(&admin))
        .await;
    assert_eq!(body["pagination"]["total"], 1);
    assert_eq!(body["data"]["works"][0]["nickname"], "用户", "{body}");
    let (_, body) = p
        .get("/api/admin/tasks?type=photography", Some(&admin))
        .await;
    assert_eq!(body["data"]["tasks"][0]["task_id"], task_id.as_str());
    let (_, body) = p.get("/api/admin/tasks?user_id=999999", Some(&admin)).await;
    assert_eq!(body["pagination"]["total"], 0);
    let (_, body) = p.get("/api/admin/orders", Some(&admin)).await;
    assert_eq!(body["data"]["orders"][0]["user_id"], seq);
    assert_eq!(body["data"]["orders"][0]["amount"], "9.90");

    let (_, body) = p.get("/api/admin/config", Some(&admin)).await;
    assert_eq!(body["data"]["configs"]["default_credits"], 10);
    assert_eq!(body["data"]["configs"]["enable_registration"], true);
    let config = |key: &str| format!("/api/admin/config/{key}");
    let (status, body) = p
        .call(
            Method::PUT,
            &config("default_credits"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("配置值不能为空"))
    );
    let (status, body) = p
        .call(
            Method::PUT,
            &config("default_credits"),
            Some(&admin),
            Some(json!({"config_value": "many"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(invalid_fields(&body), ["config_value"]);
    let (status, body) = p
        .call(
            Method::PUT,
            &config("nope"),
            Some(&admin),
            Some(json!({"config_value": 1})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("配置不存在"))
    );
    let (status, body) = p
        .call(
            Method::PUT,
            &config("default_credits"),
            Some(&admin),
            Some(json!({"config_value": 20})),
        )
        .await;
    assert_eq!(body, json!({"success": true, "message": "配置更新成功"}));
    assert_eq!(status, 200);
    let (_, body) = p.get("/api/admin/config", Some(&admin)).await;
    assert_eq!(body["data"]["configs"]["default_credits"], 20);
    // The price of an image is a setting.
    let path = config("credits_per_image");
    let (status, _) = p
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"config_value": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let buyer = p.user("zhou").await;
    let file = p.upload(&buyer).await;
    // The largest batch is a setting too, refused in the validation shape.
    let (status, _) = p
        .call(
            Method::PUT,
            &config("max_batch_count"),
            Some(&admin),
            Some(json!({"config_value": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let body = json!({"type": "fitting", "batch_count": 3, "images": [file["fileName"]]});
    let (status, body) = p.post("/api/tasks/create", Some(&buyer), body).await;
    assert_eq!(status, 400);
    assert_eq!(invalid_fields(&body), ["batch_count"]);
    assert_eq!(body["errors"][0]["message"], "生成数量不能超过2");
    assert_eq!(p.credits(&buyer).await, 10, "nothing held");
    let body = json!({"type": "fitting", "batch_count": 2, "images": [file["fileName"]]});
    let (status, body) = p.post("/api/tasks/create", Some(&buyer), body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["credits_deducted"], 4);
    let task_id = body["data"]["task_id"].as_str().unwrap().to_owned();
    p.wait_task(&buyer, &task_id, &["completed"]).await;
    assert_eq!(p.credits(&buyer).await, 6);
    p.ledger_check();
    p.app.shutdown().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(p: &Photo) -> Socket {
    let url = p.app.url("/ws").replacen("http://", "ws://", 1);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn say(socket: &mut Socket, message: Value) {
    use futures::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            message.to_string(),
        ))
        .await
        .expect("send");
}

/// The next JSON text message (bounded wait).
async fn hear(socket: &mut Socket) -> Value {
    use futures::StreamExt;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("frame");
        if let Ok(text) = frame.to_text() {
            if !text.is_empty() {
                return serde_json::from_str(text).expect("json");
            }
        }
    }
}

/// Messages until one of type `wanted` (returned with the types heard before it).
async fn hear_until(socket: &mut Socket, wanted: &str) -> (Value, Vec<String>) {
    let mut before = Vec::new();
    loop {
        let message = hear(socket).await;
        let kind = message["type"].as_str().unwrap_or("").to_owned();
        if kind == wanted {
            return (message, before);
        }
        before.push(kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_pushes_a_user_s_tasks_to_each_of_its_sockets_only() {
    let p = start(|_| {}).await;
    let user = p.user("wu").await;
    let other = p.user("qian").await;

    let mut refused = socket(&p).await;
    say(&mut refused, json!({"type": "auth"})).await;
    assert_eq!(
        hear(&mut refused).await,
        json!({"type": "error", "message": "缺少认证令牌"})
    );
    let mut refused = socket(&p).await;
    say(&mut refused, json!({"type": "auth", "token": "forged"})).await;
    assert_eq!(
        hear(&mut refused).await,
        json!({"type": "error", "message": "认证失败"})
    );

    let mut first = socket(&p).await;
    say(&mut first, json!({"type": "ping"})).await;
    let pong = hear(&mut first).await;
    assert_eq!(pong["type"], "pong");
    assert!(pong["timestamp"].is_i64());
    let mut second = socket(&p).await;
    let mut theirs = socket(&p).await;
    for (s, token) in [
        (&mut first, &user),
        (&mut second, &user),
        (&mut theirs, &other),
    ] {
        say(s, json!({"type": "auth", "token": token})).await;
        assert_eq!(
            hear(s).await,
            json!({"type": "auth_success", "message": "认证成功"})
        );
    }

    let file = p.upload(&user).await;
    for named in [&file["fileUrl"], &file["fileName"]] {
        let body = json!({"type": "fitting", "images": [named]});
        let (status, body) = p.post("/api/tasks/create", Some(&other), body).await;
        assert_eq!(status, 400, "another user's upload: {body}");
        assert_eq!(invalid_fields(&body), ["images[0]"]);
    }
    let (status, body) = p
        .post(
            "/api/tasks/create",
            Some(&user),
            json!({"type": "fitting", "batch_count": 2, "images": [file["fileName"]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let task_id = body["data"]["task_id"].clone();
    for s in [&mut first, &mut second] {
        let (done, before) = hear_until(s, "task_complete").await;
        assert_eq!(done["task_id"], task_id);
        assert_eq!(
            done["result"]["images"].as_array().unwrap().len(),
            2,
            "{done}"
        );
        assert!(before.iter().all(|t| t == "task_progress"), "{before:?}");
        assert!(!before.is_empty(), "progress before the end");
    }
    // The other user heard nothing of it: its next message answers its own ping.
    say(&mut theirs, json!({"type": "ping"})).await;
    assert_eq!(hear(&mut theirs).await["type"], "pong");
    p.app.shutdown().await;
}

const WORKFLOW_SECRET: &str = "workflow-secret-0123456789";

/// The app with travel tasks on the fake n8n's workflow.
async fn workflow_app(n8n: &FakeN8n, timeout_secs: u64) -> Photo {
    let webhook = n8n.webhook("travel");
    let p = start(move |c| {
        c.photo.travel.workflow_url = Some(webhook);
        c.photo.workflow_secret = Some(easel::base::secret::Secret::new(WORKFLOW_SECRET));
        c.photo.workflow_timeout_secs = timeout_secs;
    })
    .await;
    n8n.set_easel(&p.app.base);
    p
}

async fn travel_task(p: &Photo, token: &str, file: &Value, n: i64) -> String {
    let (status, body) = p
        .post(
            "/api/tasks/create",
            Some(token),
            json!({"type": "travel", "batch_count": n, "images": [file["fileUrl"]],
                   "parameters": {"destination": "Paris"}, "custom_description": "at dusk"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["task_id"]
        .as_str()
        .expect("task_id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_task_is_posted_once_and_ends_once_however_often_n8n_calls_back() {
    let n8n = FakeN8n::start(WORKFLOW_SECRET).await;
    let p = workflow_app(&n8n, 600).await;
    let user = p.user("wu").await;
    let file = p.upload(&user).await;

    // Called back once, the secret in the callback URL.
    n8n.set_proof(Proof::UrlSecret);
    let task_id = travel_task(&p, &user, &file, 2).await;
    let ended = p.wait_task(&user, &task_id, &["completed", "failed"]).await;
    assert_eq!(ended["task"]["status"], "completed", "{ended}");
    let received = n8n.received();
    assert_eq!(
        received.len(),
        1,
        "one webhook call for the task's two jobs"
    );
    let call = &received[0];
    assert_eq!(call.path, "/webhook/travel");
    let body = &call.body;
    assert_eq!(
        (&body["task_id"], &body["type"], &body["batch_count"]),
        (&json!(task_id), &json!("travel"), &json!(2))
    );
    assert_eq!(body["images"], json!([file["fileUrl"]]));
    assert_eq!(body["parameters"]["destination"], "Paris");
    assert_eq!(body["destination"], "Paris");
    assert_eq!(body["custom_description"], "at dusk");
    let signed =
        easel::ledger::payments::sign(WORKFLOW_SECRET.as_bytes(), body.to_string().as_bytes());
    assert_eq!(call.signature.as_deref(), Some(signed.as_str()));
    let input = body["image_urls"][0].as_str().expect("an input link");
    assert_eq!(
        reqwest::get(input).await.unwrap().status(),
        200,
        "n8n can load the input"
    );
    let work = &ended["work"];
    assert_eq!(work["images"].as_array().map(Vec::len), Some(2), "{work}");
    assert_eq!(work["ai_description"], "一张海边的照片");
    let image = work["images"][0]["url"].as_str().unwrap();
    let fetched = reqwest::get(image).await.unwrap();
    assert_eq!(
        fetched.status(),
        200,
        "the image is in Easel's storage: {image}"
    );
    assert_eq!(p.credits(&user).await, 8);
    p.ledger_check();

    // Called back twice, signed: the second changes nothing.
    n8n.set_proof(Proof::Signature);
    n8n.set_reply(Reply::Complete {
        times: 2,
        missing: vec![],
    });
    let task_id = travel_task(&p, &user, &file, 2).await;
    let ended = p.wait_task(&user, &task_id, &["completed", "failed"]).await;
    assert_eq!(ended["task"]["status"], "completed", "{ended}");
    assert_eq!(n8n.wait_callbacks(3).await, [200, 200, 200]);
    let again = p.wait_task(&user, &task_id, &["completed"]).await;
    assert_eq!(again["work"]["work_id"], ended["work"]["work_id"]);
    assert_eq!(again["work"]["images"].as_array().map(Vec::len), Some(2));
    assert_eq!(p.credits(&user).await, 6, "two images settled once");
    p.ledger_check();

    // An image the workflow did not return is released, the other settled.
    n8n.set_reply(Reply::Complete {
        times: 1,
        missing: vec![2],
    });
    let task_id = travel_task(&p, &user, &file, 2).await;
    let ended = p.wait_task(&user, &task_id, &["completed", "failed"]).await;
    assert_eq!(ended["task"]["status"], "completed", "{ended}");
    assert_eq!(ended["work"]["images"].as_array().map(Vec::len), Some(1));
    assert_eq!(p.credits(&user).await, 5, "one settled, one released");

    // A failed run fails the task with the workflow's error and releases everything.
    n8n.set_reply(Reply::Fail("AI生成失败".into()));
    let task_id = travel_task(&p, &user, &file, 2).await;
    let ended = p.wait_task(&user, &task_id, &["completed", "failed"]).await;
    assert_eq!(ended["task"]["status"], "failed", "{ended}");
    assert_eq!(ended["task"]["error"], "AI生成失败");
    assert_eq!(p.credits(&user).await, 5);
    assert_eq!(n8n.received().len(), 4, "one webhook call per task");
    p.ledger_check();
    p.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_callback_unsigned_late_or_never_changes_nothing_and_the_deadline_releases() {
    let n8n = FakeN8n::start(WORKFLOW_SECRET).await;
    let p = workflow_app(&n8n, 2).await;
    let user = p.user("qian").await;
    let file = p.upload(&user).await;

    // Unsigned, wrongly signed or a wrong URL secret: 401 in the envelope, nothing written.
    let payload = json!({"task_id": "nope", "error": "x"});
    let (status, body) = p
        .post("/api/callback/task-failed", None, payload.clone())
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"success": false, "message": "回调验证失败"}))
    );
    let (status, _) = p
        .post("/api/callback/task-complete?secret=guess", None, payload)
        .await;
    assert_eq!(status, 401);
    let url = format!("/api/callback/task-complete?secret={WORKFLOW_SECRET}");
    let (status, body) = p.post(&url, None, json!({})).await;
    assert_eq!(
        (status, body),
        (400, json!({"success": false, "message": "缺少task_id参数"}))
    );
    let (status, body) = p.post(&url, None, json!({"task_id": "unknown"})).await;
    assert_eq!(
        (status, body),
        (200, json!({"success": true, "message": "任务状态已更新"}))
    );

    // A badly signed callback is refused; the task times out and its credits come back.
    n8n.set_proof(Proof::WrongSignature);
    let task_id = travel_task(&p, &user, &file, 2).await;
    assert_eq!(p.credits(&user).await, 8);
    assert_eq!(n8n.wait_callbacks(1).await, [401]);
    let ended = p.wait_task(&user, &task_id, &["completed", "failed"]).await;
    assert_eq!(ended["task"]["status"], "failed", "{ended}");
    assert_eq!(p.credits(&user).await, 10, "the deadline released both");
    p.ledger_check();

    // Never called back: the deadline fails it; a late callback then changes nothing.
    n8n.set_proof(Proof::Signature);
    n8n.set_reply(Reply::Silent);
    let task_id = travel_task(&p, &user, &file, 2).await;
    let ended = p.wait_task(&user, &task_id, &["completed", "failed"]).await;
    assert_eq!(ended["task"]["status"], "failed", "{ended}");
    assert_eq!(p.credits(&user).await, 10);
    assert_eq!(
        n8n.complete(&task_id, 2).await,
        200,
        "late: answered, ignored"
    );
    let after = p.wait_task(&user, &task_id, &["failed"]).await;
    assert_eq!(after["task"], ended["task"]);
    assert_eq!(p.credits(&user).await, 10, "no charge for a late callback");
    p.ledger_check();
    p.app.shutdown().await;
}
