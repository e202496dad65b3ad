//! Credentials reach the server as the `Authorization` header each scheme defines (the proxy
//! refuses anything else with 401, as a secured cluster does); a wrong one fails the job at
//! start with a clear error that never shows the secret.

use base64::Engine;

use super::opensearch::*;
use super::proxy::{Fault, Proxy};
use crate::harness::*;

const N: i64 = 2_000;

fn job_through(proxy: &Proxy, auth: &str, env: &[(&str, &str)]) -> (std::process::Output, String) {
    let base = url();
    let index = unique("auth");
    create_index(&base, &index, 1, mapping());
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        10_000,
        &proxy.url,
        &index,
        &format!("    id_field: seq\n    auth: {auth}\n    retry: {{ backoff: 10ms, max_attempts: 2 }}\n"),
    );
    (run(&spec, &[], env), index)
}

#[test]
fn basic_api_key_and_bearer_credentials_are_sent_as_their_header() {
    let base = url();
    let basic = base64::engine::general_purpose::STANDARD.encode("elastic:s3cr=t!");
    for (header, auth, env) in [
        (
            format!("Basic {basic}"),
            "{ basic: { username: elastic, password: \"${env:ES_PASSWORD}\" } }",
            ("ES_PASSWORD", "s3cr=t!"),
        ),
        (
            "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==".to_string(),
            "{ api_key: \"${env:ES_API_KEY}\" }",
            (
                "ES_API_KEY",
                "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==",
            ),
        ),
        (
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.token".to_string(),
            "{ bearer: \"${env:ES_TOKEN}\" }",
            ("ES_TOKEN", "eyJhbGciOiJIUzI1NiJ9.e30.token"),
        ),
    ] {
        let proxy = Proxy::start(&base, Fault::None, Some(&header));
        let (o, index) = job_through(&proxy, auth, &[env]);
        assert!(o.status.success(), "{auth}: {}", stderr(&o));
        assert_eq!(proxy.unauthorized(), 0, "{auth}");
        assert!(proxy.bulks() > 0, "{auth}");
        assert_exact(&base, &index, N);
    }
}

#[test]
fn wrong_credentials_fail_at_start_naming_auth_and_never_the_secret() {
    let proxy = Proxy::start(&url(), Fault::None, Some("Basic d2VpcjpyaWdodA=="));
    let (o, _) = job_through(
        &proxy,
        "{ basic: { username: weir, password: \"${env:ES_PASSWORD}\" } }",
        &[("ES_PASSWORD", "hunter2-wrong")],
    );
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("HTTP 401: authentication failed; check auth"),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "the password leaked:\n{log}");
    assert_eq!(proxy.bulks(), 0, "nothing is sent with refused credentials");
}
