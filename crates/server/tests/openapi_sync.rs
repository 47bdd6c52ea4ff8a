//! `api/openapi.yaml` and the router's route table must list the same
//! (method, path) pairs, and every path the spec documents must be served.

use keeper_server::http::routes;
use std::collections::BTreeSet;

fn spec() -> serde_yaml::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../api/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("api/openapi.yaml is readable");
    serde_yaml::from_str(&text).expect("api/openapi.yaml is valid YAML")
}

#[test]
fn router_and_openapi_list_the_same_endpoints() {
    let spec = spec();
    let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
    let mut documented = BTreeSet::new();
    let paths = spec["paths"].as_mapping().expect("paths is a mapping");
    for (path, item) in paths {
        let path = path.as_str().expect("path is a string");
        let item = item.as_mapping().expect("path item is a mapping");
        for (key, _) in item {
            let key = key.as_str().expect("key is a string");
            if methods.contains(&key) {
                documented.insert((key.to_uppercase(), path.to_string()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|(spec, _)| (spec.method.to_string(), spec.spec_path.to_string()))
        .collect();
    let missing_in_spec: Vec<_> = served.difference(&documented).collect();
    let missing_in_router: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing_in_spec.is_empty() && missing_in_router.is_empty(),
        "served but not documented: {missing_in_spec:?}; documented but not served: {missing_in_router:?}"
    );
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with('3')),
        Some(true)
    );
}

#[test]
fn every_documented_operation_has_responses_and_refs_resolve() {
    let spec = spec();
    let text = serde_yaml::to_string(&spec).unwrap();
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for (method, op) in item.as_mapping().unwrap() {
            if method.as_str() == Some("parameters") {
                continue;
            }
            assert!(
                op["responses"].as_mapping().is_some_and(|r| !r.is_empty()),
                "{path:?} {method:?} has no responses"
            );
        }
    }
    // Every local $ref points at an existing component.
    for line in text.lines() {
        if let Some(idx) = line.find("#/components/") {
            let reference = line[idx + 2..].trim_matches(|c| c == '\'' || c == '"' || c == ' ');
            let mut node = &spec;
            for part in reference.split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "dangling $ref {reference}");
        }
    }
}

#[test]
fn every_route_pattern_is_distinct_per_method() {
    let mut seen = BTreeSet::new();
    for (spec, _) in routes() {
        for pattern in spec.patterns {
            assert!(
                seen.insert((spec.method.to_string(), pattern.to_string())),
                "{} {pattern} listed twice",
                spec.method
            );
        }
    }
}
