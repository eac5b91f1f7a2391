//! The floor of a tokio proxy: one current-thread runtime, one upstream connection per client
//! connection, each request forwarded as read and each answer as read, no header work.
//!
//! With `FLOOR_KONG_HEADERS=1` it adds the bytes of the headers Kong adds with its default
//! settings (the same names and value lengths the gateway writes, fixed values), to the
//! request upstream and to the answer: what the backend and the load generator then parse.
//!
//! With `FLOOR_PARK_SPIN_US=N` it spins N µs each time it runs out of work, before it polls
//! epoll again (so the events of those N µs are taken as one batch): the experiment of
//! `bench/proxy/cpu1_sched.sh`.
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

/// The headers Kong adds upstream (X-Forwarded-*, X-Real-IP, the request id, Via).
const KONG_UPSTREAM: &[u8] = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
x-forwarded-host: 127.0.0.1\r\nx-forwarded-port: 19432\r\nx-forwarded-path: /\r\n\
x-real-ip: 127.0.0.1\r\nx-kong-request-id: 6b3640e6a777ab0d420fa19d30fce7b2\r\n\
via: 1.1 kong/3.10.0\r\n";
/// The headers Kong adds to the answer (Via, the latencies, the request id).
const KONG_ANSWER: &[u8] = b"via: 1.1 kong/3.10.0\r\nx-kong-upstream-latency: 0\r\n\
x-kong-proxy-latency: 0\r\nx-kong-request-id: 09b86c99928f488cac51b15277b87027\r\n";

/// `msg` with `extra` (whole header lines) added at the end of its head, into `out`.
fn with_headers<'a>(msg: &'a [u8], extra: &[u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    let Some(end) = memchr::memmem::find(msg, b"\r\n\r\n") else {
        return msg;
    };
    out.clear();
    out.extend_from_slice(&msg[..end + 2]);
    out.extend_from_slice(extra);
    out.extend_from_slice(&msg[end + 2..]);
    out
}

async fn serve(mut client: TcpStream, upstream: String, kong: bool) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (mut req, mut resp) = (vec![0u8; 16384], vec![0u8; 16384]);
    let mut out = Vec::with_capacity(16384);
    loop {
        let n = read_message(&mut client, &mut req).await?;
        if n == 0 {
            return Ok(());
        }
        if kong {
            up.write_all(with_headers(&req[..n], KONG_UPSTREAM, &mut out))
                .await?;
        } else {
            up.write_all(&req[..n]).await?;
        }
        let m = read_message(&mut up, &mut resp).await?;
        if m == 0 {
            return Ok(());
        }
        if kong {
            client
                .write_all(with_headers(&resp[..m], KONG_ANSWER, &mut out))
                .await?;
        } else {
            client.write_all(&resp[..m]).await?;
        }
    }
}

fn main() -> std::io::Result<()> {
    let (listen, upstream) = addresses()?;
    let kong = std::env::var("FLOOR_KONG_HEADERS").is_ok_and(|v| v == "1");
    let spin = std::env::var("FLOOR_PARK_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_micros);
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_io();
    if let Some(spin) = spin {
        builder.on_thread_park(move || {
            let t = std::time::Instant::now();
            while t.elapsed() < spin {
                std::hint::spin_loop();
            }
        });
    }
    let rt = builder.build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move { serve(client, upstream, kong).await });
        }
    })
}
