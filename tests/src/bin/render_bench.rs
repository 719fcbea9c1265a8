//! Render time of the control plane for a large cluster: 1,000 Gateways with 10 UDPRoutes
//! each (and a Service with an EndpointSlice per route).
//!
//!   cargo run --release -p turnpike-tests --bin render_bench [-- GATEWAYS ROUTES]

use std::time::Instant;

use turnpike_gateway::render::{RenderContext, render};
use turnpike_gateway::source::parse_set;

fn main() {
    let mut args = std::env::args().skip(1);
    let gateways: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let routes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mut yaml = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: turnpike}\nspec:\n  controllerName: turnpike.dev/gateway-controller\n  parametersRef: {group: turnpike.dev, kind: GatewayConfig, name: cfg, namespace: default}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: cfg, namespace: default}\nspec:\n  auth: {type: ephemeral, secretRef: {name: auth}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: auth, namespace: default}\nstringData: {secret: s}\n",
    );
    for g in 0..gateways {
        let ns = format!("ns{g}");
        yaml.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {ns}}}\nspec:\n  gatewayClassName: turnpike\n  addresses: [{{value: 10.{}.{}.1}}]\n  listeners:\n    - {{name: udp, protocol: TURN-UDP, port: 3478}}\n    - {{name: tcp, protocol: TURN-TCP, port: 3478}}\n",
            g / 256,
            g % 256
        ));
        for r in 0..routes {
            yaml.push_str(&format!(
                "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {{name: r{r}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: s{r}, port: 5000}}]}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{r}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.{}.{}\n  ports: [{{name: rtp, port: 5000, targetPort: 40000}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{r}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: s{r}}}}}\naddressType: IPv4\nports: [{{name: rtp, port: 40000}}]\nendpoints: [{{addresses: [10.244.{}.{}]}}, {{addresses: [10.245.{}.{}]}}]\n",
                g % 250, r, g % 250, r, g % 250, r
            ));
        }
    }
    let t = Instant::now();
    let objects = match parse_set("bench.yaml", &yaml) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let parse = t.elapsed();
    let ctx = RenderContext {
        now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        standalone: false,
        dataplane_image: "turnpike".into(),
        dataplane_image_pull_policy: None,
        cds_address: "cds:13478".into(),
        previous_secrets: Default::default(),
        serving_certificates: Default::default(),
        offload_reports: Default::default(),
    };
    let mut best = f64::MAX;
    let mut configs = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = render(&objects, &ctx);
        best = best.min(t.elapsed().as_secs_f64());
        configs = r.configs.len();
    }
    println!(
        "{gateways} Gateways x {routes} routes ({} objects): parse {:.0} ms, render best of 5 {:.0} ms, {configs} configs",
        objects.gateways.len()
            + objects.udp_routes.len()
            + objects.services.len()
            + objects.endpoint_slices.len(),
        parse.as_secs_f64() * 1e3,
        best * 1e3
    );
    if configs != gateways {
        eprintln!("expected {gateways} configs");
        std::process::exit(1);
    }
}
