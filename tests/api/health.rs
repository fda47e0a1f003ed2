use crate::helpers::TestApp;

#[tokio::test]
async fn health_answers_ok_without_touching_dependencies() {
    let mut app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"status": "ok"}));

    // Liveness must not depend on Postgres: close the pool and ask again.
    app.db.close().await;
    let response = app
        .http
        .get(app.url("/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_the_json_envelope() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("json, never HTML");
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}
