//! The committed `docs/openapi.json` is the document the code generates: regenerate it with
//! `just openapi` whenever a route or a body changes.

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == account_http::openapi_json(),
        "docs/openapi.json is out of date: run `just openapi` and commit the result"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_every_route_and_the_bearer_scheme() {
    let doc: serde_json::Value = serde_json::from_str(account_http::openapi_json()).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/v1/signup", "post"),
        ("/v1/account", "get"),
        ("/v1/account/api-keys", "get"),
        ("/v1/account/api-keys", "post"),
        ("/v1/account/api-keys/{key_id}", "delete"),
        ("/v1/account/api-keys/{key_id}", "patch"),
        ("/v1/account/api-keys/{key_id}/roll", "post"),
        ("/v1/account/audit-log", "get"),
        ("/v1/plans", "get"),
        ("/v1/api-keys/revoke-leaked", "post"),
        ("/v1/internal/verify-key", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not described");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(
        doc["paths"]["/v1/account"]["get"]["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
}
