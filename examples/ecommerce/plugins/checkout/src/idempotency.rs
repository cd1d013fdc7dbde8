//! Idempotent checkouts: one record per checkout key in a key-value bucket.
//!
//! A record is `running` (a request holds the key until its lease ends), `done` (the answer to
//! replay, with the fingerprint of the request that got it) or `retry` (the last run failed
//! transiently and was undone; the next one runs as a new attempt). Claiming a key is a
//! compare-and-swap, so of two requests with the same key exactly one runs.

use serde::{Deserialize, Serialize};
use tessera_sdk::kv::{self, Bucket, KvError};
use tessera_sdk::log;

use crate::answer::{Answer, Failure};

/// The stored state of one checkout key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    /// A request is running the checkout.
    Running {
        fingerprint: String,
        attempt: u32,
        owner: String,
        lease_until_ms: u64,
    },
    /// Finished; a retry with the same body gets `answer` again.
    Done { fingerprint: String, answer: Answer },
    /// Attempt `attempt` failed and was undone; the next request runs attempt `attempt + 1`.
    Retry { attempt: u32 },
}

/// What a request with an idempotency key does.
#[derive(Debug)]
pub enum Claim {
    /// Run the checkout as this attempt, then [`Ledger::finish`].
    Run(Ledger),
    /// Answer without running (a replay, or why the key cannot be used now).
    Answer {
        /// The answer.
        answer: Answer,
        /// Whether it is a stored answer replayed.
        replayed: bool,
    },
}

/// The claim on a key held while the checkout runs.
#[derive(Debug)]
pub struct Ledger {
    bucket: Bucket,
    key: String,
    owner: String,
    fingerprint: String,
    /// The attempt this request runs (0 for the first).
    pub attempt: u32,
}

/// What deciding on the current record led to.
enum Decision {
    Run(u32),
    Replay(Answer),
    Busy,
    Mismatch,
    Unreadable(String),
}

/// The record of checkout `base_id`.
fn record_key(base_id: &str) -> String {
    format!("checkout:{base_id}")
}

/// Claims checkout `base_id` for a request whose body has `fingerprint`.
pub fn claim(
    bucket: &str,
    base_id: &str,
    fingerprint: &str,
    owner: &str,
    now_ms: u64,
    lease_ms: u64,
) -> Claim {
    match try_claim(bucket, base_id, fingerprint, owner, now_ms, lease_ms) {
        Ok((Decision::Run(attempt), Some(bucket))) => Claim::Run(Ledger {
            bucket,
            key: record_key(base_id),
            owner: owner.to_owned(),
            fingerprint: fingerprint.to_owned(),
            attempt,
        }),
        Ok((Decision::Run(_), None)) => unavailable("the bucket was not kept"),
        Ok((Decision::Replay(answer), _)) => Claim::Answer {
            answer,
            replayed: true,
        },
        Ok((Decision::Busy, _)) => {
            let mut answer = Failure::new(
                409,
                "checkout_in_progress",
                "a checkout with this Idempotency-Key is running; retry when it has finished",
            )
            .into_answer();
            answer.retry_after = Some(1);
            Claim::Answer {
                answer,
                replayed: false,
            }
        }
        Ok((Decision::Mismatch, _)) => Claim::Answer {
            answer: Failure::new(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request; use a new key",
            )
            .into_answer(),
            replayed: false,
        },
        Ok((Decision::Unreadable(why), _)) => Claim::Answer {
            answer: Failure::new(500, "internal", "the checkout's idempotency record is unreadable")
                .detail(format!("record {}: {why}", record_key(base_id)))
                .into_answer(),
            replayed: false,
        },
        Err(KvError::AccessDenied | KvError::NoSuchStore) => Claim::Answer {
            answer: Failure::new(500, "internal", "the plugin is misconfigured")
                .detail(format!(
                    "idempotency_bucket `{bucket}` is not granted to this route entry (buckets = [\"{bucket}\"])"
                ))
                .into_answer(),
            replayed: false,
        },
        Err(e) => unavailable(&e.to_string()),
    }
}

/// The bucket failed: a key cannot be honoured, so nothing runs (fail closed).
fn unavailable(detail: &str) -> Claim {
    let mut answer = Failure::new(
        503,
        "idempotency_unavailable",
        "idempotent checkouts are unavailable right now; retry shortly",
    )
    .detail(format!("idempotency bucket: {detail}"))
    .into_answer();
    answer.retry_after = Some(1);
    Claim::Answer {
        answer,
        replayed: false,
    }
}

fn try_claim(
    bucket_name: &str,
    base_id: &str,
    fingerprint: &str,
    owner: &str,
    now_ms: u64,
    lease_ms: u64,
) -> Result<(Decision, Option<Bucket>), KvError> {
    let bucket = kv::open(bucket_name)?;
    let key = record_key(base_id);
    let running = |attempt| Record::Running {
        fingerprint: fingerprint.to_owned(),
        attempt,
        owner: owner.to_owned(),
        lease_until_ms: now_ms.saturating_add(lease_ms),
    };
    let decide = |old: Option<&[u8]>| -> (Decision, Option<Record>) {
        let Some(old) = old else {
            return (Decision::Run(0), Some(running(0)));
        };
        let record = match serde_json::from_slice::<Record>(old) {
            Ok(r) => r,
            Err(e) => return (Decision::Unreadable(e.to_string()), None),
        };
        match record {
            Record::Retry { attempt } => {
                let next = attempt.saturating_add(1);
                (Decision::Run(next), Some(running(next)))
            }
            Record::Done { fingerprint: f, .. } | Record::Running { fingerprint: f, .. }
                if f != fingerprint =>
            {
                (Decision::Mismatch, None)
            }
            Record::Done { answer, .. } => (Decision::Replay(answer), None),
            // The request holding the key was cut off (its lease is over): take over the same
            // attempt, so the services' idempotency picks up whatever it had done.
            Record::Running {
                attempt,
                lease_until_ms,
                ..
            } if lease_until_ms <= now_ms => (Decision::Run(attempt), Some(running(attempt))),
            Record::Running { .. } => (Decision::Busy, None),
        }
    };

    // A plain read settles replays and busy keys without writing.
    let current = bucket.get(&key)?;
    let (decision, write) = decide(current.as_deref());
    if write.is_none() {
        return Ok((decision, None));
    }
    // Claim with a compare-and-swap; another request may have written in between, so decide
    // again on what the swap saw. A value left as it was is written back unchanged.
    let mut outcome = None;
    bucket.update(&key, |old| {
        let (decision, write) = decide(old);
        outcome = Some(decision);
        match write {
            Some(record) => serde_json::to_vec(&record).unwrap_or_default(),
            None => old.map(<[u8]>::to_vec).unwrap_or_default(),
        }
    })?;
    let decision = outcome.unwrap_or(Decision::Unreadable("no decision".into()));
    Ok((decision, Some(bucket)))
}

impl Ledger {
    /// Stores the checkout's answer: replayed to retries, or, for a transient failure that was
    /// undone, a `retry` record so the next request with the key runs again. A record that is
    /// no longer this request's (its lease ran out and another request took over) is left alone.
    pub fn finish(self, answer: &Answer) {
        let record = if answer.is_transient() {
            Record::Retry {
                attempt: self.attempt,
            }
        } else {
            Record::Done {
                fingerprint: self.fingerprint.clone(),
                answer: answer.clone(),
            }
        };
        let Ok(new) = serde_json::to_vec(&record) else {
            log::error("checkout: cannot encode the idempotency record");
            return;
        };
        let mut ours = false;
        let written = self.bucket.update(&self.key, |old| {
            ours = matches!(
                old.and_then(|o| serde_json::from_slice::<Record>(o).ok()),
                Some(Record::Running { owner, .. }) if owner == self.owner
            );
            if ours {
                new.clone()
            } else {
                old.map(<[u8]>::to_vec).unwrap_or_default()
            }
        });
        match written {
            Ok(_) if ours => {}
            Ok(_) => log::warn(format!(
                "checkout: idempotency record {} was taken over by another request; the answer \
                 ({}) is not stored",
                self.key, answer.status
            )),
            Err(e) => log::error(format!(
                "checkout: could not store the answer ({}) under {}: {e}; a retry with the key \
                 waits for the lease to end",
                answer.status, self.key
            )),
        }
    }
}

/// The JSON a `running` record holds, for tests that seed one.
#[cfg(test)]
pub fn running_record(
    fingerprint: &str,
    attempt: u32,
    owner: &str,
    lease_until_ms: u64,
) -> Vec<u8> {
    serde_json::to_vec(&Record::Running {
        fingerprint: fingerprint.to_owned(),
        attempt,
        owner: owner.to_owned(),
        lease_until_ms,
    })
    .unwrap_or_default()
}
