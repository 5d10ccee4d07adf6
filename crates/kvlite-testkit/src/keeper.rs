//! Spawning server processes that die with us.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not when the
//! process does. Test harnesses run each test on its own short-lived thread, so a server
//! forked from a test thread would be killed as soon as that test returns. All server
//! processes are therefore forked by one "keeper" thread that is never asked to stop: it
//! lives until the process itself exits (normally or by a signal), and then the kernel
//! sends the death signal to every server it spawned.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};

struct Request {
    command: Command,
    reply: Sender<io::Result<Child>>,
}

/// Sender side of the keeper's queue. Never dropped, so the keeper never exits.
static KEEPER: Mutex<Option<Sender<Request>>> = Mutex::new(None);

fn keeper_loop(requests: Receiver<Request>) {
    for Request { mut command, reply } in requests {
        let _ = reply.send(command.spawn());
    }
}

/// Spawns `command` from the keeper thread, arranging for the child to receive
/// `death_signal` when this process dies.
pub(crate) fn spawn_tied_to_process(mut command: Command, death_signal: i32) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing. std runs pre_exec closures after
    // it has applied uid/gid, which matters: changing credentials clears the death signal.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no signal will come.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent died before the server started"));
            }
            Ok(())
        });
    }

    let sender = {
        let mut guard = KEEPER.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel();
                std::thread::Builder::new()
                    .name("kvlite-pg-keeper".into())
                    .spawn(move || keeper_loop(rx))?;
                *guard = Some(tx.clone());
                tx
            }
        }
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .send(Request {
            command,
            reply: reply_tx,
        })
        .map_err(|_| io::Error::other("kvlite-pg-keeper thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("kvlite-pg-keeper thread dropped the request"))?
}
