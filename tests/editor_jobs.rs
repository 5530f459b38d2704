//! Generation inside an editor session, on the fake Gemini: a three-turn session whose second
//! and third requests carry the earlier turns and the `thoughtSignature` the fake returned
//! (the fake refuses a model turn without it, as Gemini does); the `editor` follower's
//! assistant answers; a failed job's answer.

mod common;
#[path = "common/editor.rs"]
mod editor;

use std::time::Duration;

use common::{spawn_app_with, TestApp};
use easel::events::Wake;
use easel::server::Roles;
use easel::testing::fake_gemini::{FakeGemini, FaultKind};
use editor::{cheap, id, user, Client};
use serde_json::{json, Value};

const KEY: &str = "AIza-editor-test";

async fn gemini_app(fake: &FakeGemini) -> TestApp {
    let base = fake.base_url.clone();
    let app = spawn_app_with(
        move |c| {
            cheap(c);
            c.providers.default = Some("gemini".into());
            c.providers.gemini.base_url = base;
            c.worker.max_attempts = 1;
        },
        Roles::ALL,
    )
    .await;
    app.add_gemini_key(KEY, 600, 4).await;
    app
}

/// The session's messages once it holds `n`, woken by the bus (every change announces
/// itself there); panics after 30 s.
async fn messages_when(client: &Client<'_>, session: &str, n: usize) -> Vec<Value> {
    let mut notices = client.app.app.events.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = client
            .get(&format!("/api/sessions/{session}/messages?limit=100"))
            .await;
        assert_eq!(status, 200, "{body}");
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if messages.len() >= n {
            return messages;
        }
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Ok(Wake::Closed) | Err(_) => panic!("session has {} messages, not {n}", messages.len()),
            Ok(_) => {}
        }
    }
}

async fn ask(client: &Client<'_>, session: &str, text: &str) -> Value {
    let (status, body) = client
        .post(
            &format!("/api/sessions/{session}/messages"),
            json!({"role": "user", "text": text, "generate": true, "params": {"mode": "final"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["jobId"].is_string(), "{body}");
    assert_eq!(body["messageData"]["jobId"], body["jobId"]);
    body
}

fn roles_and_texts(request: &Value) -> Vec<(String, Option<String>, bool)> {
    request["contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|c| {
            let parts = c["parts"].as_array().cloned().unwrap_or_default();
            let text = parts
                .iter()
                .find_map(|p| p["text"].as_str().map(str::to_owned));
            let signature = parts
                .iter()
                .find_map(|p| p["thoughtSignature"].as_str().map(str::to_owned));
            let has_image = parts.iter().any(|p| p.get("inlineData").is_some());
            (
                c["role"].as_str().unwrap_or("").to_owned(),
                text.or(signature),
                has_image,
            )
        })
        .collect()
}

#[tokio::test]
async fn three_turns_carry_the_earlier_turns_and_signatures() {
    let fake = FakeGemini::start().await;
    let app = gemini_app(&fake).await;
    let alice = user(&app, "alice@example.com", None).await;
    let session = id(&alice.session(None).await);

    ask(&alice, &session, "A red cat on a sofa").await;
    let messages = messages_when(&alice, &session, 2).await;
    let answer = &messages[1];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["params"]["status"], "SUCCEEDED");
    let first_signature = answer["params"]["thoughtSignature"]
        .as_str()
        .expect("signature")
        .to_owned();
    assert!(first_signature.starts_with("sig-fake-"), "{answer}");
    assert_eq!(answer["images"].as_array().unwrap().len(), 1);
    assert_eq!(answer["images"][0]["type"], "generated");
    let first_request = fake.stats(KEY).last_body.expect("request");
    assert_eq!(first_request["contents"].as_array().unwrap().len(), 1);
    // The session took its title from the first message.
    let (_, body) = alice.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(body["session"]["title"], "A red cat on a sofa");

    ask(&alice, &session, "now make it blue").await;
    let messages = messages_when(&alice, &session, 4).await;
    assert_eq!(
        messages[3]["params"]["status"], "SUCCEEDED",
        "{}",
        messages[3]
    );
    let second = fake.stats(KEY).last_body.expect("request");
    let turns = roles_and_texts(&second);
    assert_eq!(turns.len(), 3, "{turns:?}");
    assert_eq!(
        turns[0],
        ("user".into(), Some("A red cat on a sofa".into()), false)
    );
    assert_eq!(turns[1].0, "model");
    assert!(turns[1].2, "the earlier result image goes back");
    let model_parts = second["contents"][1]["parts"].as_array().unwrap();
    assert!(model_parts
        .iter()
        .any(|p| p["thoughtSignature"] == json!(first_signature) && p.get("inlineData").is_some()));
    assert_eq!(
        turns[2],
        ("user".into(), Some("now make it blue".into()), false)
    );
    let second_signature = messages[3]["params"]["thoughtSignature"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second_signature, first_signature);

    ask(&alice, &session, "add a hat").await;
    let messages = messages_when(&alice, &session, 6).await;
    assert_eq!(messages[5]["params"]["status"], "SUCCEEDED");
    let third = fake.stats(KEY).last_body.expect("request");
    let turns = roles_and_texts(&third);
    let roles: Vec<_> = turns.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(roles, ["user", "model", "user", "model", "user"]);
    let signatures: Vec<_> = third["contents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            c["parts"]
                .as_array()?
                .iter()
                .find_map(|p| p["thoughtSignature"].as_str())
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(signatures, [first_signature, second_signature]);
    assert_eq!(turns[4].1.as_deref(), Some("add a hat"));

    // The fake refuses a continued edit whose model turn lost its signature, as Gemini does.
    let mut unsigned = third.clone();
    for part in unsigned["contents"][1]["parts"].as_array_mut().unwrap() {
        part.as_object_mut().unwrap().remove("thoughtSignature");
    }
    let response = app
        .http
        .post(format!(
            "{}/v1beta/models/gemini-3-pro-image-preview:generateContent",
            fake.base_url
        ))
        .header("x-goog-api-key", KEY)
        .json(&unsigned)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thought_signature"),
        "{body}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_failed_job_leaves_a_clear_answer_and_context_turns_are_bounded() {
    let fake = FakeGemini::start().await;
    let app = spawn_app_with(
        {
            let base = fake.base_url.clone();
            move |c| {
                cheap(c);
                c.providers.default = Some("gemini".into());
                c.providers.gemini.base_url = base;
                c.worker.max_attempts = 1;
                c.editor.context_turns = 2;
            }
        },
        Roles::ALL,
    )
    .await;
    app.add_gemini_key(KEY, 600, 4).await;
    let alice = user(&app, "alice@example.com", None).await;
    let session = id(&alice.session(None).await);
    alice.message(&session, "one", &[]).await;
    alice.message(&session, "two", &[]).await;
    alice.message(&session, "three", &[]).await;
    fake.set_fault(KEY, FaultKind::PromptBlocked("SAFETY".into()));
    let asked = ask(&alice, &session, "four").await;
    let messages = messages_when(&alice, &session, 5).await;
    let answer = &messages[4];
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["params"]["status"], "FAILED");
    assert_eq!(answer["params"]["jobId"], asked["jobId"]);
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("could not be made"),
        "{answer}"
    );
    assert_eq!(answer["images"], json!([]));
    // Only the last two earlier messages went along.
    let request = fake.stats(KEY).last_body.expect("request");
    let turns = roles_and_texts(&request);
    let texts: Vec<_> = turns
        .iter()
        .map(|t| t.1.clone().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["two", "three", "four"]);
    // A bad choice of provider is refused before anything is stored.
    let (status, body) = alice
        .post(
            &format!("/api/sessions/{session}/messages"),
            json!({"role": "user", "text": "x", "generate": true, "params": {"provider": "nope"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "Validation failed");
    let (_, body) = alice.get(&format!("/api/sessions/{session}/stats")).await;
    assert_eq!(body["stats"]["messageCount"], 5);
    app.shutdown().await;
}
