//! The bearer token flow: our registry router behind a middleware that demands tokens,
//! plus a token endpoint that checks basic credentials and echoes the granted scope.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::{build_image, open_store, tar_layer};
use distribution::client::{ClientConfig, ClientError, Credentials, RegistryClient};
use store::Reference;

#[derive(Default)]
struct Tokens {
    /// Scopes requested from the token endpoint, in order.
    requests: Mutex<Vec<String>>,
    /// Tokens issued (each names the scopes it grants).
    issued: Mutex<BTreeSet<String>>,
    realm: Mutex<String>,
}

async fn token_endpoint(
    State(t): State<Arc<Tokens>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let scopes: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    assert!(q.iter().any(|(k, v)| k == "service" && v == "berth-test"));
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("carol:tokens")
    );
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(good.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    t.requests.lock().unwrap().push(scopes.join(" "));
    let token = format!("tok-{}", t.issued.lock().unwrap().len());
    t.issued.lock().unwrap().insert(token.clone());
    axum::Json(serde_json::json!({ "token": token, "expires_in": 300 })).into_response()
}

async fn require_bearer(State(t): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|tok| t.issued.lock().unwrap().contains(tok));
    if ok {
        return next.run(req).await;
    }
    let realm = t.realm.lock().unwrap().clone();
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(
            "www-authenticate",
            format!(r#"Bearer realm="{realm}",service="berth-test",scope="repository:any:pull""#),
        )
        .body(axum::body::Body::from(
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#,
        ))
        .unwrap()
}

struct Abort(tokio::task::JoinHandle<()>);
impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn bearer_token_flow_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Arc::new(Tokens::default());
    let registry = distribution::server::router(&dir.path().join("registry"), None)
        .unwrap()
        .layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            require_bearer,
        ));
    let app = axum::Router::new()
        .route("/token", axum::routing::get(token_endpoint))
        .with_state(tokens.clone())
        .merge(registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    *tokens.realm.lock().unwrap() = format!("http://{addr}/token");
    let _server = Abort(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));

    let src = open_store(&dir.path().join("src"));
    let name = format!("{addr}/team/app:v2");
    let built = build_image(
        &src,
        &name,
        &[
            tar_layer(&[("a", b"one".to_vec())]),
            tar_layer(&[("b", b"two".to_vec())]),
        ],
    );
    let reference = Reference::parse(&name).unwrap();
    let cfg = ClientConfig {
        docker_config_dir: Some(dir.path().join("docker")),
        ..Default::default()
    };

    // No credentials: the token endpoint refuses.
    let anon = RegistryClient::new(cfg.clone()).unwrap();
    let e = anon.push(&reference, &src, &|_| {}).await.unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("token server"), "{e}");

    let c = RegistryClient::new(cfg.clone()).unwrap();
    c.set_credentials(
        &addr.to_string(),
        Credentials {
            username: "carol".into(),
            password: "tokens".into(),
        },
    );
    assert_eq!(
        c.push(&reference, &src, &|_| {}).await.unwrap(),
        built.manifest.digest
    );
    // One token for the push scope, reused for every blob and the manifest.
    assert_eq!(
        tokens.requests.lock().unwrap().clone(),
        vec!["repository:team/app:pull,push".to_string()]
    );

    let dst = open_store(&dir.path().join("dst"));
    let rec = c.pull(&reference, &dst, &|_| {}).await.unwrap();
    assert_eq!(rec.manifest.digest, built.manifest.digest);
    assert_eq!(rec.id, built.config);
    assert_eq!(
        tokens.requests.lock().unwrap().clone(),
        vec![
            "repository:team/app:pull,push".to_string(),
            "repository:team/app:pull".to_string()
        ]
    );
}
