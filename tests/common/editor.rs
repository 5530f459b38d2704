//! What the editor's tests share: a signed-in end user's HTTP client, users of the default
//! tenant and of a second one (reached by its claimed host name).
#![allow(dead_code)]

use easel::config::Config;
use easel::server::Roles;
use reqwest::header::HOST;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{images, spawn_app_with, TestApp};

pub const PASSWORD: &str = "Pa55word-Zq7";

pub fn cheap(config: &mut Config) {
    config.users.argon2_memory_kib = 64;
    config.users.argon2_iterations = 1;
}

pub async fn start() -> TestApp {
    spawn_app_with(cheap, Roles::ALL).await
}

pub struct Client<'a> {
    pub app: &'a TestApp,
    pub token: Option<String>,
    pub host: Option<&'static str>,
}

impl Client<'_> {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.app.http.request(method, self.app.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(host) = self.host {
            request = request.header(HOST, host);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    pub async fn session(&self, title: Option<&str>) -> Value {
        let body = title.map_or(json!({}), |t| json!({"title": t}));
        let (status, body) = self.post("/api/sessions", body).await;
        assert_eq!(status, 201, "{body}");
        body["session"].clone()
    }

    pub async fn message(&self, session: &str, text: &str, image_ids: &[&str]) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/sessions/{session}/messages"),
                json!({"role": "user", "text": text, "imageIds": image_ids}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["message"], "Message created successfully");
        body["messageData"].clone()
    }

    pub async fn upload(&self, session: &str) -> Value {
        let form = Form::new()
            .text("sessionId", session.to_owned())
            .text("type", "uploaded")
            .part("image", Part::bytes(images::png(16, 16)).file_name("a.png"));
        let mut request = self
            .app
            .http
            .post(self.app.url("/api/images/upload"))
            .multipart(form);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(host) = self.host {
            request = request.header(HOST, host);
        }
        let response = request.send().await.expect("upload");
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.expect("json")["image"].clone()
    }
}

pub async fn user<'a>(app: &'a TestApp, email: &str, host: Option<&'static str>) -> Client<'a> {
    let anonymous = Client {
        app,
        token: None,
        host,
    };
    let (status, body) = anonymous
        .post(
            "/api/auth/register",
            json!({"email": email, "username": "someone", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    Client {
        app,
        token: Some(body["token"].as_str().expect("token").to_owned()),
        host,
    }
}

/// A user of a second tenant (reached through its claimed host name).
pub async fn other_tenant_user(app: &TestApp) -> Client<'_> {
    let (other, _) = app.new_tenant("b", 60, 5).await;
    app.app
        .store
        .tenant_hosts_set(&other, vec!["b.example".into()])
        .await
        .unwrap();
    user(app, "eve@example.com", Some("b.example")).await
}

pub fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}
