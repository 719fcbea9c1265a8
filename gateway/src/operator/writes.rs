//! The leader's write loop, apart from rendering: a slow API server, a conflict re-read or
//! a retry backoff never delays the next render or its CDS publish. Only the newest
//! render is written; renders that arrive while a write pass runs are folded into one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::apply::{Applied, Context};
use crate::objects::ObjectSet;
use crate::render::Rendered;

pub const RETRY_MIN: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// One render for the API server to match.
#[derive(Debug)]
pub struct WriteRequest {
    pub objects: ObjectSet,
    pub rendered: Rendered,
    /// Changes when what this replica applied before can no longer be trusted (a new
    /// leader term, or the periodic re-apply that undoes hand edits).
    pub trust_epoch: u64,
    /// The secret-rotation ledger, when it changed ([`super::ledger`]).
    pub ledger: Option<k8s_openapi::api::core::v1::Secret>,
}

/// `None` while this replica is not the leader.
pub type WriteSender = watch::Sender<Option<Arc<WriteRequest>>>;

/// Runs until the sender is dropped. A pass in flight when `leader` turns false is
/// abandoned: the next leader may already be writing, and ours would be stale.
pub async fn run(
    ctx: Arc<Context>,
    mut rx: watch::Receiver<Option<Arc<WriteRequest>>>,
    mut leader: watch::Receiver<bool>,
) {
    let mut applied = Applied::new();
    let mut epoch = None;
    let mut retry = RETRY_MIN;
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        // A failed pass is retried with the newest render, after the backoff, even when no
        // new render comes.
        loop {
            let Some(request) = rx.borrow_and_update().clone() else {
                break;
            };
            if epoch != Some(request.trust_epoch) {
                applied.clear();
                epoch = Some(request.trust_epoch);
            }
            let started = std::time::Instant::now();
            let pass = tokio::select! {
                ok = ctx.write(&request, &mut applied) => Some(ok),
                _ = leader.wait_for(|leading| !*leading) => None,
            };
            let Some(ok) = pass else {
                tracing::info!("leadership lost: write pass abandoned");
                applied.clear();
                break;
            };
            let took = started.elapsed();
            ctx.metrics.write_passes.inc();
            ctx.metrics.write_duration.observe_duration(took);
            if took > Duration::from_secs(1) {
                tracing::info!(seconds = took.as_secs_f64(), ok, "slow write pass");
            }
            if ok {
                retry = RETRY_MIN;
                break;
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}
