//! Tests of the double itself, with hand-made HTTP requests: its envelope, validation,
//! per-chat behaviours, flood control and long polling.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

struct Call {
    status: u16,
    body: Value,
}

async fn call_json(double: &TelegramDouble, method: &str, params: Value) -> Call {
    call_with_token(double, double.token(), method, params).await
}

async fn call_with_token(
    double: &TelegramDouble,
    token: &str,
    method: &str,
    params: Value,
) -> Call {
    let response = reqwest::Client::new()
        .post(format!("{}/bot{token}/{method}", double.api_url()))
        .json(&params)
        .send()
        .await
        .expect("request to the double");
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON envelope");
    Call { status, body }
}

async fn call_form(double: &TelegramDouble, method: &str, form: &str) -> Call {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/bot{}/{method}",
            double.api_url(),
            double.token()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .expect("request to the double");
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON envelope");
    Call { status, body }
}

async fn send(double: &TelegramDouble, chat: i64, text: &str, mode: Option<&str>) -> Call {
    let mut params = json!({"chat_id": chat, "text": text});
    if let Some(mode) = mode {
        params["parse_mode"] = json!(mode);
    }
    call_json(double, "SendMessage", params).await
}

fn assert_error(call: &Call, code: u16, description: &str) {
    assert_eq!(call.status, code, "{}", call.body);
    assert_eq!(call.body["ok"], json!(false));
    assert_eq!(call.body["error_code"], json!(code));
    assert_eq!(call.body["description"], json!(description));
}

async fn unlimited() -> TelegramDouble {
    TelegramDouble::start_with(DoubleOptions {
        limits: RateLimits::off(),
        ..DoubleOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let double = TelegramDouble::start().await;
    let call = call_with_token(&double, "1:wrong", "getMe", json!({})).await;
    assert_error(&call, 401, "Unauthorized");
    assert!(call.body.get("parameters").is_none());
}

#[tokio::test]
async fn get_me_answers_with_every_required_field_whatever_the_case() {
    let double = TelegramDouble::start().await;
    for method in ["getMe", "GetMe", "GETME"] {
        let call = call_json(&double, method, json!({})).await;
        assert_eq!(call.status, 200);
        assert_eq!(call.body["ok"], json!(true));
        let me = &call.body["result"];
        assert_eq!(me["id"], json!(BOT_ID));
        assert_eq!(me["username"], json!(BOT_USERNAME));
        for field in [
            "is_bot",
            "can_join_groups",
            "can_read_all_group_messages",
            "supports_inline_queries",
            "has_main_web_app",
        ] {
            assert!(me[field].is_boolean(), "{field} missing in {me}");
        }
    }
    let call = call_json(&double, "getChatHistory", json!({})).await;
    assert_error(&call, 404, "Not Found");
}

#[tokio::test]
async fn send_message_records_what_it_accepts() {
    let double = unlimited().await;
    let call = call_json(
        &double,
        "SendMessage",
        json!({"chat_id": -1001, "text": "<b>hi</b> &amp; bye", "parse_mode": "HTML",
               "message_thread_id": 7, "disable_notification": true}),
    )
    .await;
    assert_eq!(call.status, 200, "{}", call.body);
    let result = &call.body["result"];
    assert_eq!(result["chat"]["id"], json!(-1001));
    assert_eq!(result["text"], json!("hi & bye"));
    assert_eq!(result["message_thread_id"], json!(7));

    let call = call_form(
        &double,
        "sendmessage",
        "chat_id=-1001&text=plain+%26+simple%21",
    )
    .await;
    assert_eq!(call.status, 200, "{}", call.body);

    let messages = double.messages(-1001);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].text, "<b>hi</b> &amp; bye");
    assert_eq!(messages[0].visible_text, "hi & bye");
    assert_eq!(messages[0].parse_mode, ParseMode::Html);
    assert_eq!(messages[0].message_thread_id, Some(7));
    assert!(messages[0].disable_notification);
    assert_eq!(messages[1].text, "plain & simple!");
    assert_eq!(messages[1].parse_mode, ParseMode::Plain);
    assert_eq!(messages[1].message_thread_id, None);
    assert!(!messages[1].disable_notification);
    assert!(messages[1].message_id > messages[0].message_id);
    assert!(double.messages(5).is_empty());
}

#[tokio::test]
async fn entity_errors_use_telegrams_words() {
    let double = unlimited().await;
    let call = send(&double, 5, "Deploy done.", Some("MarkdownV2")).await;
    assert_error(
        &call,
        400,
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'",
    );
    let call = send(&double, 5, "<b>open", Some("HTML")).await;
    assert_error(
        &call,
        400,
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
    );
    let call = send(&double, 5, "x", Some("bbcode")).await;
    assert_error(&call, 400, "Bad Request: unsupported parse_mode");
    // The same text is fine without a parse mode.
    assert_eq!(send(&double, 5, "Deploy done.", None).await.status, 200);
    assert_eq!(double.messages(5).len(), 1);
}

#[tokio::test]
async fn the_length_limit_applies_after_entity_parsing() {
    let double = unlimited().await;
    // 4096 visible characters written as 16,384 bytes of entities: accepted.
    let call = send(&double, 5, &"&lt;".repeat(4096), Some("HTML")).await;
    assert_eq!(call.status, 200, "{}", call.body);
    let call = send(&double, 5, &"&lt;".repeat(4097), Some("HTML")).await;
    assert_error(&call, 400, "Bad Request: message is too long");
    // Characters outside the BMP count twice (UTF-16).
    let call = send(&double, 5, &"\u{1F600}".repeat(2049), None).await;
    assert_error(&call, 400, "Bad Request: message is too long");
    let call = send(&double, 5, &"\u{1F600}".repeat(2048), None).await;
    assert_eq!(call.status, 200);
    for empty in ["", "  \n", "<b></b>"] {
        let call = send(&double, 5, empty, Some("HTML")).await;
        assert_error(&call, 400, "Bad Request: message text is empty");
    }
    let call = call_json(&double, "sendMessage", json!({"text": "x"})).await;
    assert_error(&call, 400, "Bad Request: chat_id is empty");
}

#[tokio::test]
async fn chat_behaviours() {
    let double = unlimited().await;
    double.set_chat_behaviour(1, ChatBehaviour::Blocked);
    double.set_chat_behaviour(-1_000_000_000_002, ChatBehaviour::Kicked);
    double.set_chat_behaviour(-3, ChatBehaviour::Kicked);
    double.set_chat_behaviour(4, ChatBehaviour::NotFound);
    double.set_chat_behaviour(-5, ChatBehaviour::MigratedTo(-1_000_000_000_005));
    double.set_chat_behaviour(
        6,
        ChatBehaviour::ServerError {
            status: 502,
            times: 2,
        },
    );

    assert_error(
        &send(&double, 1, "x", None).await,
        403,
        "Forbidden: bot was blocked by the user",
    );
    assert_error(
        &send(&double, -1_000_000_000_002, "x", None).await,
        403,
        "Forbidden: bot was kicked from the supergroup chat",
    );
    assert_error(
        &send(&double, -3, "x", None).await,
        403,
        "Forbidden: bot was kicked from the group chat",
    );
    assert_error(
        &send(&double, 4, "x", None).await,
        400,
        "Bad Request: chat not found",
    );
    let call = send(&double, -5, "x", None).await;
    assert_error(
        &call,
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
    );
    assert_eq!(
        call.body["parameters"],
        json!({"migrate_to_chat_id": -1_000_000_000_005_i64})
    );
    assert_error(&send(&double, 6, "x", None).await, 502, "Bad Gateway");
    assert_error(&send(&double, 6, "x", None).await, 502, "Bad Gateway");
    assert_eq!(send(&double, 6, "x", None).await.status, 200);
    assert_eq!(double.all_messages().len(), 1);
    assert_eq!(
        send(&double, -1_000_000_000_005, "x", None).await.status,
        200
    );
}

#[tokio::test]
async fn a_chat_can_fail_after_some_messages_went_through() {
    let double = unlimited().await;
    double.set_chat_behaviour(
        7,
        ChatBehaviour::After {
            ok: 1,
            then: Box::new(ChatBehaviour::TooManyRequests {
                retry_after: 3600,
                times: 1,
            }),
        },
    );
    assert_eq!(send(&double, 7, "part 1", None).await.status, 200);
    let call = send(&double, 7, "part 2", None).await;
    assert_error(&call, 429, "Too Many Requests: retry after 3600");
    assert_eq!(call.body["parameters"], json!({"retry_after": 3600}));
    assert_eq!(double.too_many_requests_sent(), 1);
    assert_eq!(send(&double, 7, "part 2", None).await.status, 200);
    let texts: Vec<String> = double.messages(7).into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["part 1", "part 2"]);
}

#[tokio::test]
async fn flood_control_answers_429_with_retry_after_and_counts() {
    let double = TelegramDouble::start_with(DoubleOptions {
        limits: RateLimits {
            per_chat_burst: 2,
            ..RateLimits::telegram()
        },
        ..DoubleOptions::default()
    })
    .await;
    assert_eq!(send(&double, 9, "one", None).await.status, 200);
    assert_eq!(send(&double, 9, "two", None).await.status, 200);
    let call = send(&double, 9, "three", None).await;
    assert_error(&call, 429, "Too Many Requests: retry after 1");
    assert_eq!(call.body["parameters"], json!({"retry_after": 1}));
    // Other chats are not affected; the refused message is not recorded.
    assert_eq!(send(&double, 10, "other", None).await.status, 200);
    assert_eq!(double.messages(9).len(), 2);
    assert_eq!(double.too_many_requests_sent(), 1);

    // A group's per-minute window says how many whole seconds to wait.
    double.set_limits(RateLimits {
        per_group: 2,
        per_chat_burst: 10,
        ..RateLimits::telegram()
    });
    assert_eq!(send(&double, -20, "a", None).await.status, 200);
    assert_eq!(send(&double, -20, "b", None).await.status, 200);
    let call = send(&double, -20, "c", None).await;
    assert_eq!(call.status, 429);
    let retry_after = call.body["parameters"]["retry_after"].as_u64().unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(double.too_many_requests_sent(), 2);

    // The overall limit spans chats.
    double.set_limits(RateLimits {
        overall: 3,
        overall_window: Duration::from_secs(60),
        ..RateLimits::off()
    });
    let mut statuses = Vec::new();
    for chat in 100..105 {
        statuses.push(send(&double, chat, "x", None).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let records = double.requests();
    assert!(
        records
            .iter()
            .any(|r| r.status == 429 && r.method == "sendmessage")
    );
}

#[tokio::test]
async fn get_updates_returns_injected_updates_until_confirmed() {
    let double = TelegramDouble::start().await;
    let empty = call_json(&double, "getUpdates", json!({"timeout": 0})).await;
    assert_eq!(empty.body["result"], json!([]));

    let first = double.inject_text(-1_000_000_000_001, Some(3), "/start@herald_test_bot");
    let second = double.inject_text(77, None, "/status");
    assert!(second > first);
    let call = call_json(&double, "GetUpdates", json!({"offset": 0, "timeout": 0})).await;
    let updates = call.body["result"].as_array().unwrap().clone();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["update_id"], json!(first));
    let message = &updates[0]["message"];
    assert_eq!(message["chat"]["type"], json!("supergroup"));
    assert_eq!(message["message_thread_id"], json!(3));
    assert_eq!(message["text"], json!("/start@herald_test_bot"));
    assert_eq!(message["entities"][0]["type"], json!("bot_command"));
    assert_eq!(updates[1]["message"]["chat"]["type"], json!("private"));

    // Confirming the first leaves the second.
    let call = call_json(&double, "getUpdates", json!({"offset": first + 1})).await;
    assert_eq!(call.body["result"].as_array().unwrap().len(), 1);
    let call = call_json(&double, "getUpdates", json!({"offset": second + 1})).await;
    assert_eq!(call.body["result"], json!([]));
}

#[tokio::test]
async fn a_long_poll_wakes_up_when_an_update_arrives() {
    let double = Arc::new(TelegramDouble::start().await);
    let poller = {
        let double = Arc::clone(&double);
        tokio::spawn(async move {
            call_json(&double, "getUpdates", json!({"offset": 0, "timeout": 30})).await
        })
    };
    // Give the poll a moment to start waiting; the test holds either way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    double.inject_text(5, None, "/start");
    let call = tokio::time::timeout(Duration::from_secs(20), poller)
        .await
        .expect("the long poll answered once the update arrived")
        .unwrap();
    assert_eq!(call.body["result"].as_array().unwrap().len(), 1);
}
