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
fn the_document_is_openapi_3_1_and_names_every_operation_and_schema_in_the_products_words() {
    let doc: serde_json::Value = serde_json::from_str(account_http::openapi_json()).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(id.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{id}: not a method name");
            assert!(operation_ids.insert(id.to_owned()), "{id} twice");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["Account", "ApiKey", "ApiKeyList", "CreatedApiKey", "Plan", "AuditEvent", "Error"] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    for name in schemas.keys() {
        assert!(!name.contains("Dto") && !name.contains("Envelope") && !name.contains('_'), "schema named {name}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(
        doc["paths"]["/v1/account"]["get"]["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
}
