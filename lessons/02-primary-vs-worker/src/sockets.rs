//! Who holds a listening socket on a port: what `ss -ltnp` shows, read
//! from `/proc` the same way.
//!
//! The kernel lists every TCP socket of the network namespace in
//! `/proc/net/tcp` (and `tcp6`): its local address and port, its state
//! (`0A` is `LISTEN`) and its inode. Each process lists its open
//! descriptors in `/proc/PID/fd`, where a socket reads `socket:[INODE]`.
//! A process holds a listening socket on the port when one of its
//! descriptors is one of those inodes. Nothing here asks the supervisor
//! what it did: the answer comes from the kernel, so it could come out
//! otherwise.

use std::collections::HashSet;
use std::fs;
use std::io;

/// `st` of a socket in `LISTEN` state, in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// The inodes of the TCP sockets listening on `port`, IPv4 and IPv6.
pub fn listening_on(port: u16) -> io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match fs::read_to_string(table) {
            Ok(text) => inodes.extend(listeners_in(&text, port)),
            // A kernel without IPv6 has no tcp6 table.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(inodes)
}

/// Whether process `pid` has one of `inodes` among its open descriptors.
pub fn holds_any(pid: u32, inodes: &HashSet<u64>) -> io::Result<bool> {
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        // A descriptor can close between the listing and the readlink.
        let Ok(target) = fs::read_link(entry?.path()) else {
            continue;
        };
        if socket_inode(&target.to_string_lossy()).is_some_and(|inode| inodes.contains(&inode)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The listening sockets on `port` in one `/proc/net/tcp*` table.
fn listeners_in(table: &str, port: u16) -> impl Iterator<Item = u64> + '_ {
    table.lines().skip(1).filter_map(move |line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        let listening = *fields.get(3)? == LISTEN;
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two lines of a real /proc/net/tcp: a listener on 127.0.0.1:8000
    // (0x1F40) and an established connection from that port.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_the_listening_socket_on_the_port_counts() {
        assert_eq!(listeners_in(TCP, 8000).collect::<Vec<_>>(), vec![4242]);
        assert_eq!(listeners_in(TCP, 8001).count(), 0);
        assert_eq!(listeners_in(TCP6, 8000).collect::<Vec<_>>(), vec![5151]);
    }

    #[test]
    fn a_descriptor_names_its_socket_inode() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn this_process_holds_the_listener_it_binds() -> io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let inodes = listening_on(port)?;
        assert_eq!(inodes.len(), 1);
        assert!(holds_any(std::process::id(), &inodes)?);
        drop(listener);
        assert!(listening_on(port)?.is_empty());
        Ok(())
    }
}
