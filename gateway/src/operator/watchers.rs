//! One kube-rs watcher per kind, all feeding one channel of [`Change`]s. The watcher lists,
//! then watches; on any error (a broken connection, an API server restart, `410 Gone`) it
//! backs off and lists again, which the [`super::inventory::Inventory`] turns into a clean
//! replacement of that kind.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, Event, ExponentialBackoff};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::inventory::{Change, Kind, key_for};
use super::metrics::OperatorMetrics;
use crate::crd::{GatewayConfig, StaticService};
use crate::render::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::source::Object;

/// Retry delays of a broken watch: 250 ms doubling to 5 s, jittered, back to 250 ms after
/// any event. client-go's 0.8–30 s (kube-rs's default) let an API server restart, with its
/// connection refusals, warm-up 403s and `410 Gone` relists, stall changes for half a
/// minute; ten watches at most every 5 s each are still gentle on a recovering server.
fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(builder), Duration::from_secs(60))
}

fn spawn<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    wrap: fn(Box<K>) -> Object,
    tx: mpsc::Sender<Change>,
    metrics: Arc<OperatorMetrics>,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config)
            .backoff(watch_backoff())
            .boxed();
        while let Some(event) = stream.next().await {
            // Managed fields are bookkeeping of the API server; nothing here reads them.
            let lean = |mut o: K| {
                o.meta_mut().managed_fields = None;
                wrap(Box::new(o))
            };
            let change = match event {
                Ok(Event::Init) => Change::Init(kind),
                Ok(Event::InitApply(o)) => Change::InitApply(lean(o)),
                Ok(Event::InitDone) => Change::InitDone(kind),
                Ok(Event::Apply(o)) => Change::Apply(lean(o)),
                Ok(Event::Delete(o)) => Change::Delete(kind, key_for(&o)),
                Err(e) => {
                    metrics.watch_errors.inc();
                    tracing::warn!(?kind, error = %e, "watch failed; relisting after a backoff");
                    continue;
                }
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    })
}

/// Starts a watcher for every kind the renderer reads, plus our managed Deployments.
pub fn spawn_all(
    client: &Client,
    tx: &mpsc::Sender<Change>,
    metrics: &Arc<OperatorMetrics>,
) -> Vec<JoinHandle<()>> {
    let all = watcher::Config::default;
    let c = || client.clone();
    let m = || metrics.clone();
    vec![
        spawn(
            Api::<GatewayClass>::all(c()),
            all(),
            Kind::GatewayClass,
            Object::GatewayClass,
            tx.clone(),
            m(),
        ),
        // Labels only matter, for listeners' allowedRoutes namespace selectors.
        spawn(
            Api::<Namespace>::all(c()),
            all(),
            Kind::Namespace,
            Object::Namespace,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<GatewayConfig>::all(c()),
            all(),
            Kind::GatewayConfig,
            Object::GatewayConfig,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<Gateway>::all(c()),
            all(),
            Kind::Gateway,
            Object::Gateway,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<UdpRoute>::all(c()),
            all(),
            Kind::UdpRoute,
            Object::UdpRoute,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<ReferenceGrant>::all(c()),
            all(),
            Kind::ReferenceGrant,
            Object::ReferenceGrant,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<Service>::all(c()),
            all(),
            Kind::Service,
            Object::Service,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<EndpointSlice>::all(c()),
            all(),
            Kind::EndpointSlice,
            Object::EndpointSlice,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<StaticService>::all(c()),
            all(),
            Kind::StaticService,
            Object::StaticService,
            tx.clone(),
            m(),
        ),
        // Helm releases and service-account tokens are never ours to read.
        spawn(
            Api::<Secret>::all(c()),
            all().fields("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"),
            Kind::Secret,
            Object::Secret,
            tx.clone(),
            m(),
        ),
        spawn(
            Api::<Deployment>::all(c()),
            all().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
            Kind::Deployment,
            Object::Deployment,
            tx.clone(),
            m(),
        ),
        // The managed dataplane pods, for the offload reports on their conditions.
        spawn(
            Api::<Pod>::all(c()),
            all().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
            Kind::Pod,
            Object::Pod,
            tx.clone(),
            m(),
        ),
    ]
}
