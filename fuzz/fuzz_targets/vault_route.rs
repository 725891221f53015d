#![no_main]
//! URL routing of the vault's data plane and management API, before any
//! authentication: `METHOD PATH[?QUERY]`, the query decoded as the identity
//! endpoint and `api-version` checks decode it.

use libfuzzer_sys::fuzz_target;
use pgcmk_vault::http::admin_route::AdminRoute;
use pgcmk_vault::http::{form_pairs, form_value};
use pgcmk_vault::keys::route::Route;

fuzz_target!(|request: &[u8]| {
    let Ok(request) = std::str::from_utf8(request) else {
        return;
    };
    let (method, target) = request.split_once(' ').unwrap_or((request, ""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(route) = Route::parse(method, path) {
        let _ = (route.operation(), route.permission());
        if let Some(name) = route.key_name() {
            assert!(path.contains(name), "{route:?} names a key not in {path}");
        }
        let _ = route.version();
    }
    if let Some((route, params)) = AdminRoute::parse(method, path) {
        let _ = route.names_vault();
        for param in params {
            assert!(path.contains(&param), "parameter {param} is not in {path}");
        }
    }
    let pairs = form_pairs(query);
    let _ = form_value(&pairs, "api-version");
});
