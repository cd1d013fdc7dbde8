//! The `redis` backend: a bucket held in a Redis server, shared by every gateway using it.
//!
//! Every key is stored under the bucket's `prefix` (default `tessera:<bucket>:`), so buckets
//! sharing a server never see each other's keys and `list-keys` scans only the prefix. Commands:
//! `GET`/`SET` (with `PX` when the bucket has `ttl_ms`), `EXISTS`, `DEL`, `INCRBY` (with
//! `PEXPIRE` in the same `MULTI` when there is a TTL), `MGET`/`MSET` (a `MULTI` of `SET ... PX`
//! with a TTL), `SCAN` for `list-keys`, and a Lua script for compare-and-swap, which Redis runs
//! atomically.
//!
//! Connection: one multiplexed connection per bucket, made on first use, not at start, so the
//! gateway starts while Redis is down. Each operation, connecting included, is bounded by
//! `timeout_ms`; past it, or on a broken connection, the operation fails with a backend error and
//! the connection is dropped, so the next operation connects afresh and the bucket recovers by
//! itself when the server is back.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, Pipeline};

use super::{KvError, LIST_PAGE, Snapshot};
use crate::config::BucketConfig;

/// Compare-and-swap: `ARGV[1]` is `1` when a value was read (`ARGV[2]`), `0` when the key was
/// absent; writes `ARGV[3]` (with expiry `ARGV[4]` ms unless it is `0`) and returns 1 only if
/// the key still holds what was read.
const SWAP_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
";

/// A bucket in a Redis server.
pub struct RedisBucket {
    name: String,
    client: Option<redis::Client>,
    prefix: String,
    ttl_ms: Option<u64>,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its URL may hold a password.
        f.debug_struct("RedisBucket")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBucket {
    /// A bucket that connects on first use.
    pub fn new(name: &str, settings: &BucketConfig) -> Self {
        // Validation checked the URL; a client that still cannot be made fails every operation.
        let client = settings
            .url
            .as_ref()
            .and_then(|u| redis::Client::open(u.expose()).ok());
        Self {
            name: name.to_owned(),
            client,
            prefix: settings
                .prefix
                .clone()
                .unwrap_or_else(|| format!("tessera:{name}:")),
            ttl_ms: settings.ttl_ms,
            timeout: Duration::from_millis(
                settings
                    .timeout_ms
                    .unwrap_or(BucketConfig::DEFAULT_TIMEOUT_MS),
            ),
            connection: tokio::sync::Mutex::new(None),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn failed(&self, what: impl std::fmt::Display) -> KvError {
        KvError::Backend(format!("redis bucket `{}`: {what}", self.name))
    }

    /// The shared connection, connecting if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, KvError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| self.failed("invalid url"))?;
        let c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| self.failed(format_args!("cannot connect: {e}")))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after a failure, so the next operation connects afresh. If
    /// another operation holds the slot (connecting now), it is left to that one: waiting here
    /// would stretch this operation past its timeout.
    fn reset(&self) {
        if let Ok(mut slot) = self.connection.try_lock() {
            *slot = None;
        }
    }

    /// Runs one command or pipeline within the timeout. A timeout or a broken connection drops
    /// the connection; the server's refusal of a command (e.g. `INCRBY` on text) does not.
    async fn run<T: FromRedisValue>(&self, request: Request<'_>) -> Result<T, KvError> {
        let attempt = async {
            let mut c = self.connection().await.map_err(|e| (false, e))?;
            let answer = match request {
                Request::Cmd(cmd) => cmd.query_async::<T>(&mut c).await,
                Request::Pipe(pipe) => pipe.query_async::<T>(&mut c).await,
            };
            answer.map_err(|e| {
                let broken =
                    e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped();
                (broken, self.failed(e))
            })
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((broken, e))) => {
                if broken {
                    self.reset();
                }
                Err(e)
            }
            Err(_) => {
                self.reset();
                Err(self.failed(format_args!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    /// `SET key value [PX ttl]`.
    fn set_cmd(&self, key: &str, value: &[u8]) -> Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = self.ttl_ms {
            cmd.arg("PX").arg(ttl);
        }
        cmd
    }

    /// The value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        self.run(Request::Cmd(&cmd)).await
    }

    /// Writes `value` under `key`.
    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.run(Request::Cmd(&self.set_cmd(key, &value))).await
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.key(key));
        let n: u64 = self.run(Request::Cmd(&cmd)).await?;
        Ok(n > 0)
    }

    /// One `SCAN` step over the bucket's prefix.
    pub async fn list_keys(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        let cursor = cursor.unwrap_or("0");
        if cursor.is_empty() || cursor.len() > 20 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KvError::Refused("not a cursor this bucket returned".into()));
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", glob_escape(&self.prefix)))
            .arg("COUNT")
            .arg(LIST_PAGE);
        let (next, keys): (String, Vec<Vec<u8>>) = self.run(Request::Cmd(&cmd)).await?;
        let keys = keys
            .into_iter()
            .filter_map(|k| {
                let k = k.strip_prefix(self.prefix.as_bytes())?.to_vec();
                String::from_utf8(k).ok()
            })
            .collect();
        Ok((keys, (next != "0").then_some(next)))
    }

    /// `INCRBY`, and `PEXPIRE` in the same transaction when the bucket has a TTL.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let key = self.key(key);
        match self.ttl_ms {
            None => {
                let mut cmd = redis::cmd("INCRBY");
                cmd.arg(&key).arg(delta);
                self.run(Request::Cmd(&cmd)).await
            }
            Some(ttl) => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("INCRBY")
                    .arg(&key)
                    .arg(delta)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl)
                    .ignore();
                let (n,): (i64,) = self.run(Request::Pipe(&pipe)).await?;
                Ok(n)
            }
        }
    }

    /// Writes `value` if `key` holds `expected`, atomically on the server.
    pub async fn swap(
        &self,
        key: &str,
        expected: &Snapshot,
        value: Vec<u8>,
    ) -> Result<bool, KvError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SWAP_SCRIPT).arg(1).arg(self.key(key));
        match expected {
            Some(v) => cmd.arg("1").arg(v.as_slice()),
            None => cmd.arg("0").arg(""),
        };
        cmd.arg(value).arg(self.ttl_ms.unwrap_or(0));
        let done: i64 = self.run(Request::Cmd(&cmd)).await?;
        Ok(done == 1)
    }

    /// `MGET`.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.key(k));
        }
        self.run(Request::Cmd(&cmd)).await
    }

    /// `MSET`, or a transaction of `SET ... PX` when the bucket has a TTL.
    pub async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        if self.ttl_ms.is_some() {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (k, v) in &pairs {
                pipe.add_command(self.set_cmd(k, v)).ignore();
            }
            return self.run(Request::Pipe(&pipe)).await;
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in &pairs {
            cmd.arg(self.key(k)).arg(v.as_slice());
        }
        self.run(Request::Cmd(&cmd)).await
    }

    /// `DEL`.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(self.key(k));
        }
        let _: u64 = self.run(Request::Cmd(&cmd)).await?;
        Ok(())
    }
}

/// What [`RedisBucket::run`] sends.
enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

/// `text` as a `SCAN MATCH` pattern that matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_quotes_pattern_characters() {
        assert_eq!(glob_escape("tessera:a:"), "tessera:a:");
        assert_eq!(glob_escape("p*[x]?\\"), "p\\*\\[x\\]\\?\\\\");
    }
}
