//! The floor of an io_uring proxy: one thread, one ring (single issuer, deferred task work),
//! one upstream connection per client connection, each connection a four-step cycle (read the
//! request, send it upstream, read the answer, send it back) with one operation in flight.
//! Every completion of a batch is handled before the next `io_uring_enter`, which submits the
//! new operations together.
use io_uring::{IoUring, opcode, squeue, types};
use silverback_proxy_floor::{addresses, message_end};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

const ACCEPT: u64 = u64::MAX;
const BUF: usize = 16384;

/// The step a connection's one operation in flight belongs to.
#[derive(Clone, Copy)]
enum Step {
    ReadRequest = 0,
    SendRequest = 1,
    ReadAnswer = 2,
    SendAnswer = 3,
}

struct Conn {
    client: RawFd,
    upstream: RawFd,
    req: Box<[u8; BUF]>,
    req_len: usize,
    resp: Box<[u8; BUF]>,
    resp_len: usize,
}

fn tag(slot: usize, step: Step) -> u64 {
    ((slot as u64) << 2) | step as u64
}

fn push(ring: &mut IoUring, e: &squeue::Entry) -> std::io::Result<()> {
    // SAFETY: every buffer an entry points at is a boxed array owned by a `Conn` that stays in
    // its slot until the completion of its one operation in flight has been reaped.
    while unsafe { ring.submission().push(e) }.is_err() {
        ring.submit()?;
    }
    Ok(())
}

/// The operation that continues `c` at `step`.
fn op(c: &mut Conn, slot: usize, step: Step) -> squeue::Entry {
    let e = match step {
        Step::ReadRequest => {
            let free = &mut c.req[c.req_len..];
            opcode::Recv::new(types::Fd(c.client), free.as_mut_ptr(), free.len() as u32).build()
        }
        Step::SendRequest => {
            opcode::Send::new(types::Fd(c.upstream), c.req.as_ptr(), c.req_len as u32).build()
        }
        Step::ReadAnswer => {
            let free = &mut c.resp[c.resp_len..];
            opcode::Recv::new(types::Fd(c.upstream), free.as_mut_ptr(), free.len() as u32).build()
        }
        Step::SendAnswer => {
            opcode::Send::new(types::Fd(c.client), c.resp.as_ptr(), c.resp_len as u32).build()
        }
    };
    e.user_data(tag(slot, step))
}

fn main() -> std::io::Result<()> {
    let (listen, upstream) = addresses()?;
    let listener = TcpListener::bind(listen)?;
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4096)?;
    let accept = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(ACCEPT);
    push(&mut ring, &accept)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(1024);
    loop {
        ring.submit_and_wait(1)?;
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(data, res) in &done {
            if data == ACCEPT {
                if res >= 0 {
                    let up = TcpStream::connect(&upstream)?;
                    up.set_nodelay(true)?;
                    let client = res;
                    let c = Conn {
                        client,
                        upstream: up.into_raw_fd(),
                        req: Box::new([0; BUF]),
                        req_len: 0,
                        resp: Box::new([0; BUF]),
                        resp_len: 0,
                    };
                    set_nodelay(client)?;
                    let slot = match conns.iter().position(Option::is_none) {
                        Some(s) => s,
                        None => {
                            conns.push(None);
                            conns.len() - 1
                        }
                    };
                    let c = conns[slot].insert(c);
                    let e = op(c, slot, Step::ReadRequest);
                    push(&mut ring, &e)?;
                }
                push(&mut ring, &accept)?;
                continue;
            }
            let slot = (data >> 2) as usize;
            let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if res <= 0 {
                // SAFETY: both descriptors belong to this connection alone, and its one
                // operation in flight has just completed.
                unsafe {
                    libc::close(c.client);
                    libc::close(c.upstream);
                }
                conns[slot] = None;
                continue;
            }
            let n = res as usize;
            let next = match data & 3 {
                0 => {
                    c.req_len += n;
                    match message_end(&c.req[..c.req_len]) {
                        Some(end) if c.req_len >= end => Step::SendRequest,
                        _ => Step::ReadRequest,
                    }
                }
                1 => {
                    // A short send of a few hundred bytes does not happen on loopback; the
                    // floor does not handle it.
                    c.req_len = 0;
                    c.resp_len = 0;
                    Step::ReadAnswer
                }
                2 => {
                    c.resp_len += n;
                    match message_end(&c.resp[..c.resp_len]) {
                        Some(end) if c.resp_len >= end => Step::SendAnswer,
                        _ => Step::ReadAnswer,
                    }
                }
                _ => Step::ReadRequest,
            };
            let e = op(c, slot, next);
            push(&mut ring, &e)?;
        }
    }
}

fn set_nodelay(fd: RawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
