//! Checks a drill's proxies against the server it will drive, before anything runs: a
//! drill that names a proxy the server can never have, or puts an HTTP fault on a TCP
//! proxy, would otherwise pass `drill check` and fail half-way through its run.

use std::collections::BTreeMap;
use std::time::Duration;

use downtime_model::drill::DrillPlan;
use downtime_model::http_fault::HTTP_FAULT_TYPES;
use serde_json::Value;

/// How long the server may take to list its proxies.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxies a server has: name → whether it speaks HTTP.
type ServerProxies = BTreeMap<String, bool>;

/// Problems of `plan` on the embedded server, which starts with no proxies: every proxy a
/// step touches must be declared in the file.
pub(crate) fn embedded_problems(plan: &DrillPlan) -> Vec<String> {
    problems(plan, &ServerProxies::new(), "the embedded server")
}

/// Lists the proxies of the server at `base` and returns the plan's problems there, or an
/// error saying why the server could not be asked.
pub(crate) async fn server_problems(
    plan: &DrillPlan,
    base: &str,
    api_token: Option<&str>,
) -> Result<Vec<String>, String> {
    let base = base.trim_end_matches('/');
    let proxies = list_proxies(base, api_token).await?;
    Ok(problems(plan, &proxies, base))
}

/// The problems of `plan` on a server that has `existing` proxies (`server` names it).
fn problems(plan: &DrillPlan, existing: &ServerProxies, server: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (config, _) in &plan.proxies {
        if existing.contains_key(&config.name) {
            out.push(format!(
                "proxy {:?} of this file already exists on {server}: the drill could not create it",
                config.name
            ));
        }
    }
    for step in &plan.steps {
        for fault in &step.faults {
            let declared = plan
                .proxies
                .iter()
                .find(|(c, _)| c.name == fault.proxy)
                .map(|(c, _)| c.protocol == downtime_model::proxy::Protocol::Http);
            let is_http = match declared.or_else(|| existing.get(&fault.proxy).copied()) {
                Some(is_http) => is_http,
                None => {
                    out.push(missing_proxy(&step.name, &fault.proxy, existing, server));
                    continue;
                }
            };
            let kind = fault.request.kind.as_deref().unwrap_or_default();
            if declared.is_none() && !is_http && HTTP_FAULT_TYPES.contains(&kind) {
                out.push(format!(
                    "step {:?}: {kind:?} is an HTTP fault but proxy {:?} on {server} is a TCP proxy",
                    step.name, fault.proxy
                ));
            }
        }
    }
    out.dedup();
    out
}

fn missing_proxy(step: &str, proxy: &str, existing: &ServerProxies, server: &str) -> String {
    if existing.is_empty() && server == "the embedded server" {
        return format!(
            "step {step:?}: proxy {proxy:?} is not declared in this file, and the embedded server starts with no proxies (declare it with [[proxy]], or set server = \"http://…\")"
        );
    }
    let names: Vec<&str> = existing.keys().map(String::as_str).collect();
    format!(
        "step {step:?}: proxy {proxy:?} does not exist on {server} and is not declared in this file (the server has: {})",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
}

async fn list_proxies(base: &str, api_token: Option<&str>) -> Result<ServerProxies, String> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("downtime-cli/", env!("CARGO_PKG_VERSION")))
        .timeout(LIST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.get(format!("{base}/proxies"));
    if let Some(token) = api_token {
        request = request.bearer_auth(token);
    }
    let answer = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        return Err(format!(
            "GET {base}/proxies: HTTP {}: {}",
            status.as_u16(),
            body.trim()
        ));
    }
    let body: Value = answer
        .json()
        .await
        .map_err(|e| format!("GET {base}/proxies: not a proxy list: {e}"))?;
    let Some(map) = body.as_object() else {
        return Err(format!("GET {base}/proxies: not a proxy list"));
    };
    Ok(map
        .iter()
        .map(|(name, proxy)| {
            let is_http = proxy.get("protocol").and_then(Value::as_str) == Some("http");
            (name.clone(), is_http)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> DrillPlan {
        DrillPlan::parse(text).unwrap_or_else(|p| panic!("{p:?}"))
    }

    const STEP: &str = r#"
[[probe]]
name = "home"
url = "http://127.0.0.1:1/"

[[step]]
name = "outage"
duration = "1s"
[[step.fault]]
proxy = "api"
type = "status"
"#;

    #[test]
    fn the_embedded_server_has_only_the_files_proxies() {
        let problems = embedded_problems(&plan(STEP));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("proxy \"api\" is not declared in this file"),
            "{problems:?}"
        );
        let declared = format!(
            "[[proxy]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:1\"\nprotocol = \"http\"\n{STEP}"
        );
        assert!(embedded_problems(&plan(&declared)).is_empty());
    }

    #[test]
    fn a_server_proxy_must_exist_and_suit_the_fault() {
        let p = plan(STEP);
        let tcp = ServerProxies::from([("api".to_owned(), false), ("db".to_owned(), false)]);
        assert_eq!(
            problems(&p, &tcp, "http://x"),
            [
                "step \"outage\": \"status\" is an HTTP fault but proxy \"api\" on http://x is a TCP proxy"
            ]
        );
        let http = ServerProxies::from([("api".to_owned(), true)]);
        assert!(problems(&p, &http, "http://x").is_empty());
        let other = ServerProxies::from([("db".to_owned(), true)]);
        assert_eq!(
            problems(&p, &other, "http://x"),
            [
                "step \"outage\": proxy \"api\" does not exist on http://x and is not declared in this file (the server has: db)"
            ]
        );
    }
}
