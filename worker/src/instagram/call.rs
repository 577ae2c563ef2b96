//! A request as the crawlers describe it: which API it goes to (and so its query type), its path,
//! query and form, and how Instaloader sends it (with or without the account's cookies, as a
//! page navigation or an API call).

use serde_json::Value;
use trawl_shared::limiter::QueryType;

/// The API a request goes to, which decides its headers and its query type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// Web REST and pages on the web host (`other`).
    Web,
    /// Web GraphQL by `query_hash` (GET).
    Graphql { query_hash: String },
    /// GraphQL by `doc_id` (form POST), on `graphql/query` or the web app's `api/graphql`; both
    /// count under the bare doc_id, as Instaloader keys them.
    DocId { doc_id: String },
    /// The mobile API (`iphone`), with the iPad headers.
    Mobile,
}

impl Api {
    pub fn query_type(&self) -> QueryType {
        match self {
            Api::Web => QueryType::Other,
            Api::Graphql { query_hash } => QueryType::QueryHash(query_hash.clone()),
            Api::DocId { doc_id } => QueryType::DocId(doc_id.clone()),
            Api::Mobile => QueryType::Iphone,
        }
    }
}

/// How a web request presents itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// An XHR from the web app, answered with JSON.
    #[default]
    Json,
    /// A browser's page navigation (`Accept: text/html`, `Sec-Fetch-Mode: navigate`): Instagram
    /// only embeds its query results in pages that look like one. The answer is HTML.
    Page,
    /// The login flow's plain `GET /`, for the `csrftoken` cookie. The answer is HTML.
    CsrfFetch,
}

/// A request as the crawlers describe it. Its `Debug` leaves out form values (a login form holds
/// the password).
#[derive(Clone)]
pub struct Call {
    pub api: Api,
    /// Path below the API's base, e.g. `/api/v1/users/web_profile_info/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Form fields (sent as a POST).
    pub form: Option<Vec<(String, String)>>,
    /// A paginated GraphQL query: a 400 is returned at once so the caller can halve `first`.
    pub paginated: bool,
    /// Referer of GraphQL queries (the page the web app would be on).
    pub referer: Option<String>,
    pub shape: Shape,
    /// Sent as a logged-out visitor: without the account's cookies, so Instagram counts it
    /// against the IP (Instaloader loads profile pages this way even when logged in).
    pub anonymous: bool,
    /// The web app's `lsd` token, sent as `x-fb-lsd` with `api/graphql` queries.
    pub lsd: Option<String>,
    /// The configuration key that holds this query's doc_id or query_hash, named in the job's
    /// error when Instagram refuses the query (Instagram retires them).
    pub config_key: Option<&'static str>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("api", &self.api)
            .field("path", &self.path)
            .field("query", &self.query)
            .field(
                "form",
                &self
                    .form
                    .as_ref()
                    .map(|fields| fields.iter().map(|(k, _)| k).collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// GraphQL variables in the order they were added, written as Instaloader writes them: compact
/// JSON in insertion order (Python's `json.dumps(…, separators=(',', ':'))`), so the query string
/// Trawl sends is the one the reference client sends.
#[derive(Debug, Clone, Default)]
pub struct Vars(Vec<(String, String)>);

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces, keeping its place) `key`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let rendered = value.into().to_string();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = rendered,
            None => self.0.push((key.to_owned(), rendered)),
        }
        self
    }

    /// Adds an ordered object as the value of `key`.
    pub fn nest(mut self, key: &str, inner: &Vars) -> Self {
        self.0.push((key.to_owned(), inner.to_json()));
        self
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    pub fn to_json(&self) -> String {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

impl Call {
    pub fn web(path: impl Into<String>, query: &[(&str, &str)]) -> Self {
        Self::new(Api::Web, path, query)
    }

    /// A page of the web host loaded as a logged-out browser (`GET /{path}`).
    pub fn page(path: impl Into<String>) -> Self {
        let mut call = Self::new(Api::Web, path, &[]);
        call.shape = Shape::Page;
        call.anonymous = true;
        call
    }

    pub fn mobile(path: impl Into<String>, query: &[(&str, &str)]) -> Self {
        Self::new(Api::Mobile, path, query)
    }

    /// `GET /graphql/query?query_hash=…&variables=…`.
    pub fn graphql(query_hash: &str, config_key: &'static str, variables: &Vars) -> Self {
        let vars = variables.to_json();
        let mut call = Self::new(
            Api::Graphql {
                query_hash: query_hash.to_owned(),
            },
            "/graphql/query",
            &[("query_hash", query_hash), ("variables", &vars)],
        );
        call.paginated = variables.has("first");
        call.config_key = Some(config_key);
        call
    }

    /// `POST /graphql/query` with `variables`, `doc_id` and `server_timestamps=true`.
    pub fn doc_id(doc_id: &str, config_key: &'static str, variables: &Vars) -> Self {
        let mut call = Self::new(
            Api::DocId {
                doc_id: doc_id.to_owned(),
            },
            "/graphql/query",
            &[],
        );
        call.form = Some(vec![
            ("variables".into(), variables.to_json()),
            ("doc_id".into(), doc_id.to_owned()),
            ("server_timestamps".into(), "true".into()),
        ]);
        call.paginated = variables.has("first");
        call.config_key = Some(config_key);
        call
    }

    /// `POST /api/graphql`, the web app's endpoint: the same form plus the start page's tokens.
    pub fn web_api(
        doc_id: &str,
        config_key: &'static str,
        variables: &Vars,
        tokens: &WebTokens,
    ) -> Self {
        let mut call = Self::doc_id(doc_id, config_key, variables);
        call.path = "/api/graphql".into();
        if let Some(form) = call.form.as_mut() {
            if let Some(dtsg) = &tokens.fb_dtsg {
                form.push(("fb_dtsg".into(), dtsg.clone()));
            }
            form.push(("lsd".into(), tokens.lsd.clone()));
            form.push(("av".into(), tokens.av.clone()));
        }
        call.lsd = Some(tokens.lsd.clone());
        call
    }

    pub fn with_referer(mut self, referer: impl Into<String>) -> Self {
        self.referer = Some(referer.into());
        self
    }

    fn new(api: Api, path: impl Into<String>, query: &[(&str, &str)]) -> Self {
        Self {
            api,
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            form: None,
            paginated: false,
            referer: None,
            shape: Shape::Json,
            anonymous: false,
            lsd: None,
            config_key: None,
        }
    }

    /// An HTML page is the answer, not an error, when its body is not JSON.
    pub fn wants_html(&self) -> bool {
        self.shape != Shape::Json
    }
}

/// The tokens the web app sends with its `api/graphql` queries, scraped from the start page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTokens {
    /// Only a logged-in start page has one.
    pub fb_dtsg: Option<String>,
    pub lsd: String,
    pub av: String,
}

impl WebTokens {
    /// Reads the tokens from the start page's HTML as the web app's scripts hold them:
    /// `"DTSGInitialData",[],{…"token":"…"`, `"LSD",[],{…"token":"…"` and `"IG_USER_EIMU":"123"`.
    /// `Err` names the first missing token (`fb_dtsg` is required only when logged in).
    pub fn from_start_page(html: &str, logged_in: bool) -> Result<Self, &'static str> {
        let fb_dtsg = define_token(html, "\"DTSGInitialData\",[],{");
        if logged_in && fb_dtsg.is_none() {
            return Err("fb_dtsg");
        }
        let lsd = define_token(html, "\"LSD\",[],{").ok_or("lsd")?;
        let av = html
            .find("\"IG_USER_EIMU\":")
            .map(|at| &html[at + "\"IG_USER_EIMU\":".len()..])
            .map(|rest| rest.strip_prefix('"').unwrap_or(rest))
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .filter(|digits| !digits.is_empty())
            .ok_or("av")?;
        Ok(Self { fb_dtsg, lsd, av })
    }
}

/// The `"token"` value inside the object that follows `marker`, if that object holds one before
/// it closes (the web app's `["Name",[],{…,"token":"…"},…]` definitions).
fn define_token(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let object = &html[start..];
    let object = &object[..object.find(['{', '}']).unwrap_or(object.len())];
    let at = object.find("\"token\":\"")? + "\"token\":\"".len();
    let value = &object[at..];
    let value = &value[..value.find('"')?];
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_form_values() {
        let mut call = Call::web("/login", &[]);
        call.form = Some(vec![("enc_password".into(), "hunter2".into())]);
        let shown = format!("{call:?}");
        assert!(shown.contains("enc_password") && !shown.contains("hunter2"));
    }

    #[test]
    fn variables_keep_their_order_and_are_compact() {
        let inner = Vars::new().set("count", 12).set("a", true);
        let vars = Vars::new()
            .nest("data", &inner)
            .set("first", 12)
            .set("username", "u\"x")
            .set("__relay", false)
            .set("first", 24);
        assert_eq!(
            vars.to_json(),
            r#"{"data":{"count":12,"a":true},"first":24,"username":"u\"x","__relay":false}"#
        );
        assert!(vars.has("first") && !vars.has("after"));
    }

    #[test]
    fn start_page_tokens_are_read_as_the_web_app_defines_them() {
        let html = r#"<script>["DTSGInitialData",[],{"token":"dt:1"},258],["LSD",[],{"x":1,"token":"ls-2"},323],{"IG_USER_EIMU":"17841"}</script>"#;
        let tokens = WebTokens::from_start_page(html, true).expect("tokens");
        assert_eq!(tokens.fb_dtsg.as_deref(), Some("dt:1"));
        assert_eq!((tokens.lsd.as_str(), tokens.av.as_str()), ("ls-2", "17841"));
        let logged_out = r#"["LSD",[],{"token":"ls"},1] "IG_USER_EIMU":0"#;
        let tokens = WebTokens::from_start_page(logged_out, false).expect("tokens");
        assert_eq!((tokens.fb_dtsg, tokens.av.as_str()), (None, "0"));
        assert_eq!(WebTokens::from_start_page(logged_out, true), Err("fb_dtsg"));
        assert_eq!(
            WebTokens::from_start_page(r#"["LSD",[],{},1]"#, false),
            Err("lsd")
        );
        // A token in a later object is not this definition's.
        assert_eq!(
            WebTokens::from_start_page(
                r#"["LSD",[],{"a":1},{"token":"x"}] "IG_USER_EIMU":1"#,
                false
            ),
            Err("lsd")
        );
    }
}
