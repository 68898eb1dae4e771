//! A SOCKS5 server (RFC 1928, with RFC 1929 username/password) that sends every CONNECT,
//! whatever the onion asked for, to one local address: smtp-out's stand-in for tor when a test
//! measures the queue rather than the network (many onions, one SMTP sink behind them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay on 127.0.0.1.
pub struct SocksRelay {
    pub address: SocketAddr,
    /// CONNECT requests relayed so far.
    pub connects: Arc<AtomicU64>,
}

impl SocksRelay {
    /// Relays every CONNECT to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<SocksRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay = SocksRelay {
            address: listener.local_addr()?,
            connects: Arc::default(),
        };
        let connects = relay.connects.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let connects = connects.clone();
                tokio::spawn(async move {
                    if let Ok(upstream) = handshake(client, target).await {
                        connects.fetch_add(1, Ordering::Relaxed);
                        let (mut client, mut upstream) = upstream;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Ok(relay)
    }
}

/// The SOCKS5 exchange up to a granted CONNECT; returns both streams.
async fn handshake(
    mut client: TcpStream,
    target: SocketAddr,
) -> std::io::Result<(TcpStream, TcpStream)> {
    let bad = |what: &str| std::io::Error::other(what.to_owned());
    // Greeting: VER NMETHODS METHODS.
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(bad("not SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    if methods.contains(&2) {
        // Username/password (RFC 1929): any credentials will do, as tor's isolation does.
        client.write_all(&[5, 2]).await?;
        let mut version_and_length = [0u8; 2];
        client.read_exact(&mut version_and_length).await?;
        let mut user = vec![0u8; usize::from(version_and_length[1])];
        client.read_exact(&mut user).await?;
        let mut length = [0u8; 1];
        client.read_exact(&mut length).await?;
        let mut password = vec![0u8; usize::from(length[0])];
        client.read_exact(&mut password).await?;
        client.write_all(&[1, 0]).await?;
    } else if methods.contains(&0) {
        client.write_all(&[5, 0]).await?;
    } else {
        client.write_all(&[5, 0xff]).await?;
        return Err(bad("no acceptable method"));
    }
    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT.
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    if request[1] != 1 {
        return Err(bad("only CONNECT"));
    }
    match request[3] {
        1 => drop(client.read_exact(&mut [0u8; 4]).await?),
        4 => drop(client.read_exact(&mut [0u8; 16]).await?),
        3 => {
            let mut length = [0u8; 1];
            client.read_exact(&mut length).await?;
            let mut name = vec![0u8; usize::from(length[0])];
            client.read_exact(&mut name).await?;
        }
        _ => return Err(bad("unknown address type")),
    }
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let upstream = match TcpStream::connect(target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            // 0x05: connection refused.
            client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Err(error);
        }
    };
    client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
    Ok((client, upstream))
}
