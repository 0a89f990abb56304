//! Keeping secrets out of plans, logs and reports.
//!
//! A value is secret when its field name says so (`secret_access_key`, `webhook_url`,
//! `password`, ...) or when it came from an environment variable whose name says so
//! (`SLACK_WEBHOOK`, `S3_SRC_SECRET_ACCESS_KEY`). URLs lose their password.

use std::collections::BTreeMap;

pub const REDACTED: &str = "<redacted>";

const SECRET_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "token",
    "webhook",
    "credential",
    "access_key",
    "accesskey",
    "private_key",
    "api_key",
    "apikey",
    "auth",
    "passphrase",
];

/// Whether a field or variable name marks a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// `text` with every occurrence of the given secret values replaced by `<redacted>`
/// (values shorter than 4 characters are left: they would redact ordinary words).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.chars().count() >= 4) {
        out = out.replace(s.as_str(), REDACTED);
        // Errors often quote values with `{:?}`, which escapes some characters.
        let debug = format!("{s:?}");
        out = out.replace(&debug[1..debug.len() - 1], REDACTED);
    }
    out
}

/// `scheme://user:password@host/...` without the password; other URLs unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:{REDACTED}@{host}{path}")
            } else {
                url.to_string()
            }
        }
        None => url.to_string(),
    }
}

/// A copy of `value` (at spec path `path`) with secrets replaced. `env_vars` maps spec
/// paths to the variables their values used.
pub fn redact_value(
    value: &serde_json::Value,
    path: &str,
    env_vars: &BTreeMap<String, Vec<String>>,
) -> serde_json::Value {
    use serde_json::Value;
    let from_secret_var = env_vars.get(path).is_some_and(|vars| vars.iter().any(|v| is_secret_name(v)));
    let field = path.rsplit('.').next().unwrap_or(path);
    match value {
        // An empty secret hides nothing, and says something: alerts are off.
        Value::String(s) if s.trim().is_empty() && (from_secret_var || is_secret_name(field)) => {
            Value::String(if field.contains("webhook") { "(off)" } else { "(not set)" }.into())
        }
        Value::String(_) | Value::Number(_) if from_secret_var || is_secret_name(field) => {
            Value::String(REDACTED.into())
        }
        Value::String(s) if s.contains("://") => Value::String(redact_url(s)),
        Value::Array(a) => Value::Array(
            a.iter().enumerate().map(|(i, v)| redact_value(v, &format!("{path}[{i}]"), env_vars)).collect(),
        ),
        Value::Object(m) => Value::Object(
            m.iter().map(|(k, v)| (k.clone(), redact_value(v, &format!("{path}.{k}"), env_vars))).collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert!(is_secret_name("secret_access_key"));
        assert!(is_secret_name("SLACK_WEBHOOK"));
        assert!(is_secret_name("S3_SRC_ACCESS_KEY_ID"));
        assert!(!is_secret_name("prefix"));
        assert_eq!(redact_url("sftp://bob:hunter2@host:22/in"), "sftp://bob:<redacted>@host:22/in");
        assert_eq!(redact_url("s3://bucket/prefix"), "s3://bucket/prefix");
    }

    #[test]
    fn values_from_secret_variables() {
        let mut env = BTreeMap::new();
        env.insert("nodes.alert.url".to_string(), vec!["SLACK_WEBHOOK".to_string()]);
        let v = serde_json::json!({"url": "https://hooks.example/T000/B000/XXX", "channel": "x"});
        let r = redact_value(&v, "nodes.alert", &env);
        assert_eq!(r["url"], REDACTED);
        assert_eq!(r["channel"], "x");
    }
}
