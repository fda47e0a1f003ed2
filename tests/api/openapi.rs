//! The OpenAPI document against the code it is collected from: the methods
//! the router answers on each documented path, the query fields each
//! operation's parser reads, and the error codes each operation can answer
//! with, all enumerated from the code (the router's `Allow`, the parser's
//! field tables, `Op` and `ErrorCode`), never from a copy of the document.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use updspace_events::app::Op;
use updspace_events::app::requests::fields_of;
use updspace_events::domain::ErrorCode;
use updspace_events::http::openapi::{NATS_OPERATION, NOT_FROM_OPERATIONS, errors_of};
use uuid::Uuid;

use crate::helpers::{TestApp, admin, identity};
use crate::http_contract::{Call, create, event_body, id_of};

const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

/// Every documented operation: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

fn op_of(operation: &Value) -> Option<Op> {
    operation[NATS_OPERATION].as_str().and_then(Op::from_name)
}

/// A parameter, `$ref`s to `#/components/parameters/…` resolved.
fn parameters(doc: &Value, operation: &Value) -> Vec<Value> {
    operation["parameters"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| match p["$ref"].as_str() {
                    Some(r) => {
                        let name = r.trim_start_matches("#/components/parameters/");
                        doc["components"]["parameters"][name].clone()
                    }
                    None => p.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A value the parameter's schema refuses.
fn refused(schema: &Value) -> String {
    if let Some(first) = schema["oneOf"].as_array().and_then(|a| a.first()) {
        return refused(first);
    }
    if schema["enum"].is_array() {
        return "not-one-of-them".into();
    }
    if let Some(min) = schema["minimum"].as_i64() {
        return (min - 1).to_string();
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        return "x".repeat(max as usize + 1);
    }
    "bad".into()
}

/// Every `$ref` in `value`.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| references(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_the_routes_fields_and_errors_of_the_code() {
    let app = TestApp::spawn().await;
    let nobody = identity(Uuid::new_v4(), Uuid::new_v4());

    // Served on both prefixes, with or without a slash, with no signature
    // and no identity at all.
    let mut documents = Vec::new();
    for path in [
        "/api/v1/events/openapi.json",
        "/api/v1/openapi.json",
        "/api/v1/events/openapi.json/",
    ] {
        let reply = Call::new("GET", path, &nobody)
            .unsigned()
            .without("x-tenant-id")
            .without("x-tenant-slug")
            .without("x-user-id")
            .send(&app)
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        let doc: Value = serde_json::from_str(&reply.text).expect("the document is JSON");
        documents.push(doc);
    }
    assert!(documents.iter().all(|d| *d == documents[0]));
    let doc = &documents[0];
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        *doc,
        updspace_events::http::openapi::document_json(),
        "served as built"
    );

    let mut refs = Vec::new();
    references(doc, &mut refs);
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or(&r);
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }

    let tenant = Uuid::new_v4();
    let boss = admin(tenant);
    let event = id_of(&create(&app, &boss, event_body(tenant, "Probe")).await);

    let ops = operations(doc);
    let mut ids = BTreeSet::new();
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut documented_codes = BTreeSet::new();
    let mut seen_ops = BTreeSet::new();
    let mut refusals = 0;
    for (path, method, operation) in &ops {
        let what = format!("{method} {path}");
        by_path
            .entry(path.clone())
            .or_default()
            .insert(method.to_uppercase());
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        let responses = operation["responses"].as_object().expect("responses");

        let Some(op) = op_of(operation) else {
            // The unsigned probes and this document.
            assert_eq!(operation["security"], json!([{}]), "{what}");
            continue;
        };
        seen_ops.insert(op.name());
        assert!(
            operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("hmacSignature").is_some())),
            "{what}: no signature"
        );

        // The error responses are exactly the statuses of the codes the
        // operation can answer with, each listing exactly those codes.
        let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for code in errors_of(op) {
            assert!(!NOT_FROM_OPERATIONS.contains(&code), "{what}: {code}");
            expected
                .entry(code.http_status().to_string())
                .or_default()
                .insert(code.as_str().to_owned());
        }
        let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (status, response) in responses {
            if status.starts_with('2') {
                continue;
            }
            let codes = &response["content"]["application/json"]["schema"]["allOf"][1]["properties"]
                ["error"]["properties"]["code"]["enum"];
            let codes: BTreeSet<String> = codes
                .as_array()
                .unwrap_or_else(|| panic!("{what} {status}: no codes"))
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect();
            documented_codes.extend(codes.iter().cloned());
            got.insert(status.clone(), codes);
        }
        assert_eq!(got, expected, "{what}");
        for must in ["400", "401", "413", "500", "504"] {
            assert!(got.contains_key(must), "{what}: no {must}");
        }

        // The query parameters are the spellings of the fields the parser
        // reads from the query, and nothing else.
        let params = parameters(doc, operation);
        let query: BTreeMap<String, Value> = params
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| (p["name"].as_str().unwrap_or("").to_owned(), p.clone()))
            .collect();
        let expected_names: BTreeSet<String> = if updspace_events::http::openapi::reads_query(op) {
            fields_of(op)
                .iter()
                .flat_map(|f| [f.key.camel.to_owned(), f.key.snake.to_owned()])
                .collect()
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            query.keys().cloned().collect::<BTreeSet<_>>(),
            expected_names,
            "{what}"
        );
        let headers: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "header")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for h in ["X-Request-Id", "X-Tenant-Id", "X-Tenant-Slug", "X-User-Id"] {
            assert!(headers.contains(h), "{what}: header {h}");
        }

        // And the handler reads each: a value its schema refuses is refused,
        // naming the field.
        if path.starts_with("/api/v1/events") {
            for (name, param) in &query {
                let field = fields_of(op)
                    .iter()
                    .find(|f| f.key.camel == name || f.key.snake == name)
                    .expect("a documented field");
                let target = format!(
                    "{}?{name}={}",
                    path.replace("{event_id}", &event),
                    percent_encoding::utf8_percent_encode(
                        &refused(&param["schema"]),
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                let reply = Call::new(&method.to_uppercase(), &target, &boss)
                    .v2()
                    .send(&app)
                    .await;
                let body = reply.json();
                let named = body["error"]["details"]["fields"]
                    .get(field.key.camel)
                    .is_some()
                    || (reply.status == 400
                        && body["error"]["code"]
                            .as_str()
                            .is_some_and(|c| c.eq_ignore_ascii_case(&format!("INVALID_{name}"))));
                assert!(
                    named,
                    "{what}: ?{name} refused without naming it: {} {}",
                    reply.status, reply.text
                );
                refusals += 1;
            }
        }
    }

    // The listings' and role administration's spellings, one by one.
    let spellings: usize = Op::every()
        .filter(|op| updspace_events::http::openapi::reads_query(*op))
        .flat_map(fields_of)
        .map(|f| if f.key.camel == f.key.snake { 1 } else { 2 })
        .sum();
    assert_eq!(refusals, spellings);

    // Every operation of the code is documented on both prefixes, and every
    // error code is answered by some operation or routing.
    assert_eq!(
        seen_ops,
        Op::every().map(|op| op.name()).collect::<BTreeSet<_>>()
    );
    for code in ErrorCode::ALL {
        let documented = documented_codes.contains(code.as_str());
        assert_ne!(
            documented,
            NOT_FROM_OPERATIONS.contains(&code),
            "{code}: documented or listed as not answered by operations, exactly one"
        );
    }
    for (path, _, _) in &ops {
        if let Some(rest) = path.strip_prefix("/api/v1/events") {
            assert!(by_path.contains_key(&format!("/api/v1{rest}")), "{path}");
        }
    }

    // The router answers exactly the documented methods on each path
    // (`HEAD` with every `GET`); any other is a 405 whose `Allow` lists the
    // same methods.
    for (path, methods) in &by_path {
        let concrete = path
            .replace("{event_id}", &Uuid::new_v4().to_string())
            .replace("{user_id}", &Uuid::new_v4().to_string());
        let mut answered: BTreeSet<String> = methods.clone();
        if answered.contains("GET") {
            answered.insert("HEAD".into());
        }
        for method in METHODS {
            let method = method.to_uppercase();
            let reply = Call::new(&method, &concrete, &nobody)
                .unsigned()
                .send(&app)
                .await;
            if answered.contains(&method) {
                // A 404 of the route itself (an unknown feed token) is an
                // answer; the router's own is "No such route".
                let unrouted = reply.status == 404 && reply.text.contains("No such route");
                assert!(
                    reply.status != 405 && !unrouted,
                    "{method} {path}: {} {}",
                    reply.status,
                    reply.text
                );
            } else {
                assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text);
                let allow: BTreeSet<String> = reply
                    .headers
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect();
                assert_eq!(allow, answered, "{path}: Allow");
            }
        }
    }
}
