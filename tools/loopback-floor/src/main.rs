//! `cargo run --release --manifest-path tools/loopback-floor/Cargo.toml`
//!
//! Prints, averaged over many round trips: two threads handing a value to
//! each other over channels (two wake-ups per round trip), and a 64-byte
//! request/response over loopback TCP between two threads with blocking
//! sockets and TCP_NODELAY (what a client and a server pay before any work).
use std::io::{Read, Write};
use std::time::Instant;

const ROUNDS: u32 = 20_000;

fn main() -> std::io::Result<()> {
    let (to_echo, echo_in) = std::sync::mpsc::sync_channel::<u32>(1);
    let (echo_out, back) = std::sync::mpsc::sync_channel::<u32>(1);
    std::thread::spawn(move || {
        while let Ok(v) = echo_in.recv() {
            if echo_out.send(v).is_err() {
                break;
            }
        }
    });
    let t = Instant::now();
    for i in 0..ROUNDS {
        to_echo.send(i).map_err(std::io::Error::other)?;
        back.recv().map_err(std::io::Error::other)?;
    }
    let hand_off = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 64];
        loop {
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
    });
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut b = [0u8; 64];
    let t = Instant::now();
    for _ in 0..ROUNDS {
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
    }
    let tcp = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    println!("thread hand-off round trip: {hand_off:.1} us");
    println!("TCP loopback round trip:    {tcp:.1} us");
    Ok(())
}
