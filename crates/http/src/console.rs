//! The console: a page in the browser that drives the public API on its own origin
//! (`GET /console`, its assets under `/console/assets/`). Plain HTML, CSS and JavaScript,
//! embedded in the binary at build time; not part of the OpenAPI document (it is not JSON).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::{ApiError, ErrorCode};

/// The console's Content-Security-Policy: its own origin only, no inline script or style,
/// never framed. `connect-src` falls back to `default-src`, so `fetch` reaches only this
/// origin.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_CSS: &str = include_str!("../console/console.css");
const CONSOLE_JS: &str = include_str!("../console/console.js");

/// Each asset's name under `/console/assets/`, its exact content type and its text.
const ASSETS: [(&str, &str, &str); 2] = [
    ("console.css", "text/css; charset=utf-8", CONSOLE_CSS),
    ("console.js", "text/javascript; charset=utf-8", CONSOLE_JS),
];

/// Adds the console's routes to a scope, each answering 405 (with `Allow: GET`) to other
/// methods.
pub(crate) fn routes<T>(scope: actix_web::Scope<T>) -> actix_web::Scope<T>
where
    T: actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Error = actix_web::Error,
        InitError = (),
    >,
{
    scope
        .service(web::resource("/console").route(web::get().to(page)).default_service(web::to(only_get)))
        .service(web::resource("/console/").route(web::get().to(to_page)).default_service(web::to(only_get)))
        .service(web::resource("/console/assets/{name}").route(web::get().to(asset)).default_service(web::to(only_get)))
}

fn console_response(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)))
        .insert_header((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .body(body)
}

async fn page() -> HttpResponse {
    console_response("text/html; charset=utf-8", INDEX_HTML)
}

/// `/console/` is the page too, at its one address (so that relative URLs never differ).
async fn to_page() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/console")).finish()
}

async fn asset(req: HttpRequest) -> HttpResponse {
    let name = req.match_info().get("name").unwrap_or_default();
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, body)) => console_response(content_type, body),
        None => actix_web::ResponseError::error_response(&ApiError::not_found()),
    }
}

async fn only_get() -> HttpResponse {
    let refused = ApiError::new(ErrorCode::MethodNotAllowed, "this route does not accept this method");
    let mut response = actix_web::ResponseError::error_response(&refused);
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
}
