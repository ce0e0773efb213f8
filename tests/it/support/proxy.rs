//! A TCP proxy the test controls, between the worker and a service: `cut`
//! drops every connection through it, as a network failure would, without
//! touching the shared service itself.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct Proxy {
    pub address: SocketAddr,
    links: Arc<Mutex<JoinSet<()>>>,
    /// While set, new connections are closed at once: the service is unreachable.
    refusing: Arc<AtomicBool>,
    /// One flag per link opened so far: set, the link stops moving bytes.
    stalls: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    accept: tokio::task::JoinHandle<()>,
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
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let accept_links = links.clone();
        let refusing = Arc::new(AtomicBool::new(false));
        let stalls: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let accept_stalls = stalls.clone();
        let accept_refusing = refusing.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accept_refusing.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let stalled = Arc::new(AtomicBool::new(false));
                accept_stalls
                    .lock()
                    .expect("proxy lock")
                    .push(stalled.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let link = async move {
                    tokio::join!(
                        pump(client_read, server_write, stalled.clone()),
                        pump(server_read, client_write, stalled),
                    );
                };
                accept_links.lock().expect("proxy lock").spawn(link);
            }
        });
        Self {
            address,
            links,
            refusing,
            stalls,
            accept,
        }
    }

    /// Drop every open connection; new ones are accepted as before.
    pub fn cut(&self) {
        self.links.lock().expect("proxy lock").abort_all();
    }

    /// Cut every connection and refuse new ones until [`Proxy::restore`].
    pub fn go_down(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Freeze every open connection: nothing moves and nothing closes, as
    /// with a dead network path. New connections work normally.
    pub fn stall(&self) {
        for stalled in self.stalls.lock().expect("proxy lock").drain(..) {
            stalled.store(true, Ordering::SeqCst);
        }
    }

    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// How many connections are open through the proxy now.
    pub fn open_links(&self) -> usize {
        let mut links = self.links.lock().expect("proxy lock");
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

/// Copy bytes one way until either side closes; once `stalled`, hold them.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, stalled: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
