//! The OpenAPI document (`GET /api/v1/openapi.json`): valid OpenAPI 3.1; listing exactly the
//! routes the router registers (found by reading every `.route(` call under `src/`), each of
//! them served; and describing real answers: every response of a scenario over all route groups
//! is checked against the document — its status must be documented for the route, and its JSON
//! body must validate against the documented schema (`jsonschema`, draft 2020-12, `$ref`s
//! resolved to the document's components). `OPENAPI_DUMP=<file>` writes the fetched document
//! there, for a look at what the tests saw.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, spawn_app_with};

const SERVICE_KEY: &str = "openapi-service-key-0123456789";
const DOC_PATH: &str = "/api/v1/openapi.json";
/// The one user route that needs no token.
const VAPID_PATH: &str = "/api/v1/realtime/push/vapid-public-key";

/// Where the routes of each source file are mounted, first match wins. A file with `.route(`
/// calls that matches none fails the test: add it here (`every_route_is_documented_and_served`
/// then proves the prefix right by requesting each route).
const MOUNTS: &[(&str, &str)] = &[
    ("src/http/internal.rs", "/api/v1/internal"),
    ("src/http/health.rs", ""),
    ("src/http/openapi/", ""),
    ("src/http/", "/api/v1/realtime"),
    ("src/demo/", ""),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn app() -> TestApp {
    spawn_app_with(Backend::Sqlite, &["--service-api-key", SERVICE_KEY]).await
}

async fn fetch_document(app: &TestApp) -> Value {
    let response = app.get(DOC_PATH).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = response.json().await.expect("the document is JSON");
    if let Ok(path) = std::env::var("OPENAPI_DUMP") {
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    doc
}

/// `(METHOD, path template)` of every operation in the document.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

// ---- the routes the source registers ----

/// `(METHOD, full path)` of every `.route(path, method(handler).method(handler)…)` under `src/`.
fn registered_routes() -> BTreeSet<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).expect("reading a source file");
        let calls = route_calls(&text);
        if calls.is_empty() {
            continue;
        }
        let prefix = MOUNTS
            .iter()
            .find(|(start, _)| relative.starts_with(start))
            .map(|(_, prefix)| *prefix)
            .unwrap_or_else(|| {
                panic!("{relative} registers routes; say where they are mounted in MOUNTS")
            });
        for (path, methods) in calls {
            assert!(
                !methods.is_empty(),
                "{relative}: no method found for route {path}"
            );
            for method in methods {
                routes.insert((method, format!("{prefix}{path}")));
            }
        }
    }
    routes
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The path and methods of each `.route(…)` call outside comments; a path given as a constant
/// is resolved from `const NAME: &str = "…";` in the same file.
fn route_calls(text: &str) -> Vec<(String, Vec<String>)> {
    let mut calls = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(".route(") {
        let start = from + found + ".route(".len();
        from = start;
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        if text[line_start..start].contains("//") {
            continue;
        }
        let args = balanced(&text[start..]);
        let (first, rest) = args.split_once(',').unwrap_or((args, ""));
        let first = first.trim();
        let path = if let Some(literal) = first.strip_prefix('"') {
            literal.split('"').next().unwrap_or_default().to_owned()
        } else {
            constant(text, first)
                .unwrap_or_else(|| panic!("route path {first} is neither a literal nor a const"))
        };
        calls.push((path, methods_in(rest)));
    }
    calls
}

/// The text up to the parenthesis closing the one just opened.
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    let mut in_string = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

fn constant(text: &str, name: &str) -> Option<String> {
    let declaration = format!("const {name}: &str = \"");
    let at = text.find(&declaration)? + declaration.len();
    text[at..].split('"').next().map(str::to_owned)
}

/// `get(a).post(b)`, `axum::routing::delete(c)` → `GET`, `POST`, `DELETE`.
fn methods_in(args: &str) -> Vec<String> {
    let mut found = Vec::new();
    for method in METHODS {
        let call = format!("{method}(");
        let mut from = 0;
        while let Some(at) = args[from..].find(&call) {
            let at = from + at;
            from = at + call.len();
            let before = args[..at].chars().next_back();
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                found.push(method.to_uppercase());
            }
        }
    }
    found
}

#[test]
fn the_route_scanner_reads_axum_route_calls() {
    let source = r#"
        const PATH: &str = "/x/doc.json";
        Router::new()
            .route("/a/{id}", get(list::<A>).post(create::<A>))
            .route(
                "/b",
                patch(edit_message::<A>).delete(delete_message::<A>),
            )
            .route("/c/{user_id}", axum::routing::delete(remove_member::<A>))
            // .route("/commented", get(nothing))
            .route(PATH, get(move || serve(body.clone())))
    "#;
    let calls = route_calls(source);
    let flat: Vec<(String, Vec<String>)> = calls;
    assert_eq!(
        flat,
        vec![
            ("/a/{id}".into(), vec!["GET".into(), "POST".into()]),
            ("/b".into(), vec!["DELETE".into(), "PATCH".into()]),
            ("/c/{user_id}".into(), vec!["DELETE".into()]),
            ("/x/doc.json".into(), vec!["GET".into()]),
        ]
    );
}

#[tokio::test]
async fn every_route_is_documented_and_served() {
    let app = app().await;
    let doc = fetch_document(&app).await;
    let documented = documented_operations(&doc);
    let registered = registered_routes();
    assert!(registered.len() > 30, "the scan found only {registered:?}");
    let missing: Vec<_> = registered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes the router registers but the OpenAPI document does not list (add a stub to \
         src/http/openapi/paths.rs and name it in ApiDoc): {missing:#?}"
    );
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        stale.is_empty(),
        "documented operations no `.route(` registers: {stale:#?}"
    );
    // Each registered route answers as a route (not the 404 fallback, not a 405): this proves
    // the MOUNTS prefixes and the scan right.
    for (method, path) in &registered {
        let url = app.url(&path.replace('{', "x").replace('}', ""));
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = app.client.request(method.clone(), &url);
        if method != Method::GET {
            request = request.json(&json!({}));
        }
        let response = request.send().await.expect("sending a request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"),
            "{method} {path} is not served"
        );
    }
}

// ---- the document itself ----

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = app().await;
    let doc = fetch_document(&app).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Switchboard");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // Every reference points into the document's components, and resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in &refs {
        assert!(reference.starts_with("#/components/"), "{reference}");
        assert!(
            doc.pointer(&reference[1..]).is_some(),
            "unresolved {reference}"
        );
    }

    // Every component schema is a valid JSON Schema 2020-12 (the dialect of OpenAPI 3.1).
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (name, schema) in schemas {
        if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
            panic!("schema {name} is not valid JSON Schema: {e}");
        }
        validator(&doc, schema);
    }

    // The validation the other tests rely on bites: a wrong code, a missing field or a
    // missing always-present nullable field fails.
    let error = validator(&doc, &json!({ "$ref": "#/components/schemas/ErrorBody" }));
    let good = json!({ "error": { "code": "NOT_FOUND", "message": "room not found" } });
    assert!(error.is_valid(&good));
    assert!(!error.is_valid(&json!({ "error": { "code": "NOPE", "message": "x" } })));
    assert!(!error.is_valid(&json!({ "error": { "code": "NOT_FOUND" } })));
    let message = validator(&doc, &json!({ "$ref": "#/components/schemas/Message" }));
    let mut sample = json!({
        "id": "m1", "roomId": "r1", "seq": 1, "userId": "u1", "senderName": "U",
        "content": "hi", "type": "text", "replyToId": null, "clientMessageId": null,
        "createdAt": "2026-01-01T00:00:00.000Z", "editedAt": null, "deleted": false,
    });
    assert!(message.is_valid(&sample));
    sample.as_object_mut().unwrap().remove("editedAt");
    assert!(
        !message.is_valid(&sample),
        "editedAt is always sent, null or not"
    );

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["type"], "http");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["type"], "apiKey");
    assert_eq!(schemes["apiKey"]["in"], "header");
    assert_eq!(schemes["apiKey"]["name"], "X-Api-Key");

    let mut operation_ids = BTreeSet::new();
    for (method, path) in documented_operations(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        let id = operation["operationId"].as_str().expect("an operationId");
        assert!(
            operation_ids.insert(id.to_owned()),
            "duplicate operationId {id}"
        );

        // Path parameters: each `{name}` of the template is declared, and nothing else is.
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        let declared: BTreeSet<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .inspect(|p| assert_eq!(p["required"], true, "{method} {path}: {p}"))
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(in_template, declared, "{method} {path}");

        let security = operation["security"].to_string();
        if path == VAPID_PATH {
            assert_eq!(operation["security"], json!([]), "{method} {path}");
        } else if path.starts_with("/api/v1/realtime/stream")
            || path.starts_with("/api/v1/realtime/poll")
        {
            assert!(
                security.contains("bearerAuth") && security.contains("tokenQuery"),
                "{method} {path}: {security}"
            );
        } else if path.starts_with("/api/v1/realtime/") {
            assert!(security.contains("bearerAuth"), "{method} {path}");
        } else if path.starts_with("/api/v1/internal/") {
            assert!(security.contains("apiKey"), "{method} {path}");
        } else {
            assert_eq!(operation["security"], Value::Null, "{method} {path}");
        }

        let responses = operation["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{method} {path}");
        for (status, response) in responses {
            let code: u16 = status.parse().expect("a status code");
            let response = resolve(&doc, response);
            if code >= 400 && path != "/health" {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status} is not in the contract's error shape"
                );
            }
        }
        if path.starts_with("/api/v1/") && path != DOC_PATH {
            for status in ["401", "500", "503"] {
                if path == VAPID_PATH && status == "401" {
                    assert!(!responses.contains_key(status), "{method} {path}");
                    continue;
                }
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
    assert!(
        doc["paths"].get("/demo").is_some(),
        "demo is on in development"
    );
}

#[tokio::test]
async fn the_demo_is_documented_only_while_enabled() {
    let app = spawn_app_with(Backend::Sqlite, &["--demo-enabled", "false"]).await;
    let doc = fetch_document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.keys().all(|p| !p.starts_with("/demo")),
        "{:?}",
        paths.keys()
    );
    assert!(paths.contains_key("/api/v1/realtime/chat/rooms"));
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => collect_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A response or schema object, following one `$ref`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => doc
            .pointer(&reference[1..])
            .unwrap_or_else(|| panic!("unresolved {reference}")),
        None => value,
    }
}

/// A validator for `schema`, whose `$ref`s resolve against the document's components.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root.as_object_mut()
        .expect("a schema object")
        .insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{e}: {schema}"))
}

// ---- real answers against the document ----

/// Checks responses against the document and remembers which operations answered what.
struct Checker {
    doc: Value,
    /// Operation → statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Checker {
    /// Checks one answer of `method` on the response's own path: the status must be documented
    /// for the route, the content type must be the documented one, and a JSON body must
    /// validate against the documented schema. Returns the body (`Null` when empty or not JSON).
    async fn check(&mut self, method: Method, response: reqwest::Response) -> Value {
        let status = response.status();
        let path = response.url().path().to_owned();
        let template = self.template_of(&method, &path);
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("reading a body");
        let operation = &self.doc["paths"][&template][method.as_str().to_lowercase()];
        let Some(documented) = operation["responses"].get(status.as_str()) else {
            panic!("{method} {template} answered {status}, which is not documented: {text}");
        };
        let documented = resolve(&self.doc, documented);
        self.seen
            .entry((method.to_string(), template.clone()))
            .or_default()
            .insert(status.as_u16());
        let Some(content) = documented["content"].as_object() else {
            assert!(
                text.is_empty(),
                "{method} {template} {status}: undocumented body {text}"
            );
            return Value::Null;
        };
        let (documented_type, media) = content
            .iter()
            .find(|(t, _)| content_type.starts_with(t.as_str()))
            .unwrap_or_else(|| {
                panic!("{method} {template} {status}: content type {content_type} not documented")
            });
        if documented_type != "application/json" {
            return Value::Null;
        }
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: {e}: {text}"));
        let validator = validator(&self.doc, &media["schema"]);
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("at {}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status} does not match its schema:\n{}\nbody: {body:#}",
            errors.join("\n")
        );
        body
    }

    /// Checks a 200 Server-Sent Events answer: documented as `text/event-stream`, never a
    /// conditional answer, and its first frame whole. Returns that frame's `event`, `id` and
    /// `data` (parsed as JSON); the response is dropped, which closes the stream.
    async fn check_stream(&mut self, mut response: reqwest::Response) -> (String, String, Value) {
        let path = response.url().path().to_owned();
        let template = self.template_of(&Method::GET, &path);
        assert_eq!(response.status(), StatusCode::OK, "GET {template}");
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{template}: {content_type}"
        );
        assert!(!response.headers().contains_key(header::ETAG), "{template}");
        let documented = resolve(
            &self.doc,
            &self.doc["paths"][&template]["get"]["responses"]["200"],
        );
        assert!(
            documented["content"].get("text/event-stream").is_some(),
            "GET {template} 200: {documented}"
        );
        self.seen
            .entry(("GET".to_owned(), template.clone()))
            .or_default()
            .insert(200);
        let mut text = String::new();
        while !text.contains("\n\n") {
            // A guard against a hang only: the first frame is written at once.
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), response.chunk())
                .await
                .unwrap_or_else(|_| panic!("GET {template}: no first frame"))
                .expect("reading the stream")
                .unwrap_or_else(|| panic!("GET {template} ended before a frame: {text}"));
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let frame = text.split("\n\n").next().unwrap_or_default();
        let field = |name: &str| -> String {
            frame
                .lines()
                .filter_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.strip_prefix(' ').unwrap_or(v))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let data: Value = serde_json::from_str(&field("data"))
            .unwrap_or_else(|e| panic!("GET {template}: data is not JSON ({e}): {frame}"));
        (field("event"), field("id"), data)
    }

    /// Validates `value` against the component schema `name`.
    fn check_schema(&self, name: &str, value: &Value) {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        let errors: Vec<String> = validator(&self.doc, &schema)
            .iter_errors(value)
            .map(|e| format!("at {}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name}: {}\n{value:#}",
            errors.join("\n")
        );
    }

    /// The documented template matching `path` for `method`, preferring literal segments
    /// (`…/messages/search` over `…/messages/{message_id}`).
    fn template_of(&self, method: &Method, path: &str) -> String {
        let segments: Vec<&str> = path.split('/').collect();
        documented_operations(&self.doc)
            .into_iter()
            .filter(|(m, _)| m == method.as_str())
            .filter_map(|(_, template)| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') {
                        continue;
                    }
                    if part != segment {
                        return None;
                    }
                    literal += 1;
                }
                Some((literal, template))
            })
            .max()
            .map(|(_, template)| template)
            .unwrap_or_else(|| panic!("{method} {path} matches no documented route"))
    }
}

/// A request builder with the caller's credentials.
enum As<'a> {
    User(&'a str),
    Service,
    Nobody,
}

fn request(app: &TestApp, method: Method, path: &str, who: As<'_>) -> reqwest::RequestBuilder {
    let request = app.client.request(method, app.url(path));
    match who {
        As::User(user) => request.bearer_auth(app.token(user)),
        As::Service => request.header("x-api-key", SERVICE_KEY),
        As::Nobody => request,
    }
}

/// Sends one request as `who`, with `body` as JSON when given.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    who: As<'_>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = request(app, method.clone(), path, who);
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test]
async fn responses_match_the_documented_schemas() {
    let app = app().await;
    let mut c = Checker {
        doc: fetch_document(&app).await,
        seen: BTreeMap::new(),
    };
    use Method as M;

    // Service API.
    for (id, name) in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")] {
        let body = json!({ "name": name, "avatarUrl": null });
        let r = call(
            &app,
            M::PUT,
            &format!("/api/v1/internal/users/{id}"),
            As::Service,
            Some(body),
        )
        .await;
        c.check(M::PUT, r).await;
    }
    let r = call(
        &app,
        M::PUT,
        "/api/v1/internal/users/x",
        As::Nobody,
        Some(json!({ "name": "X" })),
    )
    .await;
    let err = c.check(M::PUT, r).await;
    assert_eq!(err["error"]["code"], "UNAUTHORIZED");
    for (follower, followee) in [("bob", "alice"), ("alice", "bob"), ("carol", "alice")] {
        let body = json!({ "followerId": follower, "followeeId": followee });
        let r = call(
            &app,
            M::PUT,
            "/api/v1/internal/follows",
            As::Service,
            Some(body),
        )
        .await;
        c.check(M::PUT, r).await;
    }
    let body = json!({ "followerId": "carol", "followeeId": "alice" });
    let r = call(
        &app,
        M::DELETE,
        "/api/v1/internal/follows",
        As::Service,
        Some(body),
    )
    .await;
    c.check(M::DELETE, r).await;
    let notification = json!({
        "userIds": ["bob"], "type": "like", "title": "Alice liked your post",
        "message": "", "data": { "postId": "p1" }, "actorId": "alice", "dedupKey": "like-p1",
    });
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let r = call(
            &app,
            M::POST,
            "/api/v1/internal/notifications",
            As::Service,
            Some(notification.clone()),
        )
        .await;
        assert_eq!(r.status(), expected);
        c.check(M::POST, r).await;
    }
    let bad = json!({ "userIds": ["bob"], "type": "Not A Type", "title": "t", "message": "m" });
    let r = call(
        &app,
        M::POST,
        "/api/v1/internal/notifications",
        As::Service,
        Some(bad),
    )
    .await;
    let err = c.check(M::POST, r).await;
    assert_eq!(err["error"]["details"][0]["field"], "type", "{err}");
    let activity = json!({
        "activityType": "post", "actorId": "alice", "targetId": "p1", "targetType": "post",
        "content": "hello", "metadata": { "n": 1 }, "audience": "public",
    });
    let r = call(
        &app,
        M::POST,
        "/api/v1/internal/feed/activities",
        As::Service,
        Some(activity),
    )
    .await;
    c.check(M::POST, r).await;
    let broadcast = json!({ "event": "maintenance", "data": { "at": 1 }, "userIds": ["bob"] });
    let r = call(
        &app,
        M::POST,
        "/api/v1/internal/broadcast",
        As::Service,
        Some(broadcast),
    )
    .await;
    c.check(M::POST, r).await;
    let r = call(
        &app,
        M::POST,
        "/api/v1/internal/broadcast",
        As::Service,
        Some(json!({ "event": "e", "data": 1 })),
    )
    .await;
    c.check(M::POST, r).await;

    // Chat.
    let direct = json!({ "participants": ["bob"], "type": "direct" });
    let r = call(
        &app,
        M::POST,
        "/api/v1/realtime/chat/rooms",
        As::User("alice"),
        Some(direct.clone()),
    )
    .await;
    let room = c.check(M::POST, r).await;
    let direct_id = room["id"].as_str().expect("a room id").to_owned();
    let r = call(
        &app,
        M::POST,
        "/api/v1/realtime/chat/rooms",
        As::User("alice"),
        Some(direct),
    )
    .await;
    c.check(M::POST, r).await;
    let group = json!({ "participants": ["bob"], "type": "group", "name": "Team" });
    let r = call(
        &app,
        M::POST,
        "/api/v1/realtime/chat/rooms",
        As::User("alice"),
        Some(group),
    )
    .await;
    let room = c.check(M::POST, r).await;
    let group_id = room["id"].as_str().expect("a room id").to_owned();
    let r = call(
        &app,
        M::POST,
        "/api/v1/realtime/chat/rooms",
        As::User("alice"),
        Some(json!([1])),
    )
    .await;
    c.check(M::POST, r).await;
    let rooms = "/api/v1/realtime/chat/rooms";
    let r = call(
        &app,
        M::GET,
        &format!("{rooms}/{group_id}"),
        As::User("alice"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{rooms}/{group_id}"),
        As::User("carol"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{rooms}/no-such-room"),
        As::User("alice"),
        None,
    )
    .await;
    let err = c.check(M::GET, r).await;
    assert_eq!(err["error"]["code"], "NOT_FOUND");
    let r = call(
        &app,
        M::PATCH,
        &format!("{rooms}/{group_id}"),
        As::User("alice"),
        Some(json!({ "name": "Core" })),
    )
    .await;
    c.check(M::PATCH, r).await;
    let r = call(
        &app,
        M::PATCH,
        &format!("{rooms}/{direct_id}"),
        As::User("alice"),
        Some(json!({ "name": "No" })),
    )
    .await;
    c.check(M::PATCH, r).await;
    let members = format!("{rooms}/{group_id}/members");
    let r = call(
        &app,
        M::POST,
        &members,
        As::User("alice"),
        Some(json!({ "userIds": ["carol"] })),
    )
    .await;
    c.check(M::POST, r).await;
    let r = call(
        &app,
        M::POST,
        &format!("{rooms}/{direct_id}/members"),
        As::User("alice"),
        Some(json!({ "userIds": ["carol"] })),
    )
    .await;
    c.check(M::POST, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{members}?limit=2"),
        As::User("alice"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::DELETE,
        &format!("{members}/carol"),
        As::User("alice"),
        None,
    )
    .await;
    c.check(M::DELETE, r).await;
    let r = call(
        &app,
        M::DELETE,
        &format!("{members}/alice"),
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::DELETE, r).await;

    let messages = format!("{rooms}/{direct_id}/messages");
    let hello = json!({ "message": "hello there", "clientMessageId": "c-1" });
    let r = call(
        &app,
        M::POST,
        &messages,
        As::User("alice"),
        Some(hello.clone()),
    )
    .await;
    let message = c.check(M::POST, r).await;
    let message_id = message["id"].as_str().expect("a message id").to_owned();
    let r = call(&app, M::POST, &messages, As::User("alice"), Some(hello)).await;
    c.check(M::POST, r).await;
    let r = call(
        &app,
        M::POST,
        &messages,
        As::User("bob"),
        Some(json!({ "message": "hi", "type": "text" })),
    )
    .await;
    c.check(M::POST, r).await;
    let r = call(
        &app,
        M::POST,
        &messages,
        As::User("alice"),
        Some(json!({ "message": "   " })),
    )
    .await;
    c.check(M::POST, r).await;
    let r = call(
        &app,
        M::POST,
        &messages,
        As::User("carol"),
        Some(json!({ "message": "let me in" })),
    )
    .await;
    c.check(M::POST, r).await;
    for query in ["", "?limit=1", "?after_seq=0"] {
        let r = call(
            &app,
            M::GET,
            &format!("{messages}{query}"),
            As::User("alice"),
            None,
        )
        .await;
        c.check(M::GET, r).await;
    }
    let r = call(
        &app,
        M::GET,
        &format!("{messages}?after_seq=1&before=x"),
        As::User("alice"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{messages}/search?q=hello"),
        As::User("bob"),
        None,
    )
    .await;
    let found = c.check(M::GET, r).await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    let r = call(
        &app,
        M::GET,
        &format!("{messages}/search?limit=0"),
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let one = format!("{messages}/{message_id}");
    let r = call(
        &app,
        M::PATCH,
        &one,
        As::User("alice"),
        Some(json!({ "message": "hello again" })),
    )
    .await;
    c.check(M::PATCH, r).await;
    let r = call(
        &app,
        M::PATCH,
        &one,
        As::User("bob"),
        Some(json!({ "message": "not mine" })),
    )
    .await;
    c.check(M::PATCH, r).await;
    let r = call(&app, M::DELETE, &one, As::User("bob"), None).await;
    c.check(M::DELETE, r).await;
    let r = call(&app, M::DELETE, &one, As::User("alice"), None).await;
    c.check(M::DELETE, r).await;
    for view in ["presence", "receipts"] {
        let r = call(
            &app,
            M::GET,
            &format!("{rooms}/{direct_id}/{view}"),
            As::User("alice"),
            None,
        )
        .await;
        c.check(M::GET, r).await;
        let r = call(
            &app,
            M::GET,
            &format!("{rooms}/{direct_id}/{view}"),
            As::User("carol"),
            None,
        )
        .await;
        c.check(M::GET, r).await;
    }
    let r = call(&app, M::GET, rooms, As::User("alice"), None).await;
    let tag = r.headers()[header::ETAG].clone();
    let list = c.check(M::GET, r).await;
    assert!(list["items"][0].get("lastMessage").is_some(), "{list}");
    let r = request(&app, M::GET, rooms, As::User("alice")).header(header::IF_NONE_MATCH, tag);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    c.check(M::GET, r).await;
    let r = call(&app, M::GET, rooms, As::Nobody, None).await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{rooms}?limit=0"),
        As::User("alice"),
        None,
    )
    .await;
    c.check(M::GET, r).await;

    // Feed.
    let r = call(
        &app,
        M::GET,
        "/api/v1/realtime/feed?types=post,comment&time_range=7d",
        As::User("bob"),
        None,
    )
    .await;
    let feed = c.check(M::GET, r).await;
    assert_eq!(feed["items"].as_array().map(Vec::len), Some(1), "{feed}");
    let r = call(
        &app,
        M::GET,
        "/api/v1/realtime/feed?time_range=2w",
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        "/api/v1/realtime/feed/trending",
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        "/api/v1/realtime/feed/statistics",
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;

    // Notifications.
    let notifications = "/api/v1/realtime/notifications";
    let r = call(&app, M::GET, notifications, As::User("bob"), None).await;
    let list = c.check(M::GET, r).await;
    assert_eq!(list["items"][0]["actor"]["id"], "alice", "{list}");
    let r = call(
        &app,
        M::PUT,
        &format!("{notifications}/read"),
        As::User("bob"),
        Some(json!({ "all": true })),
    )
    .await;
    c.check(M::PUT, r).await;
    let r = call(
        &app,
        M::PUT,
        &format!("{notifications}/read"),
        As::User("bob"),
        Some(json!({})),
    )
    .await;
    c.check(M::PUT, r).await;
    let preferences = format!("{notifications}/preferences");
    let r = call(&app, M::GET, &preferences, As::User("bob"), None).await;
    c.check(M::GET, r).await;
    let change = json!({ "preferences": { "like": { "push": false }, "shareTyping": false } });
    let r = call(&app, M::PUT, &preferences, As::User("bob"), Some(change)).await;
    let prefs = c.check(M::PUT, r).await;
    assert_eq!(prefs["preferences"]["like"]["push"], false, "{prefs}");
    let r = call(
        &app,
        M::PUT,
        &preferences,
        As::User("bob"),
        Some(json!({ "preferences": { "shareTyping": "no" } })),
    )
    .await;
    c.check(M::PUT, r).await;

    // Presence.
    let r = call(
        &app,
        M::GET,
        "/api/v1/realtime/presence/me",
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let activity = json!({ "activity": "viewing:post:1", "metadata": { "postId": "1" } });
    let r = call(
        &app,
        M::PUT,
        "/api/v1/realtime/presence/activity",
        As::User("bob"),
        Some(activity),
    )
    .await;
    c.check(M::PUT, r).await;
    let r = call(
        &app,
        M::PUT,
        "/api/v1/realtime/presence/activity",
        As::User("bob"),
        Some(json!({ "activity": "" })),
    )
    .await;
    c.check(M::PUT, r).await;
    let r = call(
        &app,
        M::GET,
        "/api/v1/realtime/presence/online-friends",
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        "/api/v1/realtime/presence/online-friends?limit=x",
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;

    // Realtime over HTTP: streams, polls, status and the REST actions.
    let realtime = "/api/v1/realtime";
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/stream?feed=all"),
        As::User("bob"),
        None,
    )
    .await;
    let (event, id, ready) = c.check_stream(r).await;
    assert_eq!(event, "session:ready");
    c.check_schema("StreamReady", &ready);
    assert_eq!(ready["userId"], "bob", "{ready}");
    assert_eq!(ready["cursor"], id.as_str(), "the frame's id is the cursor");
    let token = app.token("alice");
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/stream/rooms/{direct_id}?token={token}"),
        As::Nobody,
        None,
    )
    .await;
    let (event, _, ready) = c.check_stream(r).await;
    assert_eq!(event, "session:ready");
    c.check_schema("StreamReady", &ready);
    assert_eq!(ready["userId"], "alice", "{ready}");
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/stream"),
        As::Nobody,
        None,
    )
    .await;
    let err = c.check(M::GET, r).await;
    assert_eq!(err["error"]["code"], "UNAUTHORIZED");
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/stream?feed=sideways"),
        As::User("bob"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/stream/rooms/{direct_id}"),
        As::User("carol"),
        None,
    )
    .await;
    let err = c.check(M::GET, r).await;
    assert_eq!(err["error"]["code"], "FORBIDDEN");
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/stream/rooms/no-such-room"),
        As::User("carol"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/poll"),
        As::User("carol"),
        None,
    )
    .await;
    let first = c.check(M::GET, r).await;
    let next = format!(
        "{realtime}/poll?last_poll_id={}&session={}&timeout_ms=0",
        first["lastPollId"].as_str().expect("a lastPollId"),
        first["session"].as_str().expect("a session"),
    );
    let r = call(&app, M::GET, &next, As::User("carol"), None).await;
    let polled = c.check(M::GET, r).await;
    assert_eq!(polled["session"], first["session"], "{polled}");
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/poll?timeout_ms=soon"),
        As::User("carol"),
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let r = call(&app, M::GET, &format!("{realtime}/poll"), As::Nobody, None).await;
    c.check(M::GET, r).await;
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/status"),
        As::User("carol"),
        None,
    )
    .await;
    let status = c.check(M::GET, r).await;
    assert_eq!(status["byTransport"]["longpoll"], 1, "{status}");
    let r = call(
        &app,
        M::GET,
        &format!("{realtime}/status"),
        As::Nobody,
        None,
    )
    .await;
    c.check(M::GET, r).await;
    let direct = format!("{rooms}/{direct_id}");
    let actions = [
        ("typing", "alice", json!({ "isTyping": true })),
        ("typing", "carol", json!({ "isTyping": true })),
        ("typing", "alice", json!({ "isTyping": "yes" })),
        ("read", "bob", json!({ "upToSeq": 1 })),
        ("read", "bob", json!({ "upToSeq": -1 })),
        ("delivered", "bob", json!({ "upToSeq": 1 })),
        ("delivered", "carol", json!({ "upToSeq": 1 })),
    ];
    for (action, user, body) in actions {
        let r = call(
            &app,
            M::POST,
            &format!("{direct}/{action}"),
            As::User(user),
            Some(body),
        )
        .await;
        c.check(M::POST, r).await;
    }
    let r = call(
        &app,
        M::POST,
        &format!("{rooms}/no-such-room/read"),
        As::User("bob"),
        Some(json!({ "upToSeq": 1 })),
    )
    .await;
    c.check(M::POST, r).await;
    for (body, expected) in [
        (json!({ "status": "away" }), StatusCode::OK),
        (json!({ "status": "offline" }), StatusCode::BAD_REQUEST),
    ] {
        let r = call(
            &app,
            M::PUT,
            &format!("{realtime}/presence/status"),
            As::User("bob"),
            Some(body),
        )
        .await;
        assert_eq!(r.status(), expected);
        c.check(M::PUT, r).await;
    }

    // Web Push.
    let r = call(&app, M::GET, VAPID_PATH, As::Nobody, None).await;
    let key = c.check(M::GET, r).await;
    assert!(key["publicKey"].as_str().is_some_and(|k| !k.is_empty()));
    let subscriptions = format!("{realtime}/push/subscriptions");
    let subscription = json!({
        "endpoint": "https://push.example.com/send/openapi", "expirationTime": null,
        "keys": {
            "p256dh": "BGUtS9N0KhF9v5RiSVsuQKfBdCLgAztiZ9WsQ_iBUD11mumsBtlBQw23yTwfZEBqgQD3nuF7AJ9cqJv63_g6_Yo",
            "auth": "AAECAwQFBgcICQoLDA0ODw"
        }
    });
    let mut subscription_id = String::new();
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let r = call(
            &app,
            M::POST,
            &subscriptions,
            As::User("alice"),
            Some(subscription.clone()),
        )
        .await;
        assert_eq!(r.status(), expected);
        let stored = c.check(M::POST, r).await;
        subscription_id = stored["id"].as_str().expect("an id").to_owned();
    }
    let mut bad = subscription.clone();
    bad["endpoint"] = json!("ftp://push.example.com/x");
    let r = call(&app, M::POST, &subscriptions, As::User("alice"), Some(bad)).await;
    c.check(M::POST, r).await;
    let r = call(&app, M::GET, &subscriptions, As::User("alice"), None).await;
    let list = c.check(M::GET, r).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let r = call(&app, M::GET, &subscriptions, As::Nobody, None).await;
    c.check(M::GET, r).await;
    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let r = call(
            &app,
            M::DELETE,
            &format!("{subscriptions}/{subscription_id}"),
            As::User("alice"),
            None,
        )
        .await;
        assert_eq!(r.status(), expected);
        c.check(M::DELETE, r).await;
    }

    // Operations and the demo.
    let served = [
        "/health",
        "/metrics",
        DOC_PATH,
        "/demo",
        "/demo/",
        "/demo/demo.js",
        "/demo/socket.io.min.js",
    ];
    for path in served {
        let r = call(&app, M::GET, path, As::Nobody, None).await;
        c.check(M::GET, r).await;
    }
    let r = call(
        &app,
        M::POST,
        "/demo/token",
        As::Nobody,
        Some(json!({ "userId": "eve", "name": "Eve" })),
    )
    .await;
    let token = c.check(M::POST, r).await;
    assert!(token["token"].as_str().is_some_and(|t| !t.is_empty()));
    let r = call(
        &app,
        M::POST,
        "/demo/token",
        As::Nobody,
        Some(json!({ "userId": "" })),
    )
    .await;
    c.check(M::POST, r).await;

    // Every route group answered at least one success and one error, each as documented.
    let mut by_tag: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for ((method, template), statuses) in &c.seen {
        let operation = &c.doc["paths"][template][method.to_lowercase()];
        let tag = operation["tags"][0].as_str().unwrap_or_default().to_owned();
        let entry = by_tag.entry(tag).or_default();
        entry.0 |= statuses.iter().any(|s| (200..300).contains(s));
        entry.1 |= statuses.iter().any(|s| *s >= 400);
    }
    for tag in [
        "chat",
        "feed",
        "notifications",
        "presence",
        "service",
        "realtime",
        "push",
        "demo",
    ] {
        assert_eq!(by_tag.get(tag), Some(&(true, true)), "{tag}: {by_tag:?}");
    }
    let unexercised: Vec<_> = documented_operations(&c.doc)
        .into_iter()
        .filter(|op| !c.seen.contains_key(op))
        .collect();
    eprintln!("operations this scenario does not exercise: {unexercised:?}");
}

#[tokio::test]
async fn rate_limited_and_oversized_answers_match_the_document() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            "--rate-limit-per-minute",
            "1",
            "--max-payload-bytes",
            "2048",
            "--max-connections-per-user",
            "1",
        ],
    )
    .await;
    let mut c = Checker {
        doc: fetch_document(&app).await,
        seen: BTreeMap::new(),
    };
    let rooms = "/api/v1/realtime/chat/rooms";
    let r = request(&app, Method::POST, rooms, As::User("alice"))
        .json(&json!({ "participants": ["bob"], "type": "direct" }));
    let room = c.check(Method::POST, r.send().await.unwrap()).await;
    let messages = format!("{rooms}/{}/messages", room["id"].as_str().unwrap());
    for expected in [StatusCode::CREATED, StatusCode::TOO_MANY_REQUESTS] {
        let r = request(&app, Method::POST, &messages, As::User("alice"))
            .json(&json!({ "message": "hi" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
        if expected == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key(header::RETRY_AFTER));
        }
        let body = c.check(Method::POST, r).await;
        if expected == StatusCode::TOO_MANY_REQUESTS {
            assert!(body["error"]["retryAfterMs"].is_u64(), "{body}");
        }
    }
    let r = request(&app, Method::POST, rooms, As::User("alice"))
        .json(&json!({ "participants": ["bob"], "name": "x".repeat(4096) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    c.check(Method::POST, r).await;

    // A stream holds a connection slot: a second one is over the limit of 1.
    let stream = "/api/v1/realtime/stream";
    let held = request(&app, Method::GET, stream, As::User("bob"))
        .send()
        .await
        .unwrap();
    let (event, _, _) = c.check_stream(held).await;
    assert_eq!(event, "session:ready");
    let first = request(&app, Method::GET, stream, As::User("dave"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let r = request(&app, Method::GET, stream, As::User("dave"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let err = c.check(Method::GET, r).await;
    assert_eq!(err["error"]["code"], "TOO_MANY_CONNECTIONS");
    drop(first);
}

#[tokio::test]
async fn the_vapid_key_route_answers_404_as_documented_while_push_is_off() {
    // Production without `VAPID_PRIVATE_KEY`: no ephemeral key, push is off.
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            "--environment",
            "production",
            "--allow-sqlite-in-production",
            "--cors-origins",
            "https://app.example.com",
        ],
    )
    .await;
    let mut c = Checker {
        doc: fetch_document(&app).await,
        seen: BTreeMap::new(),
    };
    let r = call(&app, Method::GET, VAPID_PATH, As::Nobody, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let err = c.check(Method::GET, r).await;
    assert_eq!(err["error"]["code"], "NOT_FOUND");
}
