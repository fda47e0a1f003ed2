//! The fake external authority used for Access and Portal verifies
//! signatures the way they do, so tests of our clients can trust it.

use axum::http::StatusCode;
use updspace_events::auth::hmac::sign_v1;

use crate::helpers::{FakeAuthority, TEST_SECRET};

#[tokio::test]
async fn fake_authority_accepts_a_correct_signature_over_the_full_path() {
    let server = FakeAuthority::start(TEST_SECRET, |_| {
        (StatusCode::OK, serde_json::json!({"member": true}))
    })
    .await;
    let path = "/api/v1/communities/c1/members/u1";
    let ts = chrono::Utc::now().timestamp();
    let signature = sign_v1(TEST_SECRET, "GET", path, b"", "req-1", ts);
    let response = reqwest::Client::new()
        .get(server.base_url(path))
        .header("X-Request-Id", "req-1")
        .header("X-Updspace-Timestamp", ts.to_string())
        .header("X-Updspace-Signature", signature)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].signature_valid);
    assert_eq!(calls[0].path, path);
}

#[tokio::test]
async fn fake_authority_refuses_a_signature_over_another_path() {
    let server =
        FakeAuthority::start(TEST_SECRET, |_| (StatusCode::OK, serde_json::json!({}))).await;
    let ts = chrono::Utc::now().timestamp();
    // The Django client's bug: signing the path without the /api/v1 prefix.
    let signature = sign_v1(
        TEST_SECRET,
        "GET",
        "/communities/c1/members/u1",
        b"",
        "req-2",
        ts,
    );
    let response = reqwest::Client::new()
        .get(server.base_url("/api/v1/communities/c1/members/u1"))
        .header("X-Request-Id", "req-2")
        .header("X-Updspace-Timestamp", ts.to_string())
        .header("X-Updspace-Signature", signature)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert!(!server.calls()[0].signature_valid);
}
