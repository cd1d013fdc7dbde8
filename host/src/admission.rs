//! Caps on the requests of one connection and of one client that hold plugin instances at once,
//! so that one client cannot take the whole instance pool (`plugins.max_instances`) from the
//! others.
//!
//! A request enters when it first needs an instance, after its body has been read, and leaves
//! when it ends; a request that never runs a plugin, or is still sending its body, holds nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;

/// Plugin requests in progress per client address, shared by every connection.
#[derive(Debug, Default)]
pub struct ClientSlots {
    cap: u32,
    held: Mutex<HashMap<IpAddr, u32>>,
}

impl ClientSlots {
    /// At most `cap` plugin requests per client address; 0 means no cap.
    pub fn new(cap: u32) -> Self {
        Self {
            cap,
            held: Mutex::default(),
        }
    }

    fn enter(self: &Arc<Self>, client: IpAddr) -> Result<Option<ClientSlot>, GatewayError> {
        if self.cap == 0 {
            return Ok(None);
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(client).or_insert(0);
        if *n >= self.cap {
            return Err(GatewayError::TooManyRequests { scope: "client" });
        }
        *n += 1;
        Ok(Some(ClientSlot {
            slots: Arc::clone(self),
            client,
        }))
    }

    /// Clients holding at least one slot (for tests and diagnostics).
    pub fn clients(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One client's slot; gives it back when dropped.
#[derive(Debug)]
struct ClientSlot {
    slots: Arc<ClientSlots>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// How long a request waits for a slot of its connection before it gets 429.
pub const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One request's admission to plugin instances.
#[derive(Debug)]
pub struct Admission {
    connection: Option<Arc<Semaphore>>,
    clients: Arc<ClientSlots>,
    client: IpAddr,
    held: Mutex<Option<Held>>,
}

impl Admission {
    /// For a request on a connection whose cap is `connection` (`None`: no cap) from `client`.
    pub fn new(
        connection: Option<Arc<Semaphore>>,
        clients: Arc<ClientSlots>,
        client: IpAddr,
    ) -> Self {
        Self {
            connection,
            clients,
            client,
            held: Mutex::new(None),
        }
    }

    /// Takes the request's slots, once; later calls return at once. A request over its
    /// connection's cap waits up to [`CONNECTION_WAIT`] for a sibling to finish (an HTTP/2 client
    /// multiplexing many short requests is served, only later); a client at its cap, or a
    /// connection still full after the wait, gets 429.
    pub async fn enter(&self) -> Result<(), GatewayError> {
        if self.lock().is_some() {
            return Ok(());
        }
        let permit = match &self.connection {
            Some(s) => {
                let wait = Arc::clone(s).acquire_owned();
                match tokio::time::timeout(CONNECTION_WAIT, wait).await {
                    Ok(Ok(p)) => Some(p),
                    _ => {
                        return Err(GatewayError::TooManyRequests {
                            scope: "connection",
                        });
                    }
                }
            }
            None => None,
        };
        let slot = self.clients.enter(self.client)?;
        *self.lock() = Some((permit, slot));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an admitted request holds.
type Held = (Option<OwnedSemaphorePermit>, Option<ClientSlot>);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connection_and_client_caps_hold_and_free() {
        let clients = Arc::new(ClientSlots::new(2));
        let conn = Arc::new(Semaphore::new(3));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = Admission::new(Some(Arc::clone(&conn)), Arc::clone(&clients), ip);
        let b = Admission::new(Some(Arc::clone(&conn)), Arc::clone(&clients), ip);
        let c = Admission::new(Some(Arc::clone(&conn)), Arc::clone(&clients), ip);
        a.enter().await.unwrap();
        a.enter().await.unwrap(); // once per request
        b.enter().await.unwrap();
        assert!(matches!(
            c.enter().await,
            Err(GatewayError::TooManyRequests { scope: "client" })
        ));
        let other = Admission::new(
            Some(Arc::clone(&conn)),
            Arc::clone(&clients),
            "192.0.2.2".parse().unwrap(),
        );
        other.enter().await.unwrap();
        let fourth = Admission::new(Some(Arc::clone(&conn)), Arc::clone(&clients), ip);
        assert!(matches!(
            fourth.enter().await,
            Err(GatewayError::TooManyRequests {
                scope: "connection"
            })
        ));
        drop(a);
        fourth.enter().await.unwrap();
        drop((fourth, other, b, c));
        assert_eq!(clients.clients(), 0);
        assert_eq!(conn.available_permits(), 3);
    }
}
