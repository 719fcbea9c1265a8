//! Records what dataplanes report over CDS on their pods. Every replica serves CDS, and a
//! dataplane reaches one of them; only the leader writes Gateway status. So the replica a
//! dataplane reports to writes the report on that dataplane's pod (the condition
//! [`crate::render::offload::POD_CONDITION`], which `kubectl describe pod` shows too), and the leader reads it
//! from there like any other watched state.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;
use turnpike_contract::cds::report::{OffloadStatus, PodName};

use crate::cds::server::Reports;
use crate::render::offload::{offload_condition, pod_belongs_to, pod_condition};

/// A write that failed (the API server away, the pod not listed yet) is retried this often.
const RETRY: Duration = Duration::from_secs(5);

/// Writes every new report on its pod until `reports` closes.
pub async fn run(client: kube::Client, mut reports: watch::Receiver<Reports>) {
    // What each pod's condition was last written from, so a reconnect that reports the
    // same thing writes nothing.
    let mut written: BTreeMap<PodName, OffloadStatus> = BTreeMap::new();
    loop {
        let wanted: Vec<(String, PodName, OffloadStatus)> = reports
            .borrow_and_update()
            .iter()
            .flat_map(|(gateway, by_conn)| {
                by_conn
                    .values()
                    .filter_map(move |r| Some((gateway.clone(), r.pod.clone()?, r.offload.clone())))
            })
            .collect();
        // Forget pods no longer connected here: a later report writes again.
        written.retain(|p, _| wanted.iter().any(|(_, w, _)| w == p));
        let mut failed = false;
        for (gateway, pod, offload) in wanted {
            if written.get(&pod) == Some(&offload) {
                continue;
            }
            match write(&client, &gateway, &pod, &offload).await {
                Ok(()) => {
                    tracing::info!(%pod, %gateway, active = %offload.active, "offload report recorded on the pod");
                    written.insert(pod, offload);
                }
                Err(e) => {
                    tracing::warn!(%pod, %gateway, error = %e, "cannot record the offload report; retrying");
                    failed = true;
                }
            }
        }
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            () = retry => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error("reading the pod: {0}")]
    Read(kube::Error),
    #[error("the pod is not one of this Gateway's dataplanes")]
    NotOurs,
    #[error("writing the pod's condition: {0}")]
    Write(kube::Error),
}

async fn write(
    client: &kube::Client,
    gateway: &str,
    pod: &PodName,
    offload: &OffloadStatus,
) -> Result<(), ReportError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let current = api.get(&pod.name).await.map_err(ReportError::Read)?;
    // The CDS certificate proved which Gateway this dataplane serves, not which pod it is:
    // it may only write on that Gateway's pods.
    if !pod_belongs_to(&current, gateway, pod) {
        return Err(ReportError::NotOurs);
    }
    let mut condition = pod_condition(offload, crate::standalone::now_time());
    if let Some(b) = offload_condition(&current) {
        if b.status == condition.status
            && b.reason == condition.reason
            && b.message == condition.message
        {
            return Ok(());
        }
        if b.status == condition.status {
            condition.last_transition_time = b.last_transition_time.clone();
        }
    }
    // A strategic merge keyed by condition type: the kubelet's conditions stay as they are.
    let patch = serde_json::json!({ "status": { "conditions": [condition] } });
    api.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(ReportError::Write)?;
    Ok(())
}
