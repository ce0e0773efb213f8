//! A TCP proxy the test controls, between the worker and a service: `cut`
//! drops every connection through it, as a network failure would, without
//! touching the shared service itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct Proxy {
    pub address: SocketAddr,
    links: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let address = listener.local_addr().expect("proxy address");
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let accept_links = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let link = async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                };
                accept_links.lock().expect("proxy lock").spawn(link);
            }
        });
        Self {
            address,
            links,
            accept,
        }
    }

    /// Drop every open connection; new ones are accepted as before.
    pub fn cut(&self) {
        self.links.lock().expect("proxy lock").abort_all();
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
