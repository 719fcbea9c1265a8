//! Golden files of the renderer: `tests/golden/<case>/input.yaml` → `expected.yaml` (the
//! dataplane configs, statuses and managed resources). `TURNPIKE_BLESS=1` rewrites the
//! expected files; review the diff before committing it.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use turnpike_gateway::render::{RenderContext, Rendered, render};
use turnpike_gateway::source::parse_set;

pub fn context() -> RenderContext {
    RenderContext {
        now: Time(k8s_openapi::jiff::Timestamp::from_second(1_767_225_600).unwrap()),
        standalone: false,
        dataplane_image: "turnpike:golden".into(),
        dataplane_image_pull_policy: None,
        cds_address: "turnpike-cds.turnpike-system.svc:13478".into(),
        previous_secrets: BTreeMap::new(),
        serving_certificates: Default::default(),
        offload_reports: Default::default(),
    }
}

fn to_value(r: &Rendered) -> Value {
    let keyed = |m: Vec<(String, Value)>| Value::Object(m.into_iter().collect());
    json!({
        "configs": r.configs,
        "held": r.held,
        "status": {
            "gatewayClasses": r.status.gateway_classes,
            "gatewayConfigs": keyed(r.status.gateway_configs.iter().map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap())).collect()),
            "gateways": keyed(r.status.gateways.iter().map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap())).collect()),
            "udpRoutes": keyed(r.status.udp_routes.iter().map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap())).collect()),
        },
        "managed": r.managed,
        "authService": r.auth,
    })
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn rendered_output_matches_the_golden_files() {
    let bless = std::env::var_os("TURNPIKE_BLESS").is_some();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 10, "golden cases missing");
    for case in all {
        let input = std::fs::read_to_string(case.join("input.yaml")).unwrap();
        let objects =
            parse_set("input.yaml", &input).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let rendered = render(&objects, &context());
        let actual = serde_yaml_ng::to_string(&to_value(&rendered)).unwrap();
        // Rendering is a pure function: twice the same input, twice the same output.
        assert_eq!(
            actual,
            serde_yaml_ng::to_string(&to_value(&render(&objects, &context()))).unwrap()
        );
        let expected_path = case.join("expected.yaml");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}: output differs from expected.yaml (TURNPIKE_BLESS=1 rewrites it)\n--- actual ---\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
