//! The HTTP API (DESIGN.md §5): `/ice-config`, `/ice`, the TURN REST form `/`, health and
//! metrics. Errors are `application/problem+json` (RFC 9457) and never carry a secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use turnpike_contract::admin;
use turnpike_contract::cds::GatewaySnapshot;

use crate::ice::{IceServer, ice_server};
use crate::jwt::{self, Claims};
pub use crate::metrics::Metrics;

/// Every Gateway the auth service knows, by `namespace/name` (swapped whole on update).
pub type Gateways = ArcSwap<BTreeMap<String, GatewaySnapshot>>;

#[derive(Clone)]
pub struct AppState {
    pub gateways: Arc<Gateways>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new() -> Self {
        AppState {
            gateways: Arc::new(ArcSwap::from_pointee(BTreeMap::new())),
            metrics: Arc::new(Metrics::default()),
        }
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

/// An RFC 9457 problem.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Problem {
    Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: detail.into(),
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, axum::Json(&self)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Query parameters of `/ice-config` and `/ice` (STUNner's names included).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct IceQuery {
    /// `namespace/name` of one Gateway (or its name with `namespace`); default: every Gateway.
    gateway: Option<String>,
    /// Limit to Gateways of this namespace.
    namespace: Option<String>,
    /// Only this listener's URI.
    listener: Option<String>,
    /// Credential lifetime in seconds (clamped to the configured maximum).
    ttl: Option<String>,
    /// The TURN user id (default: the token's `sub`).
    userid: Option<String>,
    /// STUNner's name for `userid`.
    username: Option<String>,
    /// `relay` (default) or `all`.
    ice_transport_policy: Option<String>,
    /// `turn` (STUNner and TURN REST API forms).
    service: Option<String>,
}

/// The problems every credential endpoint may answer with.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // exists for the OpenAPI document only
enum CredentialProblems {
    /// Bad parameter
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid token
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token does not allow this gateway
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// Unknown gateway or listener
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// No configuration yet
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A ready `RTCConfiguration`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceConfig {
    ice_servers: Vec<IceServer>,
    ice_transport_policy: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The Gateways this request may get credentials for, after authentication.
struct Grant {
    gateways: Vec<String>,
    userid: String,
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| problem(StatusCode::UNAUTHORIZED, "malformed Authorization header"))?;
    match v.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(problem(
            StatusCode::UNAUTHORIZED,
            "Authorization must be `Bearer <JWT>`",
        )),
    }
}

fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    q: &IceQuery,
) -> Result<(Arc<BTreeMap<String, GatewaySnapshot>>, Grant), Problem> {
    let snap = state.gateways.load_full();
    if snap.is_empty() {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Gateway configuration received yet",
        ));
    }
    let wanted: Option<String> = match (&q.namespace, &q.gateway) {
        (Some(ns), Some(g)) if !g.contains('/') => Some(format!("{ns}/{g}")),
        (_, Some(g)) => Some(g.clone()),
        (Some(_), None) | (None, None) => None,
    };
    if let Some(g) = &wanted {
        if !g.contains('/') {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "gateway must be namespace/name (or give namespace)",
            ));
        }
        if !snap.contains_key(g) {
            return Err(problem(
                StatusCode::NOT_FOUND,
                format!("unknown gateway {g}"),
            ));
        }
    }
    let candidates: Vec<&String> = snap
        .keys()
        .filter(|k| wanted.as_ref().is_none_or(|w| w == *k))
        .filter(|k| {
            q.namespace
                .as_ref()
                .is_none_or(|ns| k.starts_with(&format!("{ns}/")))
        })
        .collect();
    let token = bearer(headers)?;
    let mut allowed = Vec::new();
    let mut sub = None;
    let mut denied_by_claim = false;
    let mut verify_error = None;
    for g in candidates {
        let auth = snap[g].auth.clone().unwrap_or_default();
        match (token, &auth.jwt) {
            (None, _) if auth.allow_anonymous => allowed.push(g.clone()),
            (None, _) => {}
            (Some(t), Some(cfg)) => match jwt::verify(cfg, t) {
                Ok(Claims { sub: s, gateways }) => {
                    let claims = Claims {
                        sub: s.clone(),
                        gateways,
                    };
                    if claims.allows(g) {
                        allowed.push(g.clone());
                        sub = sub.or(s);
                    } else {
                        denied_by_claim = true;
                    }
                }
                Err(e) => verify_error = Some(e.to_string()),
            },
            // A token for a Gateway without JWT settings: only anonymous access applies.
            (Some(_), None) if auth.allow_anonymous => allowed.push(g.clone()),
            (Some(_), None) => {}
        }
    }
    if allowed.is_empty() {
        return Err(match (token, denied_by_claim, verify_error) {
            (_, true, _) => problem(
                StatusCode::FORBIDDEN,
                "the token does not allow this gateway",
            ),
            (None, _, _) => problem(StatusCode::UNAUTHORIZED, "missing bearer token"),
            (Some(_), _, Some(e)) => problem(StatusCode::UNAUTHORIZED, e),
            (Some(_), _, None) => {
                problem(StatusCode::UNAUTHORIZED, "no gateway accepts this token")
            }
        });
    }
    let userid = q
        .userid
        .clone()
        .or_else(|| q.username.clone())
        .or(sub)
        .unwrap_or_else(|| "anonymous".into());
    if userid.contains(':') || userid.len() > 256 {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "userid must not contain ':' and be at most 256 bytes",
        ));
    }
    Ok((
        snap,
        Grant {
            gateways: allowed,
            userid,
        },
    ))
}

fn ttl_for(q: &IceQuery, snap: &GatewaySnapshot) -> Result<u64, Problem> {
    let auth = snap.auth.clone().unwrap_or_default();
    let (default, max) = (auth.ttl.max(1), auth.max_ttl.max(1));
    match &q.ttl {
        None => Ok(default.min(max)),
        Some(t) => match t.parse::<u64>() {
            Ok(0) | Err(_) => Err(problem(
                StatusCode::BAD_REQUEST,
                "ttl must be a positive number of seconds",
            )),
            Ok(t) => Ok(t.min(max)),
        },
    }
}

fn ice_config(state: &AppState, headers: &HeaderMap, q: &IceQuery) -> Result<Response, Problem> {
    let policy = match q.ice_transport_policy.as_deref() {
        None | Some("relay") => "relay",
        Some("all") => "all",
        Some(other) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                format!("iceTransportPolicy must be relay or all, not {other:?}"),
            ));
        }
    };
    let (snap, grant) = authorize(state, headers, q)?;
    let now = now();
    let mut servers = Vec::new();
    for g in &grant.gateways {
        let s = &snap[g];
        let ttl = ttl_for(q, s)?;
        if let Some(server) = ice_server(&s.config, q.listener.as_deref(), &grant.userid, ttl, now)
        {
            servers.push(server);
        }
    }
    if servers.is_empty() {
        return Err(problem(
            StatusCode::NOT_FOUND,
            match &q.listener {
                Some(l) => format!("no listener {l:?} with a public address"),
                None => "no listener with a public address".to_string(),
            },
        ));
    }
    state
        .metrics
        .credentials_issued
        .inc_by(servers.len() as u64);
    let mut r = axum::Json(IceConfig {
        ice_servers: servers,
        ice_transport_policy: policy.into(),
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[utoipa::path(get, path = "/ice-config", params(IceQuery), security((), ("bearer" = [])),
    responses(
        (status = 200, description = "An RTCConfiguration", body = IceConfig),
        CredentialProblems,
    ))]
async fn get_ice_config(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<IceQuery>,
) -> Response {
    ice_config(&s, &headers, &q).unwrap_or_else(IntoResponse::into_response)
}

#[utoipa::path(get, path = "/ice", params(IceQuery), security((), ("bearer" = [])),
    responses(
        (status = 200, description = "An RTCConfiguration (STUNner-compatible)", body = IceConfig),
        CredentialProblems,
    ))]
async fn get_ice(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<IceQuery>,
) -> Response {
    if q.service.as_deref().is_some_and(|sv| sv != "turn") {
        return problem(StatusCode::BAD_REQUEST, "service must be turn").into_response();
    }
    ice_config(&s, &headers, &q).unwrap_or_else(IntoResponse::into_response)
}

/// The TURN REST API answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TurnRest {
    username: String,
    password: String,
    ttl: u64,
    uris: Vec<String>,
}

/// The TURN REST API form: the first Gateway the caller may use.
#[utoipa::path(get, path = "/", params(IceQuery), security((), ("bearer" = [])),
    responses(
        (status = 200, description = "TURN REST API credentials", body = TurnRest),
        CredentialProblems,
    ))]
async fn get_turn_rest(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<IceQuery>,
) -> Response {
    let result = (|| {
        if q.service.as_deref() != Some("turn") {
            return Err(problem(StatusCode::BAD_REQUEST, "service=turn is required"));
        }
        let (snap, grant) = authorize(&s, &headers, &q)?;
        for g in &grant.gateways {
            let gw = &snap[g];
            let ttl = ttl_for(&q, gw)?;
            if let Some(server) =
                ice_server(&gw.config, q.listener.as_deref(), &grant.userid, ttl, now())
            {
                s.metrics.credentials_issued.inc();
                let mut r = axum::Json(TurnRest {
                    username: server.username,
                    password: server.credential,
                    ttl,
                    uris: server.urls,
                })
                .into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return Ok(r);
            }
        }
        Err(problem(
            StatusCode::NOT_FOUND,
            "no listener with a public address",
        ))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

// The health and metrics routes come from the shared admin router; these describe them in
// the OpenAPI document.
#[utoipa::path(get, path = "/livez", responses((status = 200, description = "Alive", body = String)))]
#[allow(dead_code)]
fn livez() {}

#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "A configuration arrived", body = String),
    (status = 503, description = "No configuration yet", body = Problem, content_type = "application/problem+json")))]
#[allow(dead_code)]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics", body = String, content_type = "application/openmetrics-text")))]
#[allow(dead_code)]
fn metrics() {}

/// Ready once a Gateway configuration has arrived.
fn ready_check(gateways: Arc<Gateways>) -> admin::ReadyCheck {
    Arc::new(move || {
        if gateways.load().is_empty() {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "no Gateway configuration received yet",
            )
            .into_response()
        } else {
            "ready\n".into_response()
        }
    })
}

async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        "/ice-config" => "/ice-config",
        "/ice" => "/ice",
        "/" => "/",
        "/livez" => "/livez",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/test" => "/test",
        "/openapi.json" => "/openapi.json",
        _ => "other",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .observe(route, resp.status().as_u16(), start.elapsed());
    resp
}

/// The browser connectivity tester: one self-contained page, no external assets.
async fn test_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("test_page.html"),
    )
        .into_response()
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such endpoint").into_response()
}

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3 document, generated from the handlers and types above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Turnpike auth service", description = "Ephemeral TURN credentials and ready ICE configurations for WebRTC clients."),
    paths(get_ice_config, get_ice, get_turn_rest, livez, readyz, metrics),
    components(schemas(IceConfig, IceServer, TurnRest, Problem)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

async fn openapi_json() -> Response {
    use utoipa::OpenApi as _;
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the OpenAPI document: {e}"),
        )
        .into_response(),
    }
}

/// The auth service's routes.
pub fn router(state: AppState) -> Router {
    let health = admin::router(
        ready_check(state.gateways.clone()),
        Some(state.metrics.clone()),
    );
    Router::new()
        .route("/ice-config", get(get_ice_config))
        .route("/ice", get(get_ice))
        .route("/", get(get_turn_rest))
        .route("/openapi.json", get(openapi_json))
        .route("/test", get(test_page))
        .with_state(state.clone())
        .merge(health)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, observe))
        // Only GETs are served: no request body is ever needed.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
}
