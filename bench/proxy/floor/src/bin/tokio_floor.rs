//! The floor of a tokio proxy: one current-thread runtime, one upstream connection per client
//! connection, each request forwarded as read and each answer as read, no header work.
use silverback_proxy_floor::{addresses, message_end};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one whole message into `buf` (never more than one: the client and backend wait for
/// each answer). `Ok(0)` when the peer closed.
async fn read_message(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    loop {
        let k = s.read(&mut buf[n..]).await?;
        if k == 0 {
            return Ok(0);
        }
        n += k;
        if message_end(&buf[..n]).is_some_and(|end| n >= end) {
            return Ok(n);
        }
        if n == buf.len() {
            return Err(std::io::Error::other("message larger than the buffer"));
        }
    }
}

async fn serve(mut client: TcpStream, upstream: String) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (mut req, mut resp) = (vec![0u8; 16384], vec![0u8; 16384]);
    loop {
        let n = read_message(&mut client, &mut req).await?;
        if n == 0 {
            return Ok(());
        }
        up.write_all(&req[..n]).await?;
        let m = read_message(&mut up, &mut resp).await?;
        if m == 0 {
            return Ok(());
        }
        client.write_all(&resp[..m]).await?;
    }
}

fn main() -> std::io::Result<()> {
    let (listen, upstream) = addresses()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move { serve(client, upstream).await });
        }
    })
}
