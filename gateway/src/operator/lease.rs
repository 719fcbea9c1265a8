//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder writes to the API server. Expiry is judged by when *this* replica last
//! saw the record change (as client-go does), never by comparing clocks across machines.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// This replica's name (the pod name in a cluster).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub duration: Duration,
}

impl LeaseOptions {
    /// How often the lease is renewed or re-checked.
    fn retry_period(&self) -> Duration {
        self.duration / 5
    }

    /// A leader that could not renew for this long stops acting as one, before anyone else
    /// may take over.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// What a replica last saw of the lease record, and when.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

/// What a replica does after reading the lease record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Write the record with this replica as holder; `takeover` when it was not the holder
    /// (a new acquire time and one more transition).
    Claim { takeover: bool },
    /// Another replica's lease is live until `expires` (by this replica's clock).
    Follow { expires: Instant },
}

/// The election's rule, free of I/O and of the clock (time is passed in). Expiry is judged
/// by when this replica last saw the record change, never by the holder's timestamps.
#[derive(Debug, Default)]
struct Election {
    observed: Option<(Observed, Instant)>,
}

impl Election {
    /// `record` as read at `now`, whose holder asked for `lease` of validity.
    fn decide(&mut self, record: Observed, lease: Duration, me: &str, now: Instant) -> Decision {
        let seen_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.observed = Some((record.clone(), now));
                now
            }
        };
        let ours = record.holder.as_deref() == Some(me);
        let expired = record.holder.is_none() || now.duration_since(seen_at) > lease;
        if ours || expired {
            Decision::Claim { takeover: !ours }
        } else {
            Decision::Follow {
                expires: seen_at + lease,
            }
        }
    }
}

/// Whether a replica leads after one acquire-or-renew attempt that ended at `now`:
/// `Some(won)` when the API server answered, `None` when it failed or did not answer in
/// time. A leader whose renewal failed keeps leading only until its renew `deadline`, so it
/// never acts as leader once another replica may.
fn leads_after(answer: Option<bool>, deadline: Option<Instant>, now: Instant) -> bool {
    match answer {
        Some(won) => won,
        None => deadline.is_some_and(|d| now < d),
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    opts: LeaseOptions,
    election: Election,
    /// When another holder's lease runs out unless renewed (by our clock).
    expires: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: kube::Client, opts: LeaseOptions) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &opts.namespace),
            opts,
            election: Election::default(),
            expires: None,
        }
    }

    /// One round: acquire the lease if it is free or expired, renew it if ours. `Ok(true)`
    /// when this replica holds it afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let seconds = i32::try_from(self.opts.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let me = self.opts.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.opts.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.opts.name.clone()),
                    namespace: Some(self.opts.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Observed {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
        };
        let theirs = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(1),
        );
        self.expires = None;
        let takeover = match self.election.decide(record, theirs, &me, Instant::now()) {
            Decision::Claim { takeover } => takeover,
            Decision::Follow { expires } => {
                self.expires = Some(expires);
                return Ok(false);
            }
        };
        let ours = !takeover;
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours { spec.acquire_time } else { Some(now()) },
            renew_time: Some(now()),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 }),
            ..spec
        });
        // resourceVersion is kept from the read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.opts.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.opts.name, "leadership released"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease"),
        }
    }

    /// Every retry period; a follower also checks right after the holder's lease would
    /// run out, so a hand-over does not wait up to one more period.
    fn next_check(&self) -> Duration {
        let period = self.opts.retry_period();
        match self.expires {
            Some(at) => {
                period.min(at.saturating_duration_since(Instant::now()) + Duration::from_millis(20))
            }
            None => period,
        }
    }

    /// Runs the election until `stop` fires, reporting leadership on `tx`; releases the
    /// lease when it stops as the leader.
    ///
    /// A leader steps down at its renew deadline even while a renewal hangs (an API server
    /// that accepts connections but does not answer): each attempt is cut off there, and
    /// the loop wakes there, so it never acts as leader once another replica may.
    pub async fn run(mut self, tx: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut last_renewed: Option<Instant> = None;
        loop {
            // A leader's attempt may take until its deadline (a slow answer that renews is
            // still a renewal); a follower's is retried after a period.
            let deadline = last_renewed.map(|t| t + self.opts.renew_deadline());
            let cut_off = deadline.unwrap_or_else(|| Instant::now() + self.opts.retry_period());
            let started = Instant::now();
            let attempt = tokio::time::timeout_at(cut_off, self.try_acquire_or_renew()).await;
            let answer = match attempt {
                Ok(Ok(won)) => Some(won),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    None
                }
                Err(_) => {
                    tracing::warn!("lease renewal got no answer in time");
                    None
                }
            };
            let leading = leads_after(answer, deadline, Instant::now());
            if answer == Some(true) {
                // Counted from the request, not the answer: the record was written in
                // between, so other replicas' expiry is never earlier than ours.
                last_renewed = Some(started);
            } else if !leading {
                last_renewed = None;
            }
            if *tx.borrow() != leading {
                tracing::info!(identity = %self.opts.identity, leading, "leadership changed");
                let _ = tx.send(leading);
            }
            let mut wake = Instant::now() + self.next_check();
            if let Some(t) = last_renewed {
                wake = wake.min(t + self.opts.renew_deadline());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed() => break,
            }
        }
        if *tx.borrow() {
            let _ = tx.send(false);
            self.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>, renewals: i64) -> Observed {
        Observed {
            holder: holder.map(str::to_string),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + renewals)
                    .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            )),
            transitions: Some(0),
        }
    }

    /// A fake clock: instants are `t0` plus seconds; nothing sleeps.
    #[test]
    fn expiry_is_judged_by_when_the_record_last_changed() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let lease = Duration::from_secs(15);
        let mut e = Election::default();
        // Another holder's record, seen first at t0: followed until t0 + 15 s.
        assert_eq!(
            e.decide(record(Some("b"), 0), lease, "a", at(0)),
            Decision::Follow { expires: at(15) }
        );
        // The same record 10 s later (b renews nothing): still b's.
        assert_eq!(
            e.decide(record(Some("b"), 0), lease, "a", at(10)),
            Decision::Follow { expires: at(15) }
        );
        // b renewed: the clock restarts from when we saw the change.
        assert_eq!(
            e.decide(record(Some("b"), 1), lease, "a", at(14)),
            Decision::Follow { expires: at(29) }
        );
        // Unchanged past its duration: taken over.
        assert_eq!(
            e.decide(record(Some("b"), 1), lease, "a", at(30)),
            Decision::Claim { takeover: true }
        );
        // Our own record is renewed, whatever its age; a released one is free at once.
        assert_eq!(
            e.decide(record(Some("a"), 2), lease, "a", at(31)),
            Decision::Claim { takeover: false }
        );
        assert_eq!(
            e.decide(record(None, 3), lease, "a", at(32)),
            Decision::Claim { takeover: true }
        );
    }

    #[test]
    fn a_leader_without_an_answer_steps_down_at_its_deadline() {
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_secs(10));
        assert!(leads_after(Some(true), None, t0));
        assert!(!leads_after(Some(false), deadline, t0));
        assert!(leads_after(None, deadline, t0 + Duration::from_secs(9)));
        assert!(!leads_after(None, deadline, t0 + Duration::from_secs(10)));
        // A follower (no deadline) never leads on a failed attempt.
        assert!(!leads_after(None, None, t0));
    }
}
