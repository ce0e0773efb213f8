//! A TCP proxy the test controls, between a worker and a service, for the
//! faults a network makes without touching the shared service itself:
//!
//! - [`Proxy::cut`] drops every connection (the peer sees a reset or EOF);
//! - [`Proxy::go_down`] also refuses new ones until [`Proxy::restore`];
//! - [`Proxy::freeze`] is a *silent* failure (Toxiproxy's `timeout` toxic
//!   with no timeout): every open connection stops moving bytes in both
//!   directions while both sockets stay open, and new connections are
//!   accepted but carried nowhere; nobody sees a FIN or an RST. Only the
//!   ends' own timers (heartbeats, keepalives, statement timeouts) can
//!   notice. [`Proxy::thaw`] lets everything held flow again, as a link that
//!   comes back does;
//! - [`Proxy::freeze_when_client_sends`] freezes at an exact moment: right
//!   after the client has sent bytes holding a pattern (a statement), so the
//!   server has them and its answer is held;
//! - [`Proxy::stall`] freezes the connections open now, for good, while new
//!   ones work;
//! - [`Proxy::retarget`] sends new connections to another server: a service
//!   address that follows the primary of a Postgres failover, as a
//!   Kubernetes Service or a Patroni-managed HAProxy does.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Proxy {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// Where new connections are carried.
    upstream: Mutex<SocketAddr>,
    links: Mutex<JoinSet<()>>,
    /// While set, new connections are closed at once: the service is
    /// unreachable.
    refusing: AtomicBool,
    /// While set, nothing moves on any link and new links wait.
    frozen: watch::Sender<bool>,
    /// Client bytes that freeze everything once sent.
    freeze_on: Mutex<Option<Vec<u8>>>,
    /// One flag per link opened so far: set, the link stops for good.
    stalls: Mutex<Vec<Arc<AtomicBool>>>,
}

impl Proxy {
    /// A proxy to the host and port of a service URL (amqp:// or postgres://).
    pub async fn for_url(url: &str, default_port: u16) -> Self {
        let url = url::Url::parse(url).expect("service url");
        let upstream = (
            url.host_str().expect("host"),
            url.port().unwrap_or(default_port),
        )
            .to_socket_addrs()
            .expect("resolve")
            .next()
            .expect("an address");
        Self::start(upstream).await
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("service url");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.address.port())).expect("port");
        url.to_string()
    }

    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let address = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            links: Mutex::new(JoinSet::new()),
            refusing: AtomicBool::new(false),
            frozen: watch::Sender::new(false),
            freeze_on: Mutex::new(None),
            stalls: Mutex::default(),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.refusing.load(Ordering::SeqCst) {
                    continue;
                }
                let link = Link::new(accepting.clone());
                lock(&accepting.links).spawn(link.carry(client));
            }
        });
        Self {
            address,
            shared,
            accept,
        }
    }

    /// Carry new connections to `upstream`; open ones stay where they are
    /// (their server ends them, or [`Proxy::cut`] does).
    pub fn retarget(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Drop every open connection; new ones are accepted as before.
    pub fn cut(&self) {
        lock(&self.shared.links).abort_all();
    }

    /// Cut every connection and refuse new ones until [`Proxy::restore`].
    pub fn go_down(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.cut();
    }

    pub fn restore(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
    }

    /// Stop every byte, on every connection and on new ones, keeping every
    /// socket open: a silent partition.
    pub fn freeze(&self) {
        self.shared.frozen.send_replace(true);
    }

    /// Let the held bytes and connections through again.
    pub fn thaw(&self) {
        *lock(&self.shared.freeze_on) = None;
        self.shared.frozen.send_replace(false);
    }

    pub fn is_frozen(&self) -> bool {
        *self.shared.frozen.borrow()
    }

    /// Freeze everything as soon as a client sends bytes containing
    /// `pattern`; those bytes reach the server first.
    pub fn freeze_when_client_sends(&self, pattern: &[u8]) {
        *lock(&self.shared.freeze_on) = Some(pattern.to_vec());
    }

    /// Wait until the proxy is frozen (by [`Self::freeze_when_client_sends`]).
    pub async fn frozen(&self) {
        let mut frozen = self.shared.frozen.subscribe();
        let _ = frozen.wait_for(|frozen| *frozen).await;
    }

    /// Freeze the connections open now, for good; new ones work normally.
    pub fn stall(&self) {
        for stalled in lock(&self.shared.stalls).drain(..) {
            stalled.store(true, Ordering::SeqCst);
        }
    }

    /// How many connections are open through the proxy now.
    pub fn open_links(&self) -> usize {
        let mut links = lock(&self.shared.links);
        while links.try_join_next().is_some() {}
        links.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// One client connection and its way to the service.
struct Link {
    shared: Arc<Shared>,
    stalled: Arc<AtomicBool>,
}

impl Link {
    fn new(shared: Arc<Shared>) -> Self {
        let stalled = Arc::new(AtomicBool::new(false));
        lock(&shared.stalls).push(stalled.clone());
        Self { shared, stalled }
    }

    /// Connect to the service (once not frozen) and pump both ways.
    async fn carry(self, client: TcpStream) {
        self.wait_while_frozen().await;
        let upstream = *lock(&self.shared.upstream);
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::join!(
            self.pump(client_read, server_write, true),
            self.pump(server_read, client_write, false),
        );
    }

    /// Copy bytes one way until either side closes, holding them while
    /// frozen or stalled.
    async fn pump(&self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, from_client: bool) {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let chunk = &buffer[..read];

            let trigger = from_client && self.is_trigger(chunk);
            if !trigger {
                self.wait_while_frozen().await;
            }
            if to.write_all(chunk).await.is_err() {
                return;
            }
            if trigger {
                self.shared.frozen.send_replace(true);
            }
        }
    }

    fn is_trigger(&self, chunk: &[u8]) -> bool {
        let mut freeze_on = lock(&self.shared.freeze_on);
        let found = freeze_on.as_deref().is_some_and(|pattern| {
            !pattern.is_empty() && chunk.windows(pattern.len()).any(|window| window == pattern)
        });
        if found {
            *freeze_on = None;
        }
        found
    }

    async fn wait_while_frozen(&self) {
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let mut frozen = self.shared.frozen.subscribe();
        let _ = frozen.wait_for(|frozen| !*frozen).await;
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
