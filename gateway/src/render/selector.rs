//! Listener `allowedRoutes.namespaces.selector`: Kubernetes label-selector semantics
//! (`matchLabels` and `matchExpressions` ANDed; an empty selector selects every namespace).

use std::collections::BTreeMap;

use gateway_api::gateways::GatewayListenersAllowedRoutesNamespacesSelector as Selector;

/// Does `sel` select a namespace with `labels`? An operator other than `In`, `NotIn`,
/// `Exists` and `DoesNotExist` selects nothing (the API server's schema refuses such
/// selectors; one from a YAML file must not widen access).
pub fn selects(sel: &Selector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::gateways::GatewayListenersAllowedRoutesNamespacesSelectorMatchExpressions as Expr;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> Expr {
        Expr {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = Selector {
            match_labels: Some(labels(&[("team", "media")])),
            match_expressions: Some(vec![expr("env", "In", &["prod", "staging"])]),
        };
        assert!(selects(
            &sel,
            &labels(&[("team", "media"), ("env", "prod")])
        ));
        assert!(!selects(
            &sel,
            &labels(&[("team", "media"), ("env", "dev")])
        ));
        assert!(!selects(&sel, &labels(&[("team", "web"), ("env", "prod")])));
        assert!(!selects(&sel, &labels(&[("env", "prod")])));
    }

    #[test]
    fn every_operator() {
        let l = labels(&[("a", "1")]);
        let one = |e: Expr| Selector {
            match_labels: None,
            match_expressions: Some(vec![e]),
        };
        assert!(selects(&one(expr("a", "NotIn", &["2"])), &l));
        assert!(!selects(&one(expr("a", "NotIn", &["1"])), &l));
        assert!(selects(&one(expr("b", "NotIn", &["1"])), &l));
        assert!(selects(&one(expr("a", "Exists", &[])), &l));
        assert!(!selects(&one(expr("b", "Exists", &[])), &l));
        assert!(selects(&one(expr("b", "DoesNotExist", &[])), &l));
        assert!(!selects(&one(expr("a", "DoesNotExist", &[])), &l));
        assert!(!selects(&one(expr("a", "Matches", &["1"])), &l));
    }

    #[test]
    fn an_empty_selector_selects_every_namespace() {
        assert!(selects(&Selector::default(), &labels(&[])));
    }
}
