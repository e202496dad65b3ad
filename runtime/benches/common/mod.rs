//! What every benchmark needs: numeric settings from the environment and the real services,
//! taken from the environment or started by e2e/services.

/// `name` as a number (`1_000_000` allowed), else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// `var` from the environment, else from what `e2e/services/<service>.sh up` prints.
pub fn service_env(service: &str, var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    let script = format!(
        "{}/../e2e/services/{service}.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let o = std::process::Command::new("bash")
        .args([&script, "up"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prefix = format!("{var}=");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .unwrap_or_else(|| panic!("{service}.sh printed no {var}"))
}
