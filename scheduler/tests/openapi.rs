//! `docs/openapi.yaml` against the code: the same (method, path) pairs as `api::ROUTES`, and as a
//! live router really serves; the same open routes; the same scope per route as the token check;
//! the same job kinds, job states, account states and token scopes. Response shapes are checked
//! elsewhere, by `scripts/schemathesis.sh` against a running scheduler.
//!
//! The router's paths come from the router itself (its `Debug` output, the only list axum gives),
//! so a route added to `router()` outside `ROUTES` fails here too, and its methods from asking it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::Value;
use trawl_scheduler::api::{self, ApiState};
use trawl_scheduler::metrics::SchedulerMetrics;
use trawl_scheduler::testing;
use trawl_shared::accounts::AccountState;
use trawl_shared::config::LimiterConfig;
use trawl_shared::domain::{JobKind, JobState};
use trawl_shared::limiter::{Ledger, Profile};
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_shared::testing::fresh_db;
use trawl_shared::tokens::{Scope, TokenEntry, TokenSet, hash_hex};

const DOC: &str = include_str!("../../docs/openapi.yaml");
const ADMIN: &str = "openapi-admin-token";
const READER: &str = "openapi-read-token";
const SUBMITTER: &str = "openapi-submit-token";

/// The methods a router is asked about. HEAD is left out: axum answers it wherever GET is served,
/// and OpenAPI leaves it implied by GET too.
const PROBED: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One `key: value` line of a block-style YAML document.
#[derive(Debug)]
struct Entry<'a> {
    indent: usize,
    key: &'a str,
    value: &'a str,
}

/// The mapping keys of `doc` with their indentation, in order. Enough YAML for a document written
/// in block style: sequence items (`- key: value`) count as keys two columns in, and the lines of
/// `|` and `>` blocks are text, not keys.
fn outline(doc: &str) -> Vec<Entry<'_>> {
    let mut entries = Vec::new();
    let mut text_block_above: Option<usize> = None;
    for line in doc.lines() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut indent = line.len() - content.len();
        if let Some(owner) = text_block_above {
            if indent > owner {
                continue;
            }
            text_block_above = None;
        }
        let mut content = content;
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest.trim_start();
        }
        let Some((key, value)) = split_key(content) else {
            continue;
        };
        if value.starts_with('|') || value.starts_with('>') {
            text_block_above = Some(indent);
        }
        entries.push(Entry { indent, key, value });
    }
    entries
}

/// `key: value`, `key:`, `"key": value` → (key without quotes, value).
fn split_key(content: &str) -> Option<(&str, &str)> {
    let (key, rest) = match content.chars().next()? {
        quote @ ('"' | '\'') => {
            let end = content[1..].find(quote)? + 1;
            (&content[1..end], &content[end + 1..])
        }
        _ => {
            let end = content
                .find(": ")
                .or_else(|| content.ends_with(':').then(|| content.len() - 1))?;
            (&content[..end], &content[end..])
        }
    };
    let value = rest.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with(' ')) {
        return None;
    }
    Some((key, value.trim()))
}

/// Everything under the key at `path` (keys from the top of the document), nested entries too.
fn block<'o, 'a>(entries: &'o [Entry<'a>], path: &[&str]) -> &'o [Entry<'a>] {
    let mut scope = entries;
    for key in path {
        let children = scope.first().map(|e| e.indent);
        let found = scope
            .iter()
            .position(|e| Some(e.indent) == children && e.key == *key)
            .unwrap_or_else(|| panic!("docs/openapi.yaml has no {}", path.join(" → ")));
        let indent = scope[found].indent;
        let rest = &scope[found + 1..];
        let len = rest
            .iter()
            .position(|e| e.indent <= indent)
            .unwrap_or(rest.len());
        scope = &rest[..len];
    }
    scope
}

/// The entries of a block that are its own keys, not nested ones.
fn direct<'o, 'a>(entries: &'o [Entry<'a>]) -> impl Iterator<Item = &'o Entry<'a>> {
    let indent = entries.first().map(|e| e.indent);
    entries.iter().filter(move |e| Some(e.indent) == indent)
}

/// The words of a flow list such as `[a, b, c]`.
fn flow_list(value: &str) -> Vec<String> {
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or_else(|| panic!("expected a flow list like [a, b], got {value:?}"));
    inner
        .split(',')
        .map(|w| w.trim().trim_matches('"').to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

fn enum_of(entries: &[Entry<'_>], path: &[&str]) -> Vec<String> {
    let value = direct(block(entries, path))
        .find(|e| e.key == "enum")
        .unwrap_or_else(|| panic!("docs/openapi.yaml: {} has no enum", path.join(" → ")))
        .value;
    flow_list(value)
}

/// What the document says about one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Operation {
    /// `security: []`: no token needed.
    open: bool,
    /// `x-required-scope`.
    scope: Option<String>,
}

fn documented_operations(entries: &[Entry<'_>]) -> BTreeMap<(String, String), Operation> {
    let mut operations = BTreeMap::new();
    for path in direct(block(entries, &["paths"])) {
        assert!(
            path.key.starts_with('/'),
            "docs/openapi.yaml: {:?} under paths is not a path",
            path.key
        );
        for method in direct(block(entries, &["paths", path.key])) {
            if !OPENAPI_METHODS.contains(&method.key) {
                continue;
            }
            let fields = block(entries, &["paths", path.key, method.key]);
            let field = |name: &str| direct(fields).find(|e| e.key == name).map(|e| e.value);
            operations.insert(
                (method.key.to_uppercase(), path.key.to_owned()),
                Operation {
                    open: field("security") == Some("[]"),
                    scope: field("x-required-scope").map(str::to_owned),
                },
            );
        }
    }
    operations
}

fn declared_routes() -> BTreeSet<(String, String)> {
    api::ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect()
}

/// Both ways, so a failure says which side lacks what.
fn assert_same(
    left_name: &str,
    left: &BTreeSet<(String, String)>,
    right_name: &str,
    right: &BTreeSet<(String, String)>,
) {
    let only_left: Vec<_> = left.difference(right).collect();
    let only_right: Vec<_> = right.difference(left).collect();
    assert!(
        only_left.is_empty() && only_right.is_empty(),
        "routes in {left_name} but not in {right_name}: {only_left:?}; \
         in {right_name} but not in {left_name}: {only_right:?}"
    );
}

#[test]
fn the_document_lists_the_routes_kinds_states_and_scopes_of_the_code() {
    let entries = outline(DOC);
    let documented: BTreeSet<_> = documented_operations(&entries).into_keys().collect();
    assert_same(
        "docs/openapi.yaml",
        &documented,
        "api::ROUTES",
        &declared_routes(),
    );

    let kinds: Vec<String> = JobKind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(
        enum_of(&entries, &["components", "schemas", "JobKind"]),
        kinds
    );
    let states: Vec<String> = JobState::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(
        enum_of(&entries, &["components", "schemas", "JobState"]),
        states
    );
    let account_states: Vec<String> = AccountState::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(
        enum_of(&entries, &["components", "schemas", "AccountState"]),
        account_states
    );
    let scopes: Vec<String> = Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    let forbidden = [
        "components",
        "schemas",
        "ForbiddenError",
        "properties",
        "error",
        "properties",
        "details",
        "properties",
        "scope",
    ];
    assert_eq!(enum_of(&entries, &forbidden), scopes);
}

/// The paths `router` holds, from its `Debug` output: `paths: {RouteId(0): "/v1/jobs", ...}`
/// inside `path_router` (the `fallback_router` that follows holds axum's catch-all paths).
fn router_paths(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let routes = debug.split("fallback_router").next().unwrap_or_default();
    let paths: BTreeSet<String> = routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|piece| {
            // `0): "/v1/jobs"` names a path; `0): MethodRouter(...)` (the routes map) does not.
            let (id, rest) = piece.split_once(')')?;
            id.parse::<u32>().ok()?;
            let quoted = rest.strip_prefix(": \"")?;
            Some(quoted.split_once('"')?.0.to_owned())
        })
        .collect();
    assert!(
        !paths.is_empty(),
        "found no paths in the router's Debug output; has axum changed it? {debug:.400}"
    );
    paths
}

/// A concrete URL path for a route pattern.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{kind}", "profile")
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = http.request(method, format!("{base}{}", concrete(path)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.expect("the scheduler answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

fn is_method_fallback(status: u16, body: &Value) -> bool {
    status == 405 && body["error"]["code"] == "METHOD_NOT_ALLOWED"
}

fn is_route_fallback(status: u16, body: &Value) -> bool {
    status == 404 && body["error"]["message"] == "no such route"
}

#[tokio::test]
async fn a_live_router_serves_exactly_the_documented_routes_with_their_scopes() {
    let db = fresh_db().await;
    let documented = documented_operations(&outline(DOC));
    let declared = declared_routes();

    // The paths of a router built by `api::router`, as the scheduler builds it.
    let state = ApiState {
        queue: Queue::new(db.pool.clone(), QueueSettings::default()),
        tokens: Arc::new(TokenSet::new(&[], Some(ADMIN)).expect("a token set")),
        max_batch: 10,
        max_body_bytes: 4096,
        body_timeout: Duration::from_secs(5),
        default_max_attempts: 3,
        metrics: Arc::new(SchedulerMetrics::new().expect("metrics")),
        is_leader: Arc::new(AtomicBool::new(false)),
        ledger: Ledger::new(
            db.pool.clone(),
            Profile::from_config(&LimiterConfig::default()),
        ),
    };
    let paths = router_paths(&api::router(state.clone()));
    // What the check below rests on: a route added to the router some other way is seen.
    let extended = api::router(state).route("/v1/elsewhere", axum::routing::get(|| async { "" }));
    assert_eq!(
        router_paths(&extended)
            .difference(&paths)
            .collect::<Vec<_>>(),
        ["/v1/elsewhere"]
    );

    let mut config = testing::config(&db.url, ADMIN);
    config.scheduler.tokens = [(READER, Scope::Read), (SUBMITTER, Scope::Submit)]
        .into_iter()
        .map(|(token, scope)| TokenEntry {
            name: format!("only-{scope}"),
            sha256: hash_hex(token),
            scopes: vec![scope],
        })
        .collect();
    let running = testing::spawn(config).await;
    let base = running.url();
    let http = reqwest::Client::new();

    // Every method of every path the router holds, asked with a token that may do anything.
    let mut served = BTreeSet::new();
    for path in &paths {
        for method in PROBED {
            let (status, body) = call(&http, &base, method, path, Some(ADMIN)).await;
            if is_method_fallback(status, &body) {
                continue;
            }
            assert!(
                !is_route_fallback(status, &body),
                "{method} {path} answered the no-such-route fallback: {body}"
            );
            served.insert((method.to_owned(), path.clone()));
        }
    }
    assert_same("the live router", &served, "api::ROUTES", &declared);
    let documented_set: BTreeSet<_> = documented.keys().cloned().collect();
    assert_same(
        "the live router",
        &served,
        "docs/openapi.yaml",
        &documented_set,
    );

    for ((method, path), operation) in &documented {
        let (status, body) = call(&http, &base, method, path, None).await;
        if operation.open {
            assert_ne!(
                status, 401,
                "{method} {path} is open in the document: {body}"
            );
            assert_eq!(operation.scope, None, "{method} {path}: open, yet a scope");
            continue;
        }
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("UNAUTHORIZED")),
            "{method} {path} needs a token in the document: {body}"
        );
        let scope = operation
            .scope
            .as_deref()
            .unwrap_or_else(|| panic!("{method} {path}: no x-required-scope in the document"));
        for (token, has) in [(READER, "read"), (SUBMITTER, "submit"), (ADMIN, "admin")] {
            let (status, body) = call(&http, &base, method, path, Some(token)).await;
            let allowed = has == "admin" || has == scope;
            if allowed {
                assert_ne!(status, 403, "{method} {path} with a {has} token: {body}");
            } else {
                assert_eq!(
                    (status, body["error"]["details"]["scope"].as_str()),
                    (403, Some(scope)),
                    "{method} {path} with a {has} token; the document says {scope}: {body}"
                );
            }
        }
    }
    running.stop().await.expect("the scheduler stops");
}

#[test]
fn the_outline_reader_reads_what_the_document_uses() {
    let doc = "# a comment\na:\n  b: |\n    c: not a key\n\n    d: nor this\n  \"/d/{e}\":\n    get:\n      \
               security: []\n      parameters:\n        - name: id\n          in: path\n    post:\n      \
               x: [p, \"q\"]\nz: 1\n";
    let entries = outline(doc);
    let keys: Vec<_> = entries.iter().map(|e| (e.indent, e.key)).collect();
    assert_eq!(
        keys,
        [
            (0, "a"),
            (2, "b"),
            (2, "/d/{e}"),
            (4, "get"),
            (6, "security"),
            (6, "parameters"),
            (10, "name"),
            (10, "in"),
            (4, "post"),
            (6, "x"),
            (0, "z"),
        ]
    );
    let methods: Vec<_> = direct(block(&entries, &["a", "/d/{e}"]))
        .map(|e| e.key)
        .collect();
    assert_eq!(methods, ["get", "post"]);
    let get: Vec<_> = direct(block(&entries, &["a", "/d/{e}", "get"]))
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(get, [("security", "[]"), ("parameters", "")]);
    let x = direct(block(&entries, &["a", "/d/{e}", "post"]))
        .find(|e| e.key == "x")
        .map(|e| e.value)
        .unwrap_or_default();
    assert_eq!(flow_list(x), ["p", "q"]);
}

/// A path parameter that is not UTF-8 once percent-decoded was answered by axum in plain text;
/// the document promises the error shape on every route.
#[tokio::test]
async fn path_parameters_that_are_not_utf8_get_the_error_shape() {
    let db = fresh_db().await;
    let running = testing::spawn(testing::config(&db.url, ADMIN)).await;
    let http = reqwest::Client::new();
    for (method, path, field) in [
        ("GET", "/v1/jobs/%FF", "id"),
        ("POST", "/v1/jobs/%FF/cancel", "id"),
        ("POST", "/v1/kinds/%FF/pause", "kind"),
        ("PUT", "/v1/accounts/%FF/proxy", "name"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let answer = http
            .request(method, format!("{}{path}", running.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("the scheduler answers");
        assert_eq!(answer.status().as_u16(), 400, "{path}");
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{path}: {body}");
        assert_eq!(body["error"]["details"]["field"], field, "{path}: {body}");
    }
    running.stop().await.expect("the scheduler stops");
}
