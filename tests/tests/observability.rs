//! Issue 17: the alert rules operators load (manifests/helm/turnpike/files/
//! prometheus-rules.yaml) pass Debian's `promtool check rules`, and its unit tests
//! (tests/observability/rules-test.yaml) make every alert fire on its condition and stay
//! quiet short of it.

use std::process::Command;

use turnpike_tests::{output_text, repo_root};

const RULES: &str = "manifests/helm/turnpike/files/prometheus-rules.yaml";

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("promtool ({e}): run tests/run.sh, which installs prometheus"));
    let text = output_text(&out);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_every_alert_fires_on_its_condition() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/observability/rules-test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert of the rule file has a unit test that expects it to fire.
    let rules = std::fs::read_to_string(repo_root().join(RULES)).unwrap_or_default();
    let tests = std::fs::read_to_string(repo_root().join("tests/observability/rules-test.yaml"))
        .unwrap_or_default();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let fires = tests.split("alertname: ").skip(1).any(|t| {
            t.starts_with(alert)
                && t[alert.len()..].starts_with(['\n', ','])
                && t.contains("exp_labels")
        });
        assert!(fires, "{alert}: no test expects it to fire");
    }
}
